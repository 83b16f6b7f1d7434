"""The relay: submits the committed rows of a database's outbox as background jobs.

In the transactional mode the ``gman_do*_background`` SQL functions write a row into
``gman_outbox`` inside the caller's transaction. The relay reads only committed rows, so a
transaction that rolls back never starts a job, and a worker never runs before the row that
triggered it is visible. For each batch it

1. claims up to ``batch`` rows in a transaction that locks them (``FOR UPDATE SKIP LOCKED`` in
   PostgreSQL and MariaDB/MySQL, so two relays never hold the same row; ``BEGIN IMMEDIATE`` in
   SQLite),
2. submits every row as a background job with its priority, and as unique the row's own unique
   or ``<prefix><outbox id>``, all in flight at once,
3. deletes the rows whose JOB_CREATED arrived and commits; rows whose submission failed stay.

A relay killed between 2 and 3 leaves its rows in place; the next one submits them again with the
same unique, which the job server coalesces while the first job is still queued (if it already
ran, it runs twice: handlers must be idempotent). While no job server answers, rows wait in the
outbox and the relay retries with backoff.

Sources differ only in how they hear of new rows: PostgreSQL ``LISTEN gearsql_outbox`` (the
outbox insert sends ``NOTIFY``, which is delivered at commit), MariaDB/MySQL row events of the
outbox table in the binlog (``mysql-replication``; written at commit), else polling. Every
source also polls every ``poll_interval`` seconds, so a missed wake-up only delays a row. The
table is the only source of truth.

Database calls are blocking (psycopg, sqlite3, mysql-connector) and run in one thread per source;
the submissions run on the event loop through :class:`gearsql.client.AsyncClient`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
import re
import sqlite3
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gearsql._servers import Backoff, ServersArg
from gearsql.client import AsyncClient, Priority
from gearsql.errors import GearmanError

__all__ = [
    "SOURCES",
    "MySQLSource",
    "OutboxRow",
    "PostgresSource",
    "Relay",
    "SQLiteSource",
    "Source",
    "open_source",
    "run_relays",
]

log = logging.getLogger("gearsql.relay")
#: The level of the start-up lines (as in gearsql.server).
NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")

#: How a relay may learn of new rows; ``auto`` picks the best the database offers.
SOURCES = ("auto", "listen", "binlog", "poll")
#: The PostgreSQL channel that the outbox insert notifies (see sql/postgres/install.sql).
CHANNEL = "gearsql_outbox"

_PRIORITIES = {"high": Priority.HIGH, "normal": Priority.NORMAL, "low": Priority.LOW}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_MAX_UNIQUE = 64


@dataclass(frozen=True)
class OutboxRow:
    """One outbox row as the relay submits it."""

    id: int
    function: bytes
    unique: bytes | None
    workload: bytes
    priority: str


def _bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def _row(values: Sequence[Any]) -> OutboxRow:
    id_, function, unique, workload, priority = values
    if isinstance(priority, (bytes, bytearray)):
        priority = priority.decode("ascii")
    return OutboxRow(
        int(id_), _bytes(function), _bytes(unique) if unique else None, _bytes(workload),
        str(priority),
    )


class Source:
    """One database's outbox. Every method blocks and is called from the relay's one database
    thread; an exception from any of them means "the connection is broken": the relay closes
    the source, waits, and opens it again."""

    #: How this source hears of new rows: ``listen``, ``binlog`` or ``poll``.
    wake = "poll"

    def open(self) -> None:
        """Connect (again)."""
        raise NotImplementedError

    def identity(self) -> str:
        """A name of the database and table, the same for every relay on it: the default unique
        prefix is derived from it."""
        raise NotImplementedError

    def claim(self, limit: int) -> list[OutboxRow]:
        """Lock and return up to ``limit`` of the oldest rows no other relay holds; with none,
        end the transaction and return []."""
        raise NotImplementedError

    def finish(self, ids: list[int]) -> None:
        """Delete the rows ``ids`` (a subset of the claim) and commit, which also lets go of the
        other claimed rows."""
        raise NotImplementedError

    def wait(self, timeout: float) -> None:
        """Return when new rows may have been committed, or after ``timeout`` seconds."""
        time.sleep(timeout)

    def close(self) -> None:
        """Disconnect; safe to call on a broken or closed source."""
        raise NotImplementedError

    def extra_tasks(
        self, client: AsyncClient, stop: asyncio.Event
    ) -> list[Callable[[], Awaitable[None]]]:
        """More work the relay runs beside the outbox for this database (MariaDB's foreground
        calls); called once, after the first successful :meth:`open`."""
        return []

    def describe(self) -> str:
        return self.identity()


def _close_quietly(conn: Any) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:  # already broken
            pass


class PostgresSource(Source):
    """``<schema>.gman_outbox`` in PostgreSQL (psycopg 3), woken by ``LISTEN``."""

    def __init__(self, dsn: str, schema: str = "gearsql", wake: str = "listen") -> None:
        if not _IDENTIFIER.match(schema):
            raise ValueError(f"schema {schema!r} is not a plain SQL identifier")
        if wake not in ("listen", "poll"):
            raise ValueError(f"a PostgreSQL relay listens or polls, not {wake!r}")
        self.dsn = dsn
        self.schema = schema
        self.wake = wake
        self.table = f'"{schema}".gman_outbox'
        self.conn: Any = None
        self.listener: Any = None
        self._identity = ""

    def open(self) -> None:
        import psycopg

        self.close()
        self.conn = psycopg.connect(self.dsn, connect_timeout=10)
        if self.wake == "listen":
            self.listener = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
            self.listener.execute(f"LISTEN {CHANNEL}")
        row = self.conn.execute(
            "SELECT current_database(), to_regclass(%s) IS NOT NULL", (self.table,)
        ).fetchone()
        self.conn.rollback()
        self._identity = f"postgresql:{row[0]}:{self.schema}"
        if not row[1]:
            raise LookupError(
                f"{self.table} does not exist in database {row[0]!r}: run "
                f"`gearsql install postgres --schema {self.schema}` first"
            )

    def identity(self) -> str:
        return self._identity

    def claim(self, limit: int) -> list[OutboxRow]:
        rows = self.conn.execute(
            f"SELECT id, function, unique_key, workload, priority FROM {self.table} "
            "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
            (limit,),
        ).fetchall()
        if not rows:
            self.conn.rollback()
        return [_row(row) for row in rows]

    def finish(self, ids: list[int]) -> None:
        if ids:
            self.conn.execute(f"DELETE FROM {self.table} WHERE id = ANY(%s)", (ids,))
        self.conn.commit()

    def wait(self, timeout: float) -> None:
        if self.listener is None:
            time.sleep(timeout)
            return
        # One notification is enough; drain the others so that they do not wake us again.
        for _ in self.listener.notifies(timeout=timeout, stop_after=1):
            pass
        for _ in self.listener.notifies(timeout=0):
            pass

    def close(self) -> None:
        _close_quietly(self.conn)
        _close_quietly(self.listener)
        self.conn = self.listener = None


class SQLiteSource(Source):
    """``gman_outbox`` in an SQLite file, polled. The claim holds SQLite's write lock while a
    batch is submitted (milliseconds), which also keeps two relays on one file apart."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.conn: sqlite3.Connection | None = None

    def open(self) -> None:
        self.close()
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"no SQLite database at {self.path}")
        self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30,
                                    check_same_thread=False)

    def identity(self) -> str:
        return f"sqlite:{self.path}"

    def claim(self, limit: int) -> list[OutboxRow]:
        assert self.conn is not None
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            rows = self.conn.execute(
                "SELECT id, function, unique_key, workload, priority FROM gman_outbox "
                "ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        except sqlite3.OperationalError as exc:
            self.conn.execute("ROLLBACK")
            if "no such table" in str(exc):  # created by the first transactional call
                return []
            raise
        if not rows:
            self.conn.execute("ROLLBACK")
        return [_row(row) for row in rows]

    def finish(self, ids: list[int]) -> None:
        assert self.conn is not None
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            self.conn.execute(
                f"DELETE FROM gman_outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk
            )
        self.conn.execute("COMMIT")

    def close(self) -> None:
        _close_quietly(self.conn)
        self.conn = None


class MySQLSource(Source):
    """``gman_outbox`` in a MariaDB or MySQL database (mysql-connector-python), woken by the
    outbox's row events in the binlog where it is on in ROW format, else polled."""

    def __init__(self, dsn: str, wake: str = "auto") -> None:
        from gearsql.bridges.mysql import connect_config

        if wake not in ("auto", "binlog", "poll"):
            raise ValueError(f"a MySQL relay follows the binlog or polls, not {wake!r}")
        self.dsn = dsn
        self.config = {**connect_config(dsn), "autocommit": False}
        self.database = str(self.config["database"])
        self.wanted = wake
        self.wake = "poll" if wake == "auto" else wake
        self.conn: Any = None
        self.skip_locked = True
        self._binlog: _BinlogFollower | None = None
        self._checked = False

    def open(self) -> None:
        import mysql.connector

        self.close()
        self.conn = mysql.connector.connect(**self.config)
        cursor = self.conn.cursor()
        cursor.execute("SELECT VERSION(), @@log_bin, @@binlog_format")
        version, log_bin, binlog_format = cursor.fetchone()
        cursor.execute(
            "SELECT COUNT(*) FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_name = 'gman_outbox'"
        )
        (tables,) = cursor.fetchone()
        cursor.close()
        self.conn.rollback()
        if not tables:
            raise LookupError(
                f"gman_outbox does not exist in database {self.database!r}: run "
                "`gearsql install mysql` first"
            )
        mariadb = "mariadb" in str(version).lower()
        self.skip_locked = _skip_locked(str(version), mariadb)
        if not self._checked:
            self._checked = True
            if not self.skip_locked:
                log.warning("%s has no SKIP LOCKED: two relays on it take turns", version)
            self._choose_wake(bool(int(log_bin)), str(binlog_format), mariadb)
        if self.wake == "binlog" and self._binlog is None:
            self._binlog = _BinlogFollower(self.config, mariadb)
            self._binlog.start()

    def _choose_wake(self, log_bin: bool, binlog_format: str, mariadb: bool) -> None:
        problem = None
        if not log_bin:
            problem = "the binlog is off (log_bin=OFF)"
        elif binlog_format.upper() != "ROW":
            problem = f"binlog_format is {binlog_format}, not ROW"
        else:
            try:
                import pymysqlreplication  # type: ignore[import-untyped,unused-ignore]  # noqa: F401
            except ImportError:
                problem = "mysql-replication is not installed (pip install 'gearsql[mysql]')"
        if problem is None:
            cursor = self.conn.cursor()
            try:
                cursor.execute("SHOW MASTER STATUS")
                if cursor.fetchone() is None:
                    problem = "SHOW MASTER STATUS returns nothing"
            except Exception as exc:  # no privilege
                problem = f"cannot read the binlog position: {exc}"
            finally:
                cursor.close()
        if problem is None:
            self.wake = "binlog"
        elif self.wanted == "binlog":
            raise ValueError(f"--source binlog: {problem}")
        else:
            self.wake = "poll"
            log.log(
                NOTICE, "%s: polling the outbox, because %s", self.describe(), problem
            )

    def identity(self) -> str:
        return f"mysql:{self.config['host']}:{self.config['port']}:{self.database}"

    def claim(self, limit: int) -> list[OutboxRow]:
        cursor = self.conn.cursor()
        lock = "FOR UPDATE SKIP LOCKED" if self.skip_locked else "FOR UPDATE"
        cursor.execute(
            "SELECT id, function, unique_key, workload, priority FROM gman_outbox "
            f"ORDER BY id LIMIT %s {lock}",
            (limit,),
        )
        rows = cursor.fetchall()
        cursor.close()
        if not rows:
            self.conn.rollback()
        return [_row(row) for row in rows]

    def finish(self, ids: list[int]) -> None:
        if ids:
            cursor = self.conn.cursor()
            cursor.execute(
                f"DELETE FROM gman_outbox WHERE id IN ({','.join(['%s'] * len(ids))})", ids
            )
            cursor.close()
        self.conn.commit()

    def wait(self, timeout: float) -> None:
        if self._binlog is None:
            time.sleep(timeout)
        else:
            self._binlog.wait(timeout)

    def close(self) -> None:
        _close_quietly(self.conn)
        self.conn = None

    def shutdown(self) -> None:
        self.close()
        if self._binlog is not None:
            self._binlog.stop()
            self._binlog = None

    def extra_tasks(
        self, client: AsyncClient, stop: asyncio.Event
    ) -> list[Callable[[], Awaitable[None]]]:
        import mysql.connector

        conn: Any = mysql.connector.connect(**{**self.config, "autocommit": True})
        try:
            cursor = conn.cursor()
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = 'gman_calls'"
            )
            row = cursor.fetchone()
            cursor.close()
        finally:
            conn.close()
        if not row or not row[0]:
            return []
        from gearsql.bridges.mysql import connector
        from gearsql.bridges.mysql_calls import serve_calls

        async def calls() -> None:
            await serve_calls(connector(self.dsn), client, self.database, stop,
                              poll_interval=0.05)

        return [calls]


