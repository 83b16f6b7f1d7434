"""The job server's network layer: asyncio moves bytes between sockets and the sans-IO core.

Each connection feeds what it reads to its :class:`~gearsql.protocol.Parser` and hands the events
to :class:`~gearsql.core.JobServerCore`; after every read (and every timer) the output the core
produced for any connection is written with one ``write`` per connection. Nothing here decides
anything about jobs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from gearsql import __version__
from gearsql.core import Job, JobServerCore, RetryPolicy, Session
from gearsql.protocol import (
    DEFAULT_MAX_PACKET_SIZE,
    AdminLine,
    Packet,
    PacketType,
    Parser,
    Violation,
    pack_response,
)
from gearsql.stores import (
    DeadLetter,
    Store,
    StoredJob,
    StoredPolicy,
    StoreError,
    default_store_url,
    open_store,
)

__all__ = ["JobServer", "ServerConfig", "run_server"]

log = logging.getLogger("gearsql.server")


@dataclass
class ServerConfig:
    """Everything ``gearsql server`` can be told; the CLI fills it from options.

    ``store`` is a store URL as :func:`gearsql.stores.open_store` takes it. Its default is the
    CLI's: the SQLite file of :func:`gearsql.stores.default_store_url`
    (``$XDG_STATE_HOME/gearsql/queue.sqlite3``), read when the config is made, so that a server
    started from Python keeps its background jobs across restarts as ``gearsql server`` does.
    Pass ``store="memory"`` for a server that keeps nothing.

    ``retries`` is how many runs a failed background job gets in all (0: none, Gearman's
    meaning), ``retry_backoff`` the (base, max) seconds of the backoff between them;
    ``job_retries`` is gearmand's option: runs of a job whose worker was lost (0 or -1:
    unlimited).
    """

    listen: Sequence[str] = ("127.0.0.1",)
    port: int = 4730
    job_retries: int = -1
    retries: int = 0
    retry_backoff: tuple[float, float] = (1.0, 300.0)
    worker_wakeup: int = 0
    exceptions: bool = False
    job_handle_prefix: str = ""
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
    max_connections: int = 0
    backlog: int = 128
    keepalive: bool = False
    keepalive_idle: int = -1
    keepalive_interval: int = -1
    keepalive_count: int = -1
    store: str = field(default_factory=default_store_url)
    allow_insecure_remote: bool = False
    remote_admin: bool = False
    verbose: str = "NOTICE"
    #: Databases whose outbox a relay inside this process drains into this server.
    relay: Sequence[str] = ()


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class _Connection(asyncio.Protocol):
    """One accepted socket."""

    __slots__ = ("core", "parser", "paused", "server", "session", "transport")

    def __init__(self, server: JobServer):
        self.server = server
        self.core = server.core
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.parser = Parser(server.config.max_packet_size)
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        limit = server.config.max_connections
        if limit and len(server.connections) >= limit:
            server.rate_limited_warning(
                "max-connections", "connection limit (%d) reached; closing new connections", limit
            )
            transport.abort()  # type: ignore[attr-defined]
            return
        sock = transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else "-"
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            server.configure_socket(sock)
        trusted = server.config.remote_admin or host == "-" or _is_loopback(host)
        self.session = self.core.connect(host, fd, trusted)
        server.connections[self.session.id] = self
        log.info("Accepted connection %d from %s", self.session.id, host)

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None:
            return
        core = self.core
        events = self.parser.feed(data)
        for event in events:
            kind = type(event)
            if kind is Packet:
                core.handle_packet(session, event)  # type: ignore[arg-type]
            elif kind is AdminLine:
                core.handle_admin(session, event)  # type: ignore[arg-type]
            else:
                self._violation(event)  # type: ignore[arg-type]
                break
        self.server.flush()

    def _violation(self, event: Violation) -> None:
        session = self.session
        assert session is not None and self.transport is not None
        self.server.rate_limited_warning(
            "violation", "Closing connection %d from %s: %s", session.id, session.peer, event.text
        )
        if event.code:
            self.core.send(
                session, pack_response(PacketType.ERROR, event.code, event.text.encode())
            )
            self.server.flush()
        # close() sends what is buffered (the ERROR) first; the session is forgotten now so
        # nothing more is queued for it.
        self.core.disconnect(session)
        self.server.connections.pop(session.id, None)
        self.session = None
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        session = self.session
        if session is None:
            return
        self.session = None
        self.server.connections.pop(session.id, None)
        self.core.disconnect(session)
        log.info("Connection %d from %s closed", session.id, session.peer)
        self.server.flush()

    def pause_writing(self) -> None:
        # The peer does not read what we send: stop reading its requests until it catches up,
        # so one slow client cannot make the server buffer without bound.
        if self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and self.paused:
            self.paused = False
            self.transport.resume_reading()


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
            # Random per run: the store keys of jobs without a unique must differ across runs.
            run_id=os.urandom(6).hex().encode(),
            retry_policy=RetryPolicy(config.retries, *config.retry_backoff),
            jitter=random.random,
        )
        self.store = store if store is not None else open_store(config.store)
        self.core.durable = self.store.durable
        self.connections: dict[int, _Connection] = {}
        self.servers: list[asyncio.base_events.Server] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._last_warning: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._stopping: asyncio.Event | None = None
        #: The group commit under way (None between commits).
        self._commit_task: asyncio.Task[str | None] | None = None
        #: After a failed commit with only deletions left, the flush that retries them.
        self._commit_retry: asyncio.TimerHandle | None = None
        #: Set by close(): no group commit starts any more; close() writes what is left.
        self._closing = False
        self.loop: asyncio.AbstractEventLoop | None = None

    # -------------------------------------------------------------- output and timers

    def flush(self) -> None:
        """Write every connection's pending output, one write each, and re-arm the timer."""
        core = self.core
        if core.notices:
            for notice in core.take_notices():
                log.log(logging.getLevelName(notice.level), "%s", notice.message)
        if core.dirty:
            connections = self.connections
            for session in core.take_dirty():
                if not session.out:
                    continue
                data = session.take_output()
                conn = connections.get(session.id)
                if data and conn is not None and conn.transport is not None:
                    conn.transport.write(data)
        if (
            (core.to_store or core.finished_stored or core.pending_writes)
            and self._commit_task is None
            and not self._closing
        ):
            self._start_commit()
        deadline = core.next_deadline()
        if deadline != self._timer_at:
            self._arm(deadline)

    def _start_commit(self) -> None:
        """Group commit: everything accepted since the last commit goes in one transaction;
        what arrives meanwhile waits for the next one."""
        core = self.core
        adds, core.to_store = core.to_store, []
        removes, core.finished_stored = core.finished_stored, []
        assert self.loop is not None
        if self._commit_retry is not None:
            self._commit_retry.cancel()
            self._commit_retry = None
        task = self.loop.create_task(self._commit(adds, removes, self._take_writes()))
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
            core.updated_stored, core.buried, core.purged, core.policy_changes
        )
        core.updated_stored, core.buried, core.purged, core.policy_changes = [], [], [], []
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
        core.pending_writes = True

    async def _commit(
        self, adds: list[Job], removes: list[Job], writes: _Writes | None = None
    ) -> str | None:
        """Commit one group; tell the core. Returns the error, if the commit failed."""
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
                "policies_removed": [
                    name for name, policy in writes.policies if policy is None
                ],
            }
        try:
            await self.store.commit(added, removed, **extra)
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
            log.exception("store commit raised")
        if error is not None:
            # The deletions are kept for the next commit; should the server stop first, the
            # finished jobs run again after a restart (at-least-once). So are the retries'
            # rewrites and the dead letters.
            self.core.finished_stored[:0] = removes
            self._keep_writes(writes)
        self.core.commit_done(adds, error)
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

    def rate_limited_warning(self, key: str, message: str, *args: Any) -> None:
        """Log at most one warning a second per kind, saying how many were held back."""
        now = time.monotonic()
        last = self._last_warning.get(key, 0.0)
        if now - last < 1.0:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last_warning[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        log.warning(message, *args)

    # -------------------------------------------------------------- life cycle

    async def start(self) -> None:
        """Open the store, replay it, and listen. Raises OSError or StoreError."""
        self.loop = asyncio.get_running_loop()
        cfg = self.config
        for host in cfg.listen:
            if not _is_loopback(host) and not cfg.allow_insecure_remote:
                raise ValueError(
                    f"refusing to listen on {host}: the Gearman protocol has no authentication;"
                    " pass --allow-insecure-remote to listen beyond loopback"
                )
        await self.store.open()
        core = self.core
        for policy in await self.store.load_policies():
            core.retry_policies[policy.function] = RetryPolicy(*policy[1:])
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
        log.log(
            NOTICE,
            "gearsql %s listening on %s, store: %s, %d jobs replayed",
            __version__,
            ", ".join(f"{h}:{self.port}" for h in cfg.listen),
            self.store.description,
            replayed,
        )

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
        for server in self.servers:
            server.close()
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        for server in self.servers:
            await server.wait_closed()
        self.servers = []
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


_NO_WRITES = _Writes([], [], [], [])

NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")


def _start_relays(server: JobServer) -> tuple[asyncio.Event, asyncio.Task[None]] | None:
    """Start the relays of ``--relay`` against this server's own (bound) port; (stop, task)."""
    config = server.config
    if not config.relay:
        return None
    from gearsql.relay import run_relays

    host = next((h for h in config.listen if h not in ("0.0.0.0", "::", "")), "127.0.0.1")
    stop = asyncio.Event()

    async def relays() -> None:
        try:
            await run_relays(config.relay, [(host, server.port)], stop=stop)
        except Exception as exc:
            log.error("the relay stopped: %s", exc)

    return stop, asyncio.create_task(relays())


def run_server(config: ServerConfig, pid_file: str | None = None) -> int:
    """Run a job server in this process until SIGTERM or SIGINT; return the exit status."""
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - uvloop is the optional 'fast' extra
        uvloop = None  # type: ignore[assignment,unused-ignore]

    async def main() -> int:
        server = JobServer(config)
        try:
            await server.start()
        except (OSError, ValueError, StoreError) as exc:
            log.critical("cannot start: %s", exc)
            await server.store.close()
            return 1
        loop = asyncio.get_running_loop()
        relays = _start_relays(server)

        def stop() -> None:
            if relays is None:
                server.stop()
                return
            # The relays finish their batch (which needs the server) before the server stops.
            relays[0].set()
            relays[1].add_done_callback(lambda _: server.stop())

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
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
