"""The relay engine: claims batches of outbox rows from a :class:`~gearsql.relay.source.Source`,
submits them through :class:`~gearsql.client.AsyncClient` and deletes what the job server
confirmed; reconnects, backs off and logs outages once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar, cast

from gearsql._clienttask import JobHandle
from gearsql._log import NOTICE
from gearsql._log import reason as _reason
from gearsql._servers import Backoff, ServersArg, format_address, parse_servers
from gearsql.client import AsyncClient, Priority
from gearsql.errors import JobTimeout
from gearsql.relay.batch import (
    Outage,
    OutboxRow,
    Strikes,
    check_unique_prefix,
    default_unique_prefix,
    settle,
    unique_for,
)
from gearsql.relay.dsn import open_source
from gearsql.relay.routes import FunctionRoutes
from gearsql.relay.source import Sent, SideTask, Source

__all__ = ["Relay", "RoundResult", "describe_error", "priority_of", "run_relays"]

log = logging.getLogger("gearsql.relay")

T = TypeVar("T")

#: After a binlog wake-up finds nothing, look again after these delays: the binlog event of a
#: commit can reach the relay a moment before InnoDB makes the row visible to other sessions.
_SETTLE = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064)

#: The relay records its contact in ``gman_relay_contact`` at most this often (seconds).
CONTACT_INTERVAL = 5.0


#: How one round (claim, submit, finish a batch) ended: ``empty`` (nothing to do), ``busy`` (rows
#: went; more may wait) or ``refused`` (the job server did not take every row).
RoundResult = Literal["empty", "busy", "refused"]


def priority_of(row: OutboxRow) -> Priority:
    """The priority a row is submitted with: its ``priority`` column, NORMAL when unknown."""
    return row.level


def describe_error(exc: BaseException) -> str:
    """Why a row's submission was not confirmed, for the log."""
    if isinstance(exc, asyncio.CancelledError):
        return "stopped before the job server confirmed"
    if isinstance(exc, TimeoutError):
        return str(exc) or "no JOB_CREATED in time"
    return _reason(exc)


