"""The relay's side of the foreground ``gman_do*`` calls in MariaDB: run each waiting call as a
Gearman job and hand its outcome back to the waiting function.

How a call travels (the function's side is in :mod:`gearsql.bridges.mysql`):

1. ``gman_do`` inserts a row into ``gman_calls`` and never commits it; this module reads the
   table at READ UNCOMMITTED, so it sees the row while the caller waits.
2. It takes the named lock ``claim`` of the call (:func:`gearsql._mysqlurl.lock_name`), so
   that of several relays only one runs it, and runs the job with the :class:`AsyncClient`.
3. It commits the outcome into ``gman_results`` and then takes the named lock ``done``, which
   is what the waiting function polls for. The function reads and deletes the result.
4. When the call row is gone (the function returned, gave up or was killed) it deletes any
   result left over and releases both locks.

Named locks belong to a connection: if the connection breaks, its locks go with it, the calls
it had claimed may be claimed by another relay (the job may run twice: at-least-once), and
outcomes already committed are announced again on the new connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from gearsql._mysqlurl import literal_size, lock_name
from gearsql.client import AsyncClient
from gearsql.errors import (
    GearmanError,
    JobException,
    JobFailed,
    JobTimeout,
    ServerError,
    ServerUnavailable,
)

__all__ = ["serve_calls"]

log = logging.getLogger("gearsql.bridges.mysql_calls")

T = TypeVar("T")

#: How long a result may wait for a caller that is gone before any relay deletes it (seconds).
_ORPHAN_AGE = 60
#: Seconds between sweeps for orphaned results.
_SWEEP_EVERY = 30.0
#: The longest message gman_results.message holds (characters).
_MESSAGE_CHARS = 400
_LOCK_WAIT_TIMEOUT = 1205
#: WARN_DATA_TRUNCATED: a status an older install's gman_results.status does not have.
_DATA_TRUNCATED = 1265
#: The INSERT of an outcome around its result, at most.
_STATEMENT_OVERHEAD = 4096


@dataclass
class _Call:
    id: int
    function: bytes
    unique: bytes | None
    workload: bytes
    priority: str
    timeout: float


@dataclass
class _Outcome:
    #: complete | fail | exception, or the kind of failure: timeout | unreachable | refused |
    #: error (anything else); _gman_call picks the SQLSTATE from it.
    status: str
    result: bytes | None = None
    message: str | None = None


#: The statuses of failures an install older than gearsql/bridges/mysql.py's _RESULT_STATUS
#: cannot record (it has complete, fail, exception and error).
_KINDS = frozenset({"timeout", "unreachable", "refused"})


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _outcome_of(exc: BaseException, timeout: float) -> _Outcome:
    if isinstance(exc, JobFailed):
        return _Outcome("fail")
    if isinstance(exc, JobException):
        return _Outcome("exception", message=str(exc))
    if isinstance(exc, JobTimeout):
        return _Outcome("timeout", message=f"no result within {timeout:g} s")
    if isinstance(exc, ServerUnavailable):
        return _Outcome("unreachable", message=f"cannot reach a job server: {exc}")
    if isinstance(exc, ServerError):  # PostgreSQL's words, without the job server's name
        return _Outcome("refused", message=f"the job server refused the job: {exc.code} {exc.text}")
    return _Outcome("error", message=f"{type(exc).__name__}: {exc}")


class _CallServer:
    """The state of one serve_calls loop. Everything but the ``_db_*`` methods runs on the event
    loop; those run on the one thread of ``executor`` and own the connection."""

    def __init__(
        self,
        connect: Callable[[], Any],
        client: AsyncClient,
        database: str,
        poll_interval: float,
    ) -> None:
        self.connect = connect
        self.client = client
        self.database = database
        self.poll_interval = poll_interval
        self.calls = f"{_quote(database)}.gman_calls"
        self.results = f"{_quote(database)}.gman_results"
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gearsql-calls")
        self.conn: Any = None
        #: The server's max_allowed_packet, read on connecting.
        self.max_packet = 0
        #: call id -> the task running its job (claim lock held).
        self.running: dict[int, asyncio.Task[None]] = {}
        #: call id -> its outcome, not yet committed (the write failed; retried each round).
        self.unwritten: dict[int, _Outcome] = {}
        #: call ids whose outcome is committed and announced (claim and done locks held).
        self.finished: set[int] = set()
        self.next_sweep = time.monotonic() + _SWEEP_EVERY

    async def _db(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    # -- the loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        backoff = self.poll_interval
        try:
            while not stop.is_set():
                try:
                    await self._round()
                    backoff = self.poll_interval
                except Exception as exc:  # the database: reconnect next round
                    log.warning(
                        "gman_calls in %s: %s (retrying in %.1f s)", self.database, exc, backoff
                    )
                    await self._db(self._db_close)
                    await _wait(stop, backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                await _wait(stop, self.poll_interval)
        finally:
            for task in self.running.values():
                task.cancel()
            await asyncio.gather(*self.running.values(), return_exceptions=True)
            await self._db(self._db_close)
            self.executor.shutdown(wait=False)

    async def _round(self) -> None:
        fresh = self.conn is None
        present = await self._db(self._db_present)
        if fresh:
            # A new connection holds none of the old one's locks: take them again.
            await self._db(self._db_relock, sorted(self.running), sorted(self.finished))
        for call_id, outcome in list(self.unwritten.items()):
            if call_id in present:
                await self._db(self._db_finish, call_id, outcome)
                self.finished.add(call_id)
            else:
                await self._db(self._db_release, call_id, False)
            del self.unwritten[call_id]
        # Calls whose caller is gone: stop waiting for the job, clean up.
        for call_id in [c for c in self.running if c not in present]:
            self.running.pop(call_id).cancel()
            await self._db(self._db_release, call_id, False)
        for call_id in [c for c in self.finished if c not in present]:
            if await self._db(self._db_forget, call_id):
                self.finished.discard(call_id)
        new = [c for c in present if c not in self.running and c not in self.finished]
        for call in await self._db(self._db_claim, new):
            self.running[call.id] = asyncio.create_task(self._run_call(call))
        if time.monotonic() >= self.next_sweep:
            self.next_sweep = time.monotonic() + _SWEEP_EVERY
            await self._db(self._db_sweep, set(self.finished))

    async def _run_call(self, call: _Call) -> None:
        try:
            data = await self.client.submit(
                call.function,
                call.workload,
                unique=call.unique,
                priority=call.priority,
                timeout=call.timeout,
            )
            outcome = _Outcome("complete", result=data)
        except asyncio.CancelledError:
            raise
        except GearmanError as exc:
            outcome = _outcome_of(exc, call.timeout)
        except Exception as exc:  # a bug or an odd payload: tell the caller, keep serving
            log.exception("gman_calls %s: running call %d", self.database, call.id)
            outcome = _outcome_of(exc, call.timeout)
        if self.running.get(call.id) is not asyncio.current_task():
            return  # the caller gave up meanwhile
        try:
            await self._db(self._db_finish, call.id, outcome)
        except Exception as exc:
            log.warning(
                "gman_calls %s: cannot write the result of call %d yet: %s",
                self.database,
                call.id,
                exc,
            )
            self.unwritten[call.id] = outcome
            self.running.pop(call.id, None)
            return
        self.running.pop(call.id, None)
        self.finished.add(call.id)

    # -- on the database thread ------------------------------------------------------------

    def _cursor(self) -> Any:
        if self.conn is None:
            conn = self.connect()
            conn.autocommit = True
            cursor = conn.cursor()
            # The callers' rows are never committed: read them uncommitted. A delete that
            # meets a caller's row lock gives up at once (0 s: MariaDB's NOWAIT) and is tried
            # again in a later round: one round serves every session, so it must never wait
            # for one of them.
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")
            cursor.execute("SET SESSION innodb_lock_wait_timeout = 0")
            cursor.execute("SELECT @@max_allowed_packet")
            self.max_packet = int(cursor.fetchone()[0])
            cursor.close()
            self.conn = conn
        return self.conn.cursor()

    def _db_close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken
                pass

    def _db_present(self) -> set[int]:
        cursor = self._cursor()
        cursor.execute(f"SELECT id FROM {self.calls}")
        present = {int(row[0]) for row in cursor.fetchall()}
        cursor.close()
        return present

    def _lock(self, cursor: Any, kind: str, call_id: int) -> bool:
        cursor.execute("SELECT GET_LOCK(%s, 0)", (lock_name(self.database, kind, call_id),))
        return bool(cursor.fetchone()[0] == 1)

    def _db_relock(self, running: list[int], finished: list[int]) -> None:
        cursor = self._cursor()
        for call_id in running + finished:
            self._lock(cursor, "claim", call_id)
        for call_id in finished:
            self._lock(cursor, "done", call_id)
        cursor.close()

    def _db_claim(self, call_ids: list[int]) -> list[_Call]:
        calls = []
        cursor = self._cursor()
        for call_id in call_ids:
            cursor.execute("SELECT IS_USED_LOCK(%s)", (lock_name(self.database, "ready", call_id),))
            if cursor.fetchone()[0] is None:
                continue  # its INSERT has not finished (or the caller is gone): next round
            if not self._lock(cursor, "claim", call_id):
                continue  # another relay runs it
            cursor.execute(
                f"SELECT function, unique_key, workload, priority, timeout FROM {self.calls} "
                "WHERE id = %s",
                (call_id,),
            )
            row = cursor.fetchone()
            if row is None:  # the caller gave up meanwhile
                self._unlock(cursor, "claim", call_id)
                continue
            function, unique, workload, priority, timeout = row
            calls.append(
                _Call(
                    call_id,
                    bytes(function),
                    bytes(unique) if unique else None,
                    bytes(workload),
                    priority.decode()
                    if isinstance(priority, (bytes, bytearray))
                    else str(priority),
                    float(timeout),
                )
            )
        cursor.close()
        return calls

    def _unlock(self, cursor: Any, kind: str, call_id: int) -> None:
        cursor.execute("DO RELEASE_LOCK(%s)", (lock_name(self.database, kind, call_id),))

    def _db_finish(self, call_id: int, outcome: _Outcome) -> None:
        self._cursor().close()  # connected, so max_packet is known
        if outcome.result is not None:
            size = literal_size(outcome.result)
            if size + _STATEMENT_OVERHEAD > self.max_packet:
                # The server would refuse the statement and drop the connection, again and
                # again: tell the caller instead.
                outcome = _Outcome(
                    "error",
                    message=(
                        f"the worker's result ({len(outcome.result)} bytes) does not fit in "
                        f"max_allowed_packet ({self.max_packet} bytes)"
                    ),
                )
        message = outcome.message
        if message is not None:
            message = message[:_MESSAGE_CHARS]
        import mysql.connector

        cursor = self._cursor()
        insert = (
            f"INSERT INTO {self.results} (call_id, status, result, message) "
            "VALUES (%s, %s, %s, %s) ON DUPLICATE KEY UPDATE status = VALUES(status), "
            "result = VALUES(result), message = VALUES(message)"
        )
        try:
            cursor.execute(insert, (call_id, outcome.status, outcome.result, message))
        except mysql.connector.Error as exc:
            # An install older than the kinds of failure: a plain error (SQLSTATE 45000).
            if exc.errno != _DATA_TRUNCATED or outcome.status not in _KINDS:
                raise
            cursor.execute(insert, (call_id, "error", outcome.result, message))
        self._lock(cursor, "done", call_id)
        cursor.close()

    def _db_release(self, call_id: int, done: bool) -> None:
        cursor = self._cursor()
        self._unlock(cursor, "claim", call_id)
        if done:
            self._unlock(cursor, "done", call_id)
        cursor.close()

    def _db_forget(self, call_id: int) -> bool:
        """Delete the result of a call whose caller is gone and release its locks; False while
        the row is locked by a caller's statement that has not ended (tried next round).

        A caller deletes its result itself, inside its statement, and that statement keeps the
        row locked until it ends: a ``SELECT id, gman_do(...) FROM t`` of n rows holds n-1
        finished results while its last call waits. Read uncommitted, such a result is gone
        already, so it needs no delete and no lock wait; only a result its caller never took
        (it timed out or was killed) is deleted here.
        """
        import mysql.connector

        cursor = self._cursor()
        try:
            cursor.execute(f"SELECT COUNT(*) FROM {self.results} WHERE call_id = %s", (call_id,))
            (left,) = cursor.fetchone()
            if left:
                cursor.execute(f"DELETE FROM {self.results} WHERE call_id = %s", (call_id,))
        except mysql.connector.Error as exc:
            if exc.errno != _LOCK_WAIT_TIMEOUT:
                raise
            cursor.close()
            return False
        self._unlock(cursor, "claim", call_id)
        self._unlock(cursor, "done", call_id)
        cursor.close()
        return True

    def _db_sweep(self, mine: set[int]) -> None:
        """Delete results whose call is long gone and that no relay announces (left by a relay
        that stopped, or by a caller whose statement failed after reading)."""
        import mysql.connector

        cursor = self._cursor()
        cursor.execute(
            f"SELECT r.call_id FROM {self.results} AS r LEFT JOIN {self.calls} AS c "
            "ON c.id = r.call_id WHERE c.id IS NULL "
            "AND r.created_at < NOW(6) - INTERVAL %s SECOND",
            (_ORPHAN_AGE,),
        )
        for (call_id,) in cursor.fetchall():
            if int(call_id) in mine:
                continue
            cursor.execute(
                "SELECT IS_USED_LOCK(%s)", (lock_name(self.database, "done", int(call_id)),)
            )
            if cursor.fetchone()[0] is not None:
                continue
            try:
                cursor.execute(f"DELETE FROM {self.results} WHERE call_id = %s", (call_id,))
            except mysql.connector.Error as exc:
                if exc.errno != _LOCK_WAIT_TIMEOUT:
                    raise
        cursor.close()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass


async def serve_calls(
    connect: Callable[[], Any],
    client: AsyncClient,
    database: str,
    stop: asyncio.Event,
    *,
    poll_interval: float = 0.05,
) -> None:
    """Serve the foreground ``gman_do*`` calls of ``database`` until ``stop`` is set.

    ``connect()`` opens a new mysql-connector connection to the server (for example
    ``gearsql._mysqlurl.connector(dsn)``); it is called again after a connection breaks.
    The account needs SELECT on ``gman_calls`` and SELECT, INSERT, UPDATE, DELETE on
    ``gman_results``. ``client`` runs the jobs (its servers are where they go); each call's own
    timeout (the ``timeout`` setting) bounds its job. New calls are looked for every
    ``poll_interval`` seconds. Database errors are logged and retried with backoff; nothing
    raises out of here except cancellation.
    """
    await _CallServer(connect, client, database, poll_interval).run(stop)