def _skip_locked(version: str, mariadb: bool) -> bool:
    numbers = [int(part) for part in re.findall(r"\d+", version)[:2]] + [0, 0]
    major, minor = numbers[0], numbers[1]
    if mariadb:
        return (major, minor) >= (10, 6)
    return major >= 8


class _BinlogFollower:
    """Follows the binlog from its current end in a thread and sets an event for every row
    written into ``gman_outbox``; InnoDB writes its events to the binlog at commit."""

    def __init__(self, config: dict[str, Any], mariadb: bool) -> None:
        self.settings = {
            "host": config["host"], "port": int(config["port"]),
            "user": config["user"], "passwd": config["password"],
        }
        self.database = config["database"]
        self.mariadb = mariadb
        self.woken = threading.Event()
        self.stopping = threading.Event()
        self.stream: Any = None
        self.thread = threading.Thread(target=self._follow, name="gearsql-binlog", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def wait(self, timeout: float) -> None:
        self.woken.wait(timeout)
        self.woken.clear()

    def stop(self) -> None:
        self.stopping.set()
        stream = self.stream
        if stream is not None:
            try:
                stream.close()
            except Exception:  # the reading thread may be using it
                pass
        self.thread.join(5)

    def _follow(self) -> None:
        from pymysqlreplication import BinLogStreamReader  # type: ignore[import-untyped,unused-ignore]
        from pymysqlreplication.row_event import (  # type: ignore[import-untyped,unused-ignore]
            WriteRowsEvent,
        )

        backoff = Backoff(0.5, 10.0)
        while not self.stopping.is_set():
            try:
                self.stream = BinLogStreamReader(
                    connection_settings=self.settings,
                    server_id=random.randint(100_000, 2**31 - 1),
                    blocking=True,
                    resume_stream=True,
                    only_events=[WriteRowsEvent],
                    only_schemas=[self.database],
                    only_tables=["gman_outbox"],
                    is_mariadb=self.mariadb,
                    enable_logging=False,
                )
                log.info("following the binlog of %s for gman_outbox rows", self.database)
                backoff.reset()
                for _event in self.stream:
                    self.woken.set()
                    if self.stopping.is_set():
                        break
            except Exception as exc:
                if self.stopping.is_set():
                    break
                delay = backoff.next_delay()
                log.warning("binlog of %s: %s; polling meanwhile, following again in %.1f s",
                            self.database, exc, delay)
                self.woken.set()  # rows may have come while we were not looking
                self.stopping.wait(delay)
            finally:
                if self.stream is not None:
                    try:
                        self.stream.close()
                    except Exception:
                        pass
                    self.stream = None


def open_source(dsn: str, schema: str = "gearsql", source: str = "auto") -> Source:
    """The :class:`Source` a ``--dsn`` names: ``postgresql://...`` (``source`` auto or listen:
    LISTEN; poll), ``mysql://...`` or ``mariadb://...`` (auto: the binlog where it can be
    followed; binlog; poll), ``sqlite:///path/app.db`` (poll). Raises ValueError."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: use one of {', '.join(SOURCES)}")
    scheme = urlsplit(dsn).scheme
    if scheme in ("postgresql", "postgres"):
        if source == "binlog":
            raise ValueError("--source binlog is for MySQL/MariaDB; PostgreSQL listens or polls")
        return PostgresSource(dsn, schema, "poll" if source == "poll" else "listen")
    if scheme in ("mysql", "mariadb"):
        if source == "listen":
            raise ValueError("--source listen is for PostgreSQL; MySQL follows the binlog or polls")
        return MySQLSource(dsn, source)
    if scheme in ("sqlite", "sqlite3"):
        if source not in ("auto", "poll"):
            raise ValueError(f"--source {source}: an SQLite relay can only poll")
        path = dsn.split("://", 1)[1].split("?", 1)[0]
        if path.startswith("//"):
            path = path[1:]
        if not path:
            raise ValueError("an SQLite DSN needs a path: sqlite:///path/to/app.db")
        return SQLiteSource(path)
    raise ValueError(
        f"unknown database {dsn!r}: use postgresql://..., mysql://... or sqlite:///path"
    )


def default_unique_prefix(identity: str) -> str:
    """``outbox:<crc32 of the database's identity>:``: the same for every relay of one outbox,
    different for outboxes that share a job server."""
    return f"outbox:{zlib.crc32(identity.encode('utf-8')):08x}:"


class Relay:
    """Drains one :class:`Source` into the job servers until :meth:`stop` (or ``stop`` set).

    ``batch`` bounds how many rows are claimed, held in memory and in flight at once;
    ``poll_interval`` is the longest a committed row waits when no wake-up comes;
    ``unique_prefix`` (default :func:`default_unique_prefix`) makes the unique of rows that
    have none; ``submit_timeout`` bounds the wait for each JOB_CREATED.
    """

    def __init__(
        self,
        source: Source,
        servers: ServersArg = None,
        *,
        client: AsyncClient | None = None,
        batch: int = 500,
        poll_interval: float = 0.5,
        unique_prefix: str | None = None,
        submit_timeout: float = 30.0,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.source = source
        self.client = client if client is not None else AsyncClient(servers, exceptions=False)
        self._own_client = client is None
        self.batch = batch
        self.poll_interval = poll_interval
        self.unique_prefix = unique_prefix
        self.submit_timeout = submit_timeout
        self.stopping = asyncio.Event()
        #: Rows submitted and deleted since the start.
        self.submitted = 0
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "gearsql-relay-db")
        self._connected = False
        self._db_backoff = Backoff(0.2, 10.0)
        self._server_backoff = Backoff(0.2, 10.0)
        self._server_down = False

    def stop(self) -> None:
        self.stopping.set()

    async def _db(self, function: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def run(self) -> None:
        """Run until stopped; database and job server failures are logged and retried."""
        extras: list[asyncio.Task[None]] = []
        try:
            while not self.stopping.is_set():
                if not self._connected:
                    if not await self._connect():
                        continue
                    if not extras:
                        for make in await self._db(
                            self.source.extra_tasks, self.client, self.stopping
                        ):
                            extras.append(asyncio.create_task(make()))
                try:
                    busy = await self._round()
                except GearmanError:
                    raise  # _round handles these; never reached
                except Exception as exc:  # the database connection broke
                    delay = self._db_backoff.next_delay()
                    log.warning("%s: %s; reconnecting in %.1f s", self.source.describe(),
                                _reason(exc), delay)
                    self._connected = False
                    await self._db(self.source.close)
                    await self._sleep(delay)
                    continue
                if not busy and not self.stopping.is_set():
                    await self._db(self.source.wait, self.poll_interval)
        finally:
            self.stopping.set()
            if extras:
                await asyncio.gather(*extras, return_exceptions=True)
            shutdown = getattr(self.source, "shutdown", self.source.close)
            await self._db(shutdown)
            self._executor.shutdown(wait=True)
            if self._own_client:
                await self.client.close()
            log.info("relay for %s stopped after %d rows", self.source.describe(),
                     self.submitted)

    async def _connect(self) -> bool:
        try:
            await self._db(self.source.open)
        except ValueError:
            raise  # a configuration error: retrying will not help
        except Exception as exc:
            delay = self._db_backoff.next_delay()
            log.warning("%s: cannot connect: %s; retrying in %.1f s", self.source.describe(),
                        _reason(exc), delay)
            await self._db(self.source.close)
            await self._sleep(delay)
            return False
        self._connected = True
        self._db_backoff.reset()
        if self.unique_prefix is None:
            self.unique_prefix = default_unique_prefix(self.source.identity())
        log.log(
            NOTICE, "relaying %s to %s (%s)", self.source.describe(), ",".join(self.client.servers),
            "woken by " + self.source.wake if self.source.wake != "poll"
            else f"polled every {self.poll_interval:g} s",
        )
        return True

    def _unique(self, row: OutboxRow) -> bytes:
        if row.unique:
            return row.unique
        return f"{self.unique_prefix}{row.id}".encode()[:_MAX_UNIQUE]

    async def _round(self) -> bool:
        """Claim, submit and finish one batch; True when it was full (more may wait)."""
        rows: list[OutboxRow] = await self._db(self.source.claim, self.batch)
        if not rows:
            return False
        outcomes = await asyncio.gather(
            *(self.client.submit_background(
                row.function, row.workload, unique=self._unique(row),
                priority=_PRIORITIES.get(row.priority, Priority.NORMAL),
                timeout=self.submit_timeout,
            ) for row in rows),
            return_exceptions=True,
        )
        done = [row.id for row, outcome in zip(rows, outcomes, strict=True)
                if not isinstance(outcome, BaseException)]
        failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        for outcome in failed:
            if not isinstance(outcome, (GearmanError, asyncio.TimeoutError)):
                await self._db(self.source.finish, done)
                raise outcome
        await self._db(self.source.finish, done)
        self.submitted += len(done)
        if done:
            log.info("submitted %d row(s) of %s, ids %d-%d", len(done), self.source.describe(),
                     min(done), max(done))
        if failed:
            delay = self._server_backoff.next_delay()
            if not self._server_down:
                log.warning("%s: cannot submit %d row(s): %s; they wait in the outbox, "
                            "retrying with backoff", self.source.describe(), len(failed),
                            failed[0])
            self._server_down = True
            await self._sleep(delay)
            return False
        if self._server_down:
            log.log(NOTICE, "%s: the job server takes jobs again", self.source.describe())
            self._server_down = False
        self._server_backoff.reset()
        return len(rows) == self.batch


def _reason(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


async def run_relays(
    dsns: Sequence[str],
    servers: ServersArg = None,
    *,
    stop: asyncio.Event,
    schema: str = "gearsql",
    source: str = "auto",
    **options: Any,
) -> None:
    """Run one :class:`Relay` per DSN until ``stop`` is set (the CLI's and the server's
    entry point). Raises ValueError for a DSN or option that cannot work."""
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
        await asyncio.gather(*tasks, return_exceptions=True)