class Relay:
    """Drains one :class:`Source` into the job servers until :meth:`stop`.

    ``batch`` bounds how many rows are claimed, held and in flight at once, ``batch_bytes``
    the size of their workloads together (a larger single row goes alone). ``poll_interval``
    is the longest a committed row waits when no wake-up comes. ``unique_prefix`` (default
    :func:`~gearsql.relay.batch.default_unique_prefix` of the database) + the outbox id is the
    unique of rows that have none. ``submit_timeout`` bounds the wait for a batch's JOB_CREATEDs
    (its rows go out together); ``stop_grace`` how long a stop waits for the batch in hand
    before abandoning the rest of it (abandoned rows stay in the outbox). ``side_tasks`` run
    beside the outbox, like those of :meth:`Source.side_tasks`. Raises ValueError for a bad
    option.

    Where the jobs go: to the database's own ``servers`` setting (read at every connect, so a
    change made by the installer is followed), unless ``servers`` (or ``client``) is given,
    which overrides it and is logged when the two differ. A database without the setting
    (SQLite) or one the relay may not read it from: ``servers``, else ``$GEARMAN_SERVERS``,
    else 127.0.0.1:4730.

    A function with servers of its own in the database (``gman_servers_set(servers,
    function)``, :meth:`Source.function_servers`) goes to those, through a client per distinct
    list (:class:`~gearsql.relay.routes.FunctionRoutes`), as far as they are among the servers
    above; a choice outside them is ignored with a warning. The choices are read at every
    connect, with every batch claimed (so rows claimed after a change follow it) and every
    CONTACT_INTERVAL (for MariaDB's foreground calls while the outbox is idle).
    """

    def __init__(
        self,
        source: Source,
        servers: ServersArg = None,
        *,
        client: AsyncClient | None = None,
        batch: int = 500,
        batch_bytes: int = 64 * 1024 * 1024,
        poll_interval: float = 0.5,
        unique_prefix: str | None = None,
        submit_timeout: float = 30.0,
        stop_grace: float = 5.0,
        side_tasks: Sequence[SideTask] = (),
    ) -> None:
        if batch < 1 or batch_bytes < 1:
            raise ValueError("batch and batch_bytes must be at least 1")
        if poll_interval <= 0 or submit_timeout <= 0 or stop_grace < 0:
            raise ValueError("poll_interval and submit_timeout must be positive")
        self.source = source
        self.client = client if client is not None else AsyncClient(servers)
        self._own_client = client is None
        #: Whether the servers were chosen by the caller (then the setting does not apply).
        self._explicit = servers is not None or client is not None
        #: The database's servers setting as last read (None: not yet, or it has none).
        self._setting: str | None = None
        self.batch = batch
        self.batch_bytes = batch_bytes
        self.poll_interval = poll_interval
        self.prefix = None if unique_prefix is None else check_unique_prefix(unique_prefix)
        self.submit_timeout = submit_timeout
        self.stop_grace = stop_grace
        self.stopping = asyncio.Event()
        #: Rows confirmed by a job server and deleted since the start.
        self.submitted = 0
        self._side_tasks = list(side_tasks)
        self._woken = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "gearsql-relay-db")
        self._connected = False
        self._ever_connected = False
        self._db_backoff = Backoff(0.2, 10.0)
        self._db_outage = Outage()
        self._server_backoff = Backoff(0.2, 10.0)
        self._server_outage = Outage()
        self._strikes = Strikes()
        #: Rows moved to the dead letters (or deleted, without the table) since the start.
        self.dead = 0
        #: This relay in ``gman_relay_contact``: host:pid.
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._last_contact: float | None = None
        self._routes = FunctionRoutes(source.describe())

    def stop(self) -> None:
        """Make :meth:`run` finish the batch in hand (within ``stop_grace``) and return."""
        self.stopping.set()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _db(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)

    async def _sleep(self, seconds: float, wakes: bool = False) -> None:
        """Wait ``seconds``, or less when stopping (or when woken, with ``wakes``)."""
        events = [self.stopping] + ([self._woken] if wakes else [])
        waiters = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until stopped. Database and job server failures are logged and retried; only a
        configuration error (ValueError, e.g. ``--source binlog`` where there is none) ends it
        early, raised."""
        background: list[asyncio.Task[None]] = []
        try:
            while not self.stopping.is_set():
                if not self._connected:
                    if not await self._connect():
                        continue
                    if not background:
                        background = await self._start_background()
                woken = self._woken.is_set()
                self._woken.clear()
                try:
                    await self._contact()
                    state = await self._round()
                    # Only a wake-up that found nothing is worth looking again; a new wake-up
                    # cuts the wait short.
                    if state == "empty" and woken and self.source.wake == "binlog":
                        for delay in _SETTLE:
                            if self._woken.is_set() or self.stopping.is_set():
                                break
                            await self._sleep(delay, wakes=True)
                            state = await self._round()
                            if state != "empty":
                                log.debug("binlog wake-up: the rows came after %g s", delay)
                                break
                except Exception as exc:  # the database connection broke
                    await self._lost_database(exc)
                    continue
                if state == "busy":
                    continue
                if state == "refused":
                    await self._sleep(self._server_backoff.next_delay())
                elif not self._woken.is_set():
                    # No longer than until the retry of a function's servers that are down.
                    retry = self._routes.next_retry()
                    wait = self.poll_interval
                    if retry is not None:
                        wait = min(wait, max(0.0, retry - self._now()))
                    await self._sleep(wait, wakes=True)
        finally:
            self.stopping.set()
            await self._stop_background(background)
            await self._db(self.source.close)
            self._executor.shutdown(wait=False)
            await self._routes.close()
            if self._own_client:
                await self.client.close()
            log.log(
                NOTICE, "relay for %s stopped after %d rows", self.source.describe(), self.submitted
            )

    async def _connect(self) -> bool:
        try:
            await self._db(self.source.open)
        except ValueError:
            raise  # a configuration error: retrying will not help
        except Exception as exc:
            delay = self._db_backoff.next_delay()
            if self._db_outage.failed(self._now()):
                log.warning(
                    "%s: cannot connect: %s; retrying with backoff",
                    self.source.describe(),
                    _reason(exc),
                )
            else:
                log.debug("%s: still cannot connect: %s", self.source.describe(), _reason(exc))
            await self._db(self.source.close)
            await self._sleep(delay)
            return False
        self._connected = True
        self._db_backoff.reset()
        await self._follow_setting()
        self._routes.where = self.source.describe()
        self._routes.update(await self._db(self.source.function_servers), self.client)
        if self.prefix is None:
            self.prefix = check_unique_prefix(default_unique_prefix(self.source.identity()))
        outage = self._db_outage.recovered(self._now())
        if not self._ever_connected:
            self._ever_connected = True
            wake = {"poll": "", "listen": "woken by LISTEN, "}.get(
                self.source.wake, f"woken by its {self.source.wake}, "
            )
            how = f"{wake}polled every {self.poll_interval:g} s"
            log.log(
                NOTICE,
                "relaying %s to %s (%s; batches of %d; unique prefix %r)",
                self.source.describe(),
                ",".join(self.client.servers),
                how,
                self.batch,
                self.prefix.decode(),
            )
        elif outage is not None:
            log.log(NOTICE, "%s: connected again after %.1f s", self.source.describe(), outage)
        return True

    async def _follow_setting(self) -> None:
        """Submit to the database's ``servers`` setting, unless servers were given; say so when
        the setting and the given servers differ, or the setting changed."""
        setting = self.source.servers_setting
        if setting is None or setting == self._setting:
            return
        first = self._setting is None
        self._setting = setting
        where = self.source.describe()
        try:
            wanted = [format_address(address) for address in parse_servers(setting)]
        except ValueError as exc:
            log.error(
                "%s: the servers setting %r is not a server list (%s); relaying to %s",
                where,
                setting,
                exc,
                ",".join(self.client.servers),
            )
            return
        if wanted == self.client.servers:
            return
        if self._explicit:
            log.log(
                NOTICE,
                "%s: relaying to %s as given, not to the database's servers setting (%s)",
                where,
                ",".join(self.client.servers),
                ",".join(wanted),
            )
            return
        if not first:
            log.log(
                NOTICE,
                "%s: the servers setting changed from %s to %s; relaying there from now on",
                where,
                ",".join(self.client.servers),
                ",".join(wanted),
            )
        old, self.client = self.client, AsyncClient(wanted)
        await old.close()
        self._routes.update(self._routes.entries, self.client)

    async def _lost_database(self, exc: Exception) -> None:
        self._connected = False
        self._last_contact = None
        if self._db_outage.failed(self._now()):
            log.warning(
                "%s: %s; reconnecting with backoff (rows not yet confirmed stay in the outbox)",
                self.source.describe(),
                _reason(exc),
            )
        await self._db(self.source.close)
        await self._sleep(self._db_backoff.next_delay())

    # -- one batch --------------------------------------------------------------------------

    async def _round(self) -> RoundResult:
        """Claim, submit and finish one batch (see :data:`RoundResult`)."""
        # While the job server is down, one row at a time finds out when it is back without
        # holding many locks (or SQLite's write lock) for a submission that fails; after a
        # batch lost its connection, one row at a time finds the row that breaks it.
        alone = self._server_outage.down or self._strikes.isolating
        limit = 1 if alone else self.batch
        rows, routes = await self._db(self._claim, limit, self._routes.skipped(self._now()))
        if not rows:
            return "empty"
        self._routes.update(routes, self.client)
        self._strikes.claimed([row.id for row in rows])
        outcomes = await self._submit(rows)
        settlement = settle(rows, outcomes, self._strikes)
        handles = {
            row.id: (row.function, outcome)
            for row, outcome in zip(rows, outcomes, strict=True)
            if isinstance(outcome, JobHandle)
        }
        sent = [
            Sent(
                id_,
                handles[id_][0],
                handles[id_][1].handle.decode("utf-8", "replace"),
                handles[id_][1].server,
            )
            for id_ in settlement.done
            if id_ in handles
        ]
        await self._db(self.source.finish, settlement.done, settlement.dead, sent)
        self.submitted += len(settlement.done)
        if settlement.done:
            log.info(
                "%s: submitted %d row(s), ids %d-%d",
                self.source.describe(),
                len(settlement.done),
                settlement.done[0],
                settlement.done[-1],
            )
        where = (
            "moved it to gman_outbox_dead"
            if self.source.keeps_dead
            else "deleted it (this install has no gman_outbox_dead: run the install again)"
        )
        for (row, _), (_, reason) in zip(settlement.refused, settlement.dead, strict=True):
            self.dead += 1
            log.error(
                "%s: outbox row %d can never be submitted, %s: %s; function %r",
                self.source.describe(),
                row.id,
                where,
                reason,
                row.function[:80],
            )
        if self._routes_failed(rows, settlement.done, settlement.failed):
            return "busy"  # only functions with servers of their own failed; the rest go on
        if settlement.failed:
            if self._server_outage.failed(self._now()):
                log.warning(
                    "%s: the job server does not take jobs: %s; rows wait in the "
                    "outbox, retrying with backoff",
                    self.source.describe(),
                    describe_error(settlement.failed[0][1]),
                )
            return "refused"
        outage = self._server_outage.recovered(self._now())
        if outage is not None:
            log.log(
                NOTICE,
                "%s: the job server takes jobs again (after %.1f s)",
                self.source.describe(),
                outage,
            )
        self._server_backoff.reset()
        return "busy"

    def _routes_failed(
        self,
        rows: list[OutboxRow],
        done: list[int],
        failed: Sequence[tuple[OutboxRow, BaseException]],
    ) -> bool:
        """Follow the outages of functions' own servers (:class:`FunctionRoutes`): log where
        one starts or ends. True when every failure of the batch was on such servers, so that
        their rows wait (claims skip them until a retry is due) while the others go on; False
        when the default servers failed too (the relay's outage handling applies) or nothing
        failed."""
        now = self._now()
        took = set(done)
        for servers in {self._routes.route_of(row.function) for row in rows if row.id in took}:
            if servers is not None and (length := self._routes.succeeded(servers, now)):
                log.log(
                    NOTICE,
                    "%s: %s take jobs again (after %.1f s)",
                    self.source.describe(),
                    ",".join(servers),
                    length,
                )
        # The names of the functions that failed, by the servers they went to.
        down: dict[tuple[str, ...] | None, set[str]] = {}
        for row, _ in failed:
            name = repr(row.function[:80].decode("utf-8", "replace"))
            down.setdefault(self._routes.route_of(row.function), set()).add(name)
        if not down or None in down:
            return False
        for servers, names in down.items():
            assert servers is not None
            if self._routes.failed(servers, now):
                log.warning(
                    "%s: %s, the servers of function(s) %s, do not take jobs: %s; those rows "
                    "wait in the outbox, retried with backoff, while the others go on",
                    self.source.describe(),
                    ",".join(servers),
                    ", ".join(sorted(names))[:400],
                    describe_error(failed[0][1]),
                )
        return True

    def _claim(
        self, limit: int, skip: Sequence[bytes] = ()
    ) -> tuple[list[OutboxRow], dict[bytes, str]]:
        """On the database thread: claim a batch (leaving the rows of the functions in
        ``skip``) and, when it holds rows, read the functions' servers in its transaction (one
        hop to the thread for both)."""
        rows = self.source.claim(limit, self.batch_bytes, skip)
        return rows, self.source.function_servers() if rows else self._routes.entries

    async def _contact(self) -> None:
        """Record this relay's contact in the database, and read the functions' servers again,
        at most every CONTACT_INTERVAL."""
        now = self._now()
        if self._last_contact is not None and now - self._last_contact < CONTACT_INTERVAL:
            return
        self._last_contact = now
        await self._db(self.source.contact, self.name, ",".join(self.client.servers))
        self._routes.update(await self._db(self.source.function_servers), self.client)

    def _client_for(self, function: str | bytes) -> AsyncClient:
        """The client that submits jobs of ``function`` (see :class:`FunctionRoutes`)."""
        return self._routes.client_for(function, self.client)

    async def _submit(self, rows: list[OutboxRow]) -> list[object]:
        """Submit every row at once; each outcome is a job handle or the exception. The rows
        go out in one write and are waited for together (no Task per row)."""
        prefix = self.prefix
        assert prefix is not None
        outcomes: list[object] = [None] * len(rows)
        started: dict[int, asyncio.Future[JobHandle]] = {}
        for index, row in enumerate(rows):
            try:
                started[index] = self._client_for(row.function).start_background(
                    row.function,
                    row.workload,
                    unique=unique_for(row, prefix),
                    priority=priority_of(row),
                )
            except Exception as exc:  # refused before sending (a name the protocol forbids)
                outcomes[index] = exc
        if started:
            gathered = asyncio.gather(*started.values(), return_exceptions=True)
            timeout = self.submit_timeout
            if not self.stopping.is_set():
                stopped = asyncio.ensure_future(self.stopping.wait())
                either: set[asyncio.Future[Any]] = {gathered, stopped}
                await asyncio.wait(either, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
            if not gathered.done() and self.stopping.is_set():
                log.log(
                    NOTICE,
                    "%s: stopping; waiting up to %g s for the batch in hand",
                    self.source.describe(),
                    self.stop_grace,
                )
                timeout = self.stop_grace
                await asyncio.wait({gathered}, timeout=timeout)
            for index, future in started.items():
                outcomes[index] = _outcome(future, rows[index], timeout, self.stopping.is_set())
            gathered.cancel()
        return outcomes

    # -- watching and side tasks ------------------------------------------------------------

    async def _start_background(self) -> list[asyncio.Task[None]]:
        tasks = [asyncio.create_task(self._watch())]
        side = [*self._side_tasks, *await self._db(self.source.side_tasks)]
        for task in side:
            tasks.append(asyncio.create_task(self._guard(task)))
        return tasks

    async def _guard(self, task: SideTask) -> None:
        try:
            # Through a stand-in, so that a side task follows a change of the servers setting.
            await task(cast(AsyncClient, _CurrentClient(self)), self.stopping)
        except Exception:
            log.exception("%s: a side task of the relay failed", self.source.describe())

    async def _watch(self) -> None:
        """Keep :meth:`Source.watch` running; while it cannot, the relay polls."""
        outage = Outage()
        backoff = Backoff(0.5, 30.0)

        def woken() -> None:
            if outage.recovered(self._now()) is not None:
                log.log(
                    NOTICE, "%s: watching the %s again", self.source.describe(), self.source.wake
                )
                backoff.reset()
            self._woken.set()

        while not self.stopping.is_set():
            try:
                await self.source.watch(woken)
                problem = "it ended"
            except Exception as exc:
                problem = _reason(exc)
            if outage.failed(self._now()):
                log.warning(
                    "%s: cannot watch the %s: %s; polling every %g s meanwhile",
                    self.source.describe(),
                    self.source.wake,
                    problem,
                    self.poll_interval,
                )
            await self._sleep(backoff.next_delay())

    async def _stop_background(self, tasks: list[asyncio.Task[None]]) -> None:
        if not tasks:
            return
        watcher, side = tasks[0], tasks[1:]
        watcher.cancel()
        if side:
            await asyncio.wait(side, timeout=10)
        for task in side:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _outcome(
    future: asyncio.Future[JobHandle], row: OutboxRow, timeout: float, stopping: bool
) -> object:
    """What became of one row's submission: its handle, its error, or (not confirmed in time)
    JobTimeout, or CancelledError when the relay is stopping; an unfinished wait is dropped."""
    if not future.done():
        future.cancel()
        if stopping:
            return asyncio.CancelledError()
        return JobTimeout(f"background job {row.function!r}: no answer within {timeout:g} s")
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception() or future.result()


class _CurrentClient:
    """Stands for the client the relay uses at the moment (see :meth:`Relay._follow_setting`);
    a job goes through the client of its function (see :class:`FunctionRoutes`)."""

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    def __getattr__(self, name: str) -> Any:
        return getattr(self._relay.client, name)

    async def submit(self, function: str | bytes, *args: Any, **kwargs: Any) -> bytes:
        return await self._relay._client_for(function).submit(function, *args, **kwargs)

    async def submit_background(
        self, function: str | bytes, *args: Any, **kwargs: Any
    ) -> JobHandle:
        client = self._relay._client_for(function)
        return await client.submit_background(function, *args, **kwargs)


async def run_relays(
    dsns: Sequence[str],
    servers: ServersArg = None,
    *,
    stop: asyncio.Event,
    schema: str = "gearsql",
    source: str = "auto",
    **options: Any,
) -> None:
    """Run one :class:`Relay` per DSN until ``stop`` is set (the entry point of ``gearsql
    relay`` and ``gearsql server --relay``); ``options`` are :class:`Relay`'s. Raises ValueError
    for a DSN or option that cannot work, then stops the others."""
    relays = [Relay(open_source(dsn, schema, source), servers, **options) for dsn in dsns]
    tasks = [asyncio.create_task(relay.run()) for relay in relays]
    waiter = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for relay in relays:
            relay.stop()
        waiter.cancel()
        await asyncio.gather(*tasks, waiter, return_exceptions=True)
