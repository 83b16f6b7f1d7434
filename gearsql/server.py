"""The job server's network layer: asyncio moves bytes between sockets and the sans-IO core.

Each connection feeds what it reads to its :class:`~gearsql.protocol.Parser` and hands the events
to :class:`~gearsql.core.JobServerCore`; after every read (and every timer) the output the core
produced for any connection is written with one ``write`` per connection. Nothing here decides
anything about jobs.

What a peer can make this layer hold is bounded (docs/reliability.md, cases 9, 41, 44-46):

* Incomplete messages: each connection's parser holds at most one (``max_packet_size``), all of
  them together about ``max_buffer`` bytes. A connection that pushes the total past it stops
  being read (the kernel's socket buffers hold the rest and TCP slows the sender) until the
  total falls back under it, except the connection whose incomplete message started first,
  which is always read so that something completes and gives its share back. An incomplete
  message must be complete within ``packet_timeout`` seconds of its first byte, or the
  connection is closed: this ends slow senders, and those that hold the budget too long.
* Output: a connection whose write buffer passes asyncio's high-water mark stops being read
  until its peer catches up, so its own requests cannot grow it; output caused by others (work
  data forwarded to a client) closes the connection once it passes ``max_output`` bytes.
* An over-size packet is answered with an ERROR naming the limit, the write side is shut, and
  the rest of the declared packet is read and dropped (never kept), so that the peer reads the
  ERROR instead of a connection reset.
* Every log line a peer can provoke goes through a per-kind rate limit, unexpected exceptions
  included: one peer's bad input closes that peer's connection and writes a bounded number of
  lines.

Where the pieces live: :class:`JobServer` here (listeners, output, group commit, limits, life
cycle) with :func:`run_server`; one Gearman connection, its TLS and ACL checks and its share of
the budget in gearsql._serverconn; :class:`ServerConfig` in gearsql._serverconfig (re-exported
here); the per-kind log rate limit in gearsql._ratelog; gearmand's HTTP protocol in gearsql.http.
Those modules name what they use of the server as a Protocol (``ConnectionHost``,
``HttpServer``, gearsql._serverview's ``ServerView``) instead of importing this module.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import random
import signal
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from gearsql import __version__
from gearsql._corestate import Histogram, RunEnd
from gearsql._cron import CronError, parse_cron, parse_schedule
from gearsql._limits import (
    DEFAULT_MAX_BUFFER,
    DEFAULT_MAX_FUNCTIONS,
    DEFAULT_MAX_OUTPUT,
    DEFAULT_PACKET_TIMEOUT,
)
from gearsql._log import NOTICE
from gearsql._ratelog import RateLimitedLog
from gearsql._serverconfig import ServerConfig
from gearsql._serverconfig import is_loopback as _is_loopback
from gearsql._serverconn import _Connection
from gearsql._tls import HANDSHAKE_TIMEOUT, server_context
from gearsql.acl import Acl, parse_acl
from gearsql.core import Job, JobServerCore, RetryPolicy, Schedule
from gearsql.protocol import HEADER
from gearsql.stores import (
    DeadLetter,
    RememberedUnique,
    Store,
    StoredJob,
    StoredPolicy,
    StoredSchedule,
    StoredWindow,
    StoreError,
    open_store,
)

__all__ = [
    "DEFAULT_MAX_BUFFER",
    "DEFAULT_MAX_FUNCTIONS",
    "DEFAULT_MAX_OUTPUT",
    "DEFAULT_PACKET_TIMEOUT",
    "JobServer",
    "ServerConfig",
    "run_server",
]

if TYPE_CHECKING:
    from gearsql.http import HttpConnection
    from gearsql.relay.watch import RelayWatch

log = logging.getLogger("gearsql.server")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot read {exc.filename}: {exc.strerror}"
    return str(exc)


class JobServer:
    """The running server: listeners, connections, the core and the store."""

    def __init__(self, config: ServerConfig, store: Store | None = None):
        self.config = config
        prefix = config.job_handle_prefix or f"H:{socket.gethostname()}"
        self.core = JobServerCore(
            handle_prefix=prefix.encode(),
            job_retries=config.job_retries,
            worker_wakeup=config.worker_wakeup,
            exceptions=config.exceptions,
            version=__version__,
            pid=os.getpid(),
            verbose=config.verbose,
            max_functions=config.max_functions,
            # Random per run: the store keys of jobs without a unique must differ across runs.
            run_id=os.urandom(6).hex().encode(),
            retry_policy=RetryPolicy(config.retries, *config.retry_backoff),
            jitter=random.random,
            unique_window=config.unique_window,
            keep_results=config.keep_results,
            unconfirmed_runs=config.unconfirmed_runs,
        )
        self.store = store if store is not None else open_store(config.store)
        self.core.durable = self.store.durable
        self.connections: dict[int, _Connection] = {}
        #: Connections of gearmand's HTTP protocol, by session id.
        self.http_connections: dict[int, HttpConnection] = {}
        self.http_servers: list[asyncio.base_events.Server] = []
        #: Bytes read from and written to connections (both protocols), for the metrics.
        self.bytes_in = 0
        self.bytes_out = 0
        #: Seconds each group commit took.
        self.commit_time = Histogram()
        #: The outbox readings of the relays inside this server (``--relay``), else None.
        self.relay_watch: RelayWatch | None = None
        self.servers: list[asyncio.base_events.Server] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        #: Log rate limit per kind of line.
        self._log_limit = RateLimitedLog(log)
        #: Bytes of incomplete messages held by all connections' parsers.
        self.buffered = 0
        #: Connections holding an incomplete message (or dropping a refused one): the
        #: monotonic time by which it must be complete.
        self.incomplete: dict[_Connection, float] = {}
        #: Connections not read because ``buffered`` passed ``max_buffer``, oldest first.
        self.budget_paused: dict[_Connection, None] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._stopping: asyncio.Event | None = None
        #: The group commit under way (None between commits).
        self._commit_task: asyncio.Task[str | None] | None = None
        #: After a failed commit with only deletions left, the flush that retries them.
        self._commit_retry: asyncio.TimerHandle | None = None
        #: Set by close(): no group commit starts any more; close() writes what is left.
        self._closing = False
        self.loop: asyncio.AbstractEventLoop | None = None
        #: TLS on the listeners (``config.ssl``), built by start().
        self.ssl_context: ssl.SSLContext | None = None
        #: The ACL in force (``config.acl_file``), replaced by reload_acl().
        self.acl: Acl | None = None

    # -------------------------------------------------------------- TLS and ACL

    def load_acl(self) -> Acl:
        """The ACL of ``config.acl_file``; AclError (a ValueError) or OSError when it cannot be
        read or used."""
        path = self.config.acl_file
        assert path is not None
        with open(path, encoding="utf-8") as handle:
            return parse_acl(handle.read(), path)

    def reload_acl(self) -> bool:
        """Read the ACL file again (SIGHUP). A file that cannot be used leaves the ACL in force
        as it was, with an error in the log; True when the new one is in force."""
        if self.config.acl_file is None:
            return False
        try:
            acl = self.load_acl()
        except (OSError, ValueError) as exc:
            log.error("ACL not reloaded, the old one stays in force: %s", _reason(exc))
            return False
        self.acl = acl
        log.log(NOTICE, "ACL reloaded from %s: %d identities", self.config.acl_file, len(acl.rules))
        return True

    # -------------------------------------------------------------- output and timers

    def flush(self) -> None:
        """Write every connection's pending output, one write each, and re-arm the timer."""
        core = self.core
        max_output = self.config.max_output
        # Notices first: what a peer reads is logged before the peer can read it.
        self._log_notices()
        while core.dirty:
            connections = self.connections
            for session in core.take_dirty():
                if not session.out:
                    continue
                data = session.take_output()
                conn = connections.get(session.id)
                if conn is None:
                    http = self.http_connections.get(session.id)
                    if http is not None and data:
                        http.deliver(data)
                    continue
                if data and conn.transport is not None:
                    transport = conn.transport
                    conn.write(data)
                    self.bytes_out += len(data)
                    if transport.get_write_buffer_size() > max_output:
                        # Its own requests stopped being read long ago (pause_writing): this
                        # is output others cause, such as work data forwarded to it.
                        conn.drop(
                            "max-output",
                            "it left more than --max-output (%d bytes) unread",
                            max_output,
                        )
        self._log_notices()
        if (
            (core.to_store or core.finished_stored or core.pending_writes)
            and self._commit_task is None
            and not self._closing
        ):
            self._start_commit()
        deadline = core.next_deadline()
        if deadline != self._timer_at:
            self._arm(deadline)

    def _log_notices(self) -> None:
        core = self.core
        if core.notices:
            for notice in core.take_notices():
                self.rate_limited_log(
                    logging.getLevelName(notice.level), notice.key, "%s", notice.message
                )

    def _start_commit(self) -> None:
        """Group commit: everything accepted since the last commit goes in one transaction;
        what arrives meanwhile waits for the next one."""
        core = self.core
        adds, core.to_store = core.to_store, []
        removes, core.finished_stored = core.finished_stored, []
        # Workers that ended these runs get their next job once this commit is done.
        ends, core.end_holds = core.end_holds, []
        assert self.loop is not None
        if self._commit_retry is not None:
            self._commit_retry.cancel()
            self._commit_retry = None
        task = self.loop.create_task(self._commit(adds, removes, self._take_writes(), ends))
        task.add_done_callback(self._commit_finished)
        self._commit_task = task

    def _commit_finished(self, task: asyncio.Task[str | None]) -> None:
        """Start the next group commit with what arrived meanwhile (and send the replies)."""
        self._commit_task = None
        if self._closing or task.cancelled():
            return
        core = self.core
        if task.result() is not None and core.finished_stored and not core.to_store:
            # Do not spin on a broken store only to retry deletions: wait a moment.
            assert self.loop is not None
            self._commit_retry = self.loop.call_later(0.5, self.flush)
        else:
            self.flush()

    def _take_writes(self) -> _Writes:
        """The core's writes besides new and finished jobs (retries, dead letters, policies)."""
        core = self.core
        if not core.pending_writes:
            return _NO_WRITES
        core.pending_writes = False
        writes = _Writes(
            core.updated_stored,
            core.buried,
            core.purged,
            core.policy_changes,
            core.remembered_added,
            core.remembered_expired,
            core.window_changes,
            core.schedule_changes,
        )
        core.updated_stored, core.buried, core.purged, core.policy_changes = [], [], [], []
        core.remembered_added, core.remembered_expired, core.window_changes = [], 0.0, []
        core.schedule_changes = []
        return writes

    def _keep_writes(self, writes: _Writes) -> None:
        """A commit failed: its writes go first into the next one."""
        if writes is _NO_WRITES:
            return
        core = self.core
        core.updated_stored[:0] = writes.updated
        core.buried[:0] = writes.buried
        core.purged[:0] = writes.purged
        core.policy_changes[:0] = writes.policies
        core.remembered_added[:0] = writes.remembered
        core.remembered_expired = max(core.remembered_expired, writes.expired)
        core.window_changes[:0] = writes.windows
        core.schedule_changes[:0] = writes.schedules
        core.pending_writes = True

    async def _commit(
        self,
        adds: list[Job],
        removes: list[Job],
        writes: _Writes | None = None,
        ends: list[RunEnd] | None = None,
    ) -> str | None:
        """Commit one group; tell the core. Returns the error, if the commit failed.

        ``ends`` are the ends of workers' runs that this commit writes: the workers' GRABs
        are answered once it is done, and wait for the next commit when it failed."""
        core = self.core
        row = core.store_row
        error: str | None = None
        writes = writes or _NO_WRITES
        removed = [StoredJob(*row(job)) for job in removes]
        added = [StoredJob(*row(job)) for job in adds]
        extra: dict[str, Any] = {}
        if writes is not _NO_WRITES:
            # Retries rewrite their row; it may have finished meanwhile (then it is removed
            # in this same commit, after the rewrite).
            added += [StoredJob(*row(job)) for job in writes.updated]
            extra = {
                "dead_add": [DeadLetter(*core.dead_row(job)) for job in writes.buried],
                "dead_remove": writes.purged,
                "policies": [
                    StoredPolicy(name, *policy)
                    for name, policy in writes.policies
                    if policy is not None
                ],
                "policies_removed": [name for name, policy in writes.policies if policy is None],
                "remembered": [RememberedUnique(*entry) for entry in writes.remembered],
                "remembered_expired": writes.expired,
                "windows": [
                    StoredWindow(name, seconds)
                    for name, seconds in writes.windows
                    if seconds is not None
                ],
                "windows_removed": [name for name, seconds in writes.windows if seconds is None],
                # The last change of each schedule is the one that counts.
                "schedules": [
                    StoredSchedule(
                        name,
                        schedule.function,
                        schedule.spec.text,
                        schedule.data,
                        schedule.due or 0,
                    )
                    for name, schedule in dict(writes.schedules).items()
                    if schedule is not None
                ],
                "schedules_removed": [
                    name for name, schedule in dict(writes.schedules).items() if schedule is None
                ],
            }
        started = time.monotonic()
        try:
            await self.store.commit(added, removed, **extra)
            self.commit_time.observe(time.monotonic() - started)
        except StoreError as exc:
            error = str(exc)
            self.rate_limited_warning("store", "store commit failed: %s", exc)
            if adds and removes:
                # Deletions are what frees a full store: they must not keep failing with
                # submissions that clients retry without end. Commit them on their own.
                try:
                    await self.store.commit([], removed)
                    removes = []
                except StoreError:
                    pass
        except Exception as exc:  # a store bug must not leave clients waiting forever
            error = f"store failure: {exc!r}"
            self.rate_limited_log(logging.ERROR, "store-bug", "store commit raised", exc_info=exc)
        if error is not None:
            # The deletions are kept for the next commit; should the server stop first, the
            # finished jobs run again after a restart (at-least-once). So are the retries'
            # rewrites and the dead letters.
            self.core.finished_stored[:0] = removes
            self._keep_writes(writes)
        self.core.commit_done(adds, error)
        if ends:
            if error is None or (not removes and writes is _NO_WRITES):
                self.core.ends_committed(ends)
            else:
                self.core.end_holds[:0] = ends
        return error

    def _arm(self, deadline: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None and self.loop is not None:
            delay = max(0.0, deadline - time.time())
            self._timer = self.loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.core.run_timers()
        self.flush()

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The event loop's own error reports (a failed accept, a transport error), which a peer
        may provoke too: through the log rate limit, one kind per message."""
        message = str(context.get("message", "event loop error"))
        exc = context.get("exception")
        self.rate_limited_log(
            logging.ERROR,
            "loop:" + message[:40],
            "%s: %r",
            message,
            exc,
            exc_info=exc if isinstance(exc, BaseException) else None,
        )

    # -------------------------------------------------------------- sockets

    def configure_socket(self, sock: socket.socket) -> None:
        """TCP_NODELAY always (asyncio sets it too), keepalive when asked."""
        cfg = self.config
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if cfg.keepalive:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                for value, name in (
                    (cfg.keepalive_idle, "TCP_KEEPIDLE"),
                    (cfg.keepalive_interval, "TCP_KEEPINTVL"),
                    (cfg.keepalive_count, "TCP_KEEPCNT"),
                ):
                    option = getattr(socket, name, None)
                    if value > 0 and option is not None:
                        sock.setsockopt(socket.IPPROTO_TCP, option, value)
        except OSError as exc:  # pragma: no cover - depends on the platform
            log.warning("could not set socket options: %s", exc)

    def rate_limited_log(
        self,
        level: int,
        key: str,
        message: str,
        *args: Any,
        exc_info: BaseException | None = None,
    ) -> None:
        """Log unless lines of this kind (``key``) come too fast; say how many were held back.

        Every line a peer can provoke goes through here (gearsql._ratelog): a flood costs a few
        lines a second, and one event alone is always logged.
        """
        self._log_limit.log(level, key, message, *args, exc_info=exc_info)

    def rate_limited_warning(self, key: str, message: str, *args: Any) -> None:
        """:meth:`rate_limited_log` at WARNING level."""
        self.rate_limited_log(logging.WARNING, key, message, *args)

    def unexpected(self, conn: _Connection, exc: BaseException) -> None:
        """An exception escaped the handling of ``conn``'s input: a bug. Close that connection
        only, and log it with its traceback (rate-limited: a peer may provoke it at will)."""
        self.rate_limited_log(
            logging.ERROR,
            "unexpected",
            "Closing connection %d from %s after an unexpected error: %r",
            conn.id,
            conn.peer,
            exc,
            exc_info=exc,
        )
        try:
            conn.drop("", "")
        except Exception as again:
            self.rate_limited_log(
                logging.ERROR, "unexpected", "could not close connection %d: %r", conn.id, again
            )
        else:
            self.flush()

    # -------------------------------------------------------------- limits

    def packet_deadline(self, refusing: bool = False) -> float:
        """When an incomplete message that starts now must be complete (monotonic time).

        ``refusing``: the rest of a refused packet, read and dropped, has a deadline even
        without ``--packet-timeout``."""
        timeout = self.config.packet_timeout
        if not timeout:
            timeout = DEFAULT_PACKET_TIMEOUT if refusing else math.inf
        return time.monotonic() + timeout

    def oldest_incomplete(self) -> _Connection | None:
        """The connection whose incomplete message started first. It is read even over the
        budget: it is the one that will complete first and give its share back, so the server
        always makes progress (and holds at most ``max_buffer`` plus one packet)."""
        for conn in self.incomplete:
            if conn.discarding < 0:
                return conn
        return None

    def budget_freed(self) -> None:
        """Incomplete messages hold fewer bytes: read the paused connections again if they fit,
        or else at least the oldest."""
        if not self.budget_paused:
            return
        if self.buffered > self.config.max_buffer:
            oldest = self.oldest_incomplete()
            if oldest is not None and oldest.budget_paused:
                del self.budget_paused[oldest]
                oldest.budget_paused = False
                oldest._update_reading()
            return
        paused = list(self.budget_paused)
        self.budget_paused.clear()
        for conn in paused:
            conn.budget_paused = False
            conn._update_reading()

    def _sweep_interval(self) -> float:
        timeouts = [t for t in (self.config.packet_timeout, self.config.idle_timeout) if t > 0]
        return max(0.05, min([1.0, *(t / 4 for t in timeouts)]))

    def _sweep(self) -> None:
        """Close connections past a deadline: an incomplete message, a refusal, idleness."""
        now = time.monotonic()
        for conn, deadline in list(self.incomplete.items()):
            if deadline > now:
                continue
            if conn.discarding >= 0:
                self.incomplete.pop(conn, None)
                if conn.transport is not None:
                    conn.transport.abort()
            else:
                conn.drop(
                    "packet-timeout",
                    "a packet was not complete within --packet-timeout (%g s)",
                    self.config.packet_timeout,
                )
        idle = self.config.idle_timeout
        if idle > 0:
            for conn in list(self.connections.values()):
                session = conn.session
                if (
                    session is not None
                    and now - conn.last_read > idle
                    and not (session.abilities or session.waiting or session.holding)
                ):
                    conn.drop("idle-timeout", "idle for --idle-timeout (%g s)", idle)
        self.flush()
        assert self.loop is not None
        self._sweeper = self.loop.call_later(self._sweep_interval(), self._sweep)

    # -------------------------------------------------------------- life cycle

    async def start(self) -> None:
        """Open the store, replay it, and listen. Raises OSError or StoreError."""
        self.loop = asyncio.get_running_loop()
        cfg = self.config
        if cfg.max_buffer < cfg.max_packet_size + HEADER:
            raise ValueError(
                f"--max-buffer ({cfg.max_buffer}) must hold one packet of --max-packet-size"
                f" ({cfg.max_packet_size}) and its {HEADER}-byte header"
            )
        if cfg.max_output <= cfg.max_packet_size + HEADER:
            raise ValueError(
                f"--max-output ({cfg.max_output}) must be larger than a packet of"
                f" --max-packet-size ({cfg.max_packet_size}) and its {HEADER}-byte header"
            )
        self.loop.set_exception_handler(self._loop_exception)
        if cfg.ssl:
            self.ssl_context = server_context(
                cfg.ssl_certificate, cfg.ssl_key, cfg.ssl_ca_file, cfg.ssl_verify_client
            )
        elif cfg.ssl_verify_client:
            raise ValueError("--ssl-verify-client needs --ssl")
        if cfg.acl_file is not None:
            try:
                self.acl = self.load_acl()
            except OSError as exc:
                raise ValueError(f"--acl-file: {_reason(exc)}") from None
        secured = self.ssl_context is not None and self.acl is not None
        for host in cfg.listen:
            if not _is_loopback(host) and not cfg.allow_insecure_remote and not secured:
                raise ValueError(
                    f"refusing to listen on {host}: the Gearman protocol has no authentication;"
                    " pass --ssl with --acl-file, or --allow-insecure-remote, to listen beyond"
                    " loopback"
                )
        await self.store.open()
        core = self.core
        for policy in await self.store.load_policies():
            core.retry_policies[policy.function] = RetryPolicy(*policy[1:])
        for stored in await self.store.load_schedules():
            try:
                spec = parse_cron(stored.spec)
            except CronError as exc:
                log.warning("schedule %r in the store is ignored: %s", stored.name, exc)
                continue
            # Ticks missed while the server was down go as the schedule's catch-up mode says
            # (by default the one that was due is submitted at once, the rest not made up).
            core.add_schedule(stored.name, stored.function, spec, stored.data, stored.due or None)
        core.define_schedules([parse_schedule(line) for line in cfg.schedules])
        for window in await self.store.load_windows():
            core.unique_windows[window.function] = window.seconds
        now = time.time()
        for entry in await self.store.load_remembered():
            if entry.expires > now:
                core.remember(*entry, stored=True)
            elif core.durable:
                # Expired while the server was down: the rows go with the first commit.
                core.remembered_expired = now
                core.pending_writes = True
        replayed = core.replay(await self.store.load())
        core.replay_dead(await self.store.load_dead())
        for host in cfg.listen:
            server = await self.loop.create_server(
                lambda: _Connection(self),
                host=host or None,
                port=cfg.port,
                backlog=cfg.backlog,
                reuse_address=True,
            )
            self.servers.append(server)
        if cfg.http_port is not None:
            # Imported only now: the HTTP protocol and its status page (with json and
            # importlib.resources) would be 0.75 MiB of every idle server's memory.
            from gearsql.http import HttpConnection

            for host in cfg.listen:
                self.http_servers.append(
                    await self.loop.create_server(
                        lambda: HttpConnection(self),
                        host=host or None,
                        port=cfg.http_port,
                        backlog=cfg.backlog,
                        reuse_address=True,
                        ssl=self.ssl_context,
                        ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self.ssl_context else None,
                    )
                )
        self._sweeper = self.loop.call_later(self._sweep_interval(), self._sweep)
        log.log(
            NOTICE,
            "gearsql %s listening on %s%s, store: %s, %d jobs replayed",
            __version__,
            ", ".join(f"{h}:{self.port}" for h in cfg.listen)
            + (f" (HTTP on port {self.http_port})" if self.http_port is not None else ""),
            (" with TLS" + (" (client certificates required)" if cfg.ssl_verify_client else ""))
            if self.ssl_context is not None
            else "",
            self.store.description,
            replayed,
        )

    @property
    def http_port(self) -> int | None:
        """The bound HTTP port (useful with ``http_port=0``); None when HTTP is off."""
        for server in self.http_servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return None

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        for server in self.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.config.port

    async def serve_until_stopped(self) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT when installed by :func:`run_server`)."""
        self._stopping = asyncio.Event()
        await self._stopping.wait()
        await self.close()

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def close(self) -> None:
        """Stop listening, close every connection, close the store."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for server in self.servers + self.http_servers:
            server.close()
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        for http in list(self.http_connections.values()):
            if http.transport is not None:
                http.transport.close()
        for server in self.servers + self.http_servers:
            await server.wait_closed()
        self.servers = []
        self.http_servers = []
        if self._timer is not None:
            self._timer.cancel()
        # Let the commit under way finish, then write what is left (finished jobs' deletions
        # above all, so that they do not run again after the restart).
        if self._commit_retry is not None:
            self._commit_retry.cancel()
        if self._commit_task is not None:
            await asyncio.wait([self._commit_task])
        core = self.core
        if core.to_store or core.finished_stored or core.pending_writes:
            adds, core.to_store = core.to_store, []
            removes, core.finished_stored = core.finished_stored, []
            await self._commit(adds, removes, self._take_writes())
        await self.store.close()
        log.log(NOTICE, "gearsql stopped")


class _Writes(NamedTuple):
    """What a group commit writes besides new and finished jobs."""

    updated: list[Job]
    buried: list[Job]
    purged: list[int]
    policies: list[tuple[bytes, RetryPolicy | None]]
    remembered: list[tuple[bytes, bytes, float, bytes]]
    expired: float
    windows: list[tuple[bytes, float | None]]
    schedules: list[tuple[bytes, Schedule | None]]


_NO_WRITES = _Writes([], [], [], [], [], 0.0, [], [])


def _start_relays(server: JobServer) -> tuple[asyncio.Event, asyncio.Task[None]] | None:
    """Start the relays of ``--relay`` against this server's own (bound) port; (stop, task)."""
    config = server.config
    if not config.relay:
        return None
    from gearsql.relay import run_relays
    from gearsql.relay.watch import RelayWatch

    host = next((h for h in config.listen if h not in ("0.0.0.0", "::", "")), "127.0.0.1")
    stop = asyncio.Event()
    # Their backlogs, for /metrics and the status page.
    server.relay_watch = RelayWatch(config.relay)

    async def relay() -> None:
        try:
            await run_relays(config.relay, [(host, server.port)], stop=stop)
        except Exception as exc:
            log.error("the relay stopped: %s", exc)

    async def relays() -> None:
        assert server.relay_watch is not None
        await asyncio.gather(relay(), server.relay_watch.run(stop))

    return stop, asyncio.create_task(relays())


def run_server(config: ServerConfig, pid_file: str | None = None) -> int:
    """Run a job server in this process until SIGTERM or SIGINT; return the exit status."""
    # Every queued job is an object the cyclic garbage collector walks in each collection of
    # the generation it is in, and at the default thresholds a growing queue sets off a full
    # collection every 70,000 new jobs or so: filling a queue of 200k took a quarter more CPU
    # than without the collector. Jobs form no cycles (the core breaks a job's references
    # when it lets go of it), so the youngest generation may grow to 10,000 objects before a
    # collection (full ones come 14 times less often), and the middle one is collected after
    # 100 of those rather than 10: a filling queue is walked there once per million new jobs,
    # not once per 100,000 (bench/inprocess.py submit-bg-no-unique: 7-12 % less CPU per job).
    gc.set_threshold(10_000, 100, gc.get_threshold()[2])
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - uvloop is the optional 'fast' extra
        uvloop = None  # type: ignore[assignment,unused-ignore]

    async def main() -> int:
        server = JobServer(config)
        loop = asyncio.get_running_loop()
        relays: tuple[asyncio.Event, asyncio.Task[None]] | None = None
        #: A SIGTERM or SIGINT that came while the server was starting (the port may already
        #: accept connections then): honoured as soon as it runs, never the default death.
        asked_early: list[bool] = []

        def stop() -> None:
            if server._stopping is None:
                asked_early.append(True)
            elif relays is None:
                server.stop()
            else:
                # The relays finish their batch (which needs the server) before it stops.
                relays[0].set()
                relays[1].add_done_callback(lambda _: server.stop())

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        try:
            await server.start()
        except (OSError, ValueError, StoreError) as exc:
            log.critical("cannot start: %s", exc)
            await server.store.close()
            return 1
        relays = _start_relays(server)
        if asked_early:
            loop.call_soon(stop)  # serve_until_stopped below is under way by then
        if config.acl_file is not None:
            loop.add_signal_handler(signal.SIGHUP, server.reload_acl)
        if pid_file:
            with open(pid_file, "w") as handle:
                handle.write(f"{os.getpid()}\n")
        try:
            await server.serve_until_stopped()
            if relays is not None:
                relays[0].set()
                await asyncio.gather(relays[1], return_exceptions=True)
        finally:
            if pid_file:
                try:
                    os.unlink(pid_file)
                except FileNotFoundError:
                    pass
        return 0

    if uvloop is not None:
        return int(uvloop.run(main()))
    return asyncio.run(main())  # type: ignore[unreachable,unused-ignore]
