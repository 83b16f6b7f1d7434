"""The SQLite store, gearsql's default: background jobs in one file, committed in batches.

The table is C gearmand's ``libsqlite3`` queue table (unique_key, function_name, priority, data,
when_to_run; primary key unique_key + function_name), so a queue gearmand left behind can be
taken over by pointing ``--store`` at its file. All database work runs on one thread of its own;
the event loop only waits for the result. The file is opened in WAL mode with
``synchronous=FULL``: a commit that returned survives a power cut, not only a crash.

The version of gearsql's own additions to the layout is kept per table in ``gearsql_schema``
(name, version), as in the other stores; a table recorded with a newer version than this
gearsql knows is refused. Version 2 adds ``gearsql_retries`` and ``gearsql_error`` to the queue
table (a job's failed runs and last error, for retries with backoff) and two tables shared by
every queue table in the file, keyed by its name: ``gearsql_dead`` (dead letters) and
``gearsql_retry_policy`` (retry policies set per function). Version 3 adds two more, for the
unique window: ``gearsql_unique`` (remembered uniques with their expiry and kept result) and
``gearsql_unique_window`` (windows set per function), and ``gearsql_schedule`` (recurring
schedules with their next tick). Keys there are BLOBs, byte-exact.

One server per file: a lock file beside it (``<file>.lock``, holding the server's pid) keeps a
second one out.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gearsql._sqliteurl import default_sqlite_path
from gearsql.stores.base import (
    JOB_COLUMNS,
    Changes,
    SideTable,
    StoredJob,
    StoreError,
    check_identifier,
    job_from_row,
    side_sql,
    side_writes,
)
from gearsql.stores.threaded import ThreadedStore

T = TypeVar("T")

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "default_sqlite_path"]

#: Version of gearsql's own additions to the table layout (kept in ``gearsql_schema``).
SCHEMA_VERSION = 3


def _sql_value(value: bytes) -> str | bytes:
    """Text where the bytes are UTF-8 (as gearmand writes them), a BLOB otherwise.

    SQLite never finds a BLOB equal to TEXT, so the same bytes must always be bound the same
    way, or a row written one way could not be deleted the other.
    """
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


class SQLiteStore(ThreadedStore[sqlite3.Connection]):
    """Durable jobs in an SQLite file (``--store sqlite:////var/lib/gearsql/queue.sqlite3``)."""

    kind = "SQLite"
    driver_error = sqlite3.Error

    def __init__(
        self,
        path: str | os.PathLike[str],
        table: str = "gearman_queue",
        max_size: int | None = None,
    ):
        self.path = Path(path)
        self.table = check_identifier(table)
        #: Cap on the file's size in bytes; a commit that would grow it further fails, and
        #: the server answers those submissions with QUEUE_ERROR.
        self.max_size = max_size
        self.description = f"sqlite {self.path} (table {self.table})"
        super().__init__()
        self._lock_fd: int | None = None

    # -- everything below the async methods runs on the store's own thread

    def check_directory(self) -> None:
        """Make sure the file's directory exists. Only gearsql's default state directory is
        created (with its parents); the directory of a path the user gave must exist already,
        so that a typo does not silently make directories. Raises StoreError."""
        directory = self.path.parent
        if directory == default_sqlite_path().parent:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create {directory}: {exc.strerror or exc}") from exc
        elif not directory.is_dir():
            what = "is not a directory" if directory.exists() else "does not exist"
            raise StoreError(
                f"cannot open SQLite queue {self.path}: {directory} {what}; create the "
                "directory first, or give another path"
            )

    def _open(self) -> None:
        self.check_directory()
        try:
            self._lock()
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            self._unlock()
            raise StoreError(f"cannot open SQLite queue {self.path}: {exc}") from exc
        conn.text_factory = bytes
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._migrate(conn)
            if self.max_size:
                page_size = conn.execute("PRAGMA page_size").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count = {max(1, self.max_size // page_size)}")
        except sqlite3.Error as exc:
            conn.close()
            self._unlock()
            raise StoreError(f"cannot use SQLite queue {self.path}: {exc}") from exc
        except StoreError:
            conn.close()
            self._unlock()
            raise
        self._handle = conn

    def _lock(self) -> None:
        """One server per queue file: a second one would run every job twice."""
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OSError(f"the queue is in use by another gearsql server (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _migrate(self, conn: sqlite3.Connection) -> None:
        table = self.table
        conn.execute(
            "CREATE TABLE IF NOT EXISTS gearsql_schema (name TEXT PRIMARY KEY, version INTEGER)"
        )
        row = conn.execute("SELECT version FROM gearsql_schema WHERE name = ?", (table,)).fetchone()
        if row is not None and int(row[0] or 0) > SCHEMA_VERSION:
            # A newer gearsql changed the layout in ways this one cannot know.
            raise StoreError(
                f"table {table} in {self.path} has gearsql schema version {int(row[0])};"
                f" this gearsql knows only up to {SCHEMA_VERSION} (upgrade gearsql)"
            )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} ("
            "unique_key TEXT, function_name TEXT, priority INTEGER, data BLOB, "
            "when_to_run INTEGER, PRIMARY KEY (unique_key, function_name))"
        )
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if b"when_to_run" not in columns:
            # Tables from gearmand before 1.1 have no when_to_run column.
            conn.execute(f"ALTER TABLE {table} ADD COLUMN when_to_run INTEGER DEFAULT 0")
        # Version 2: retries and dead letters.
        if b"gearsql_retries" not in columns:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN gearsql_retries INTEGER DEFAULT 0")
        if b"gearsql_error" not in columns:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN gearsql_error BLOB")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS gearsql_dead (queue_table TEXT, id INTEGER, "
            "function_name BLOB, unique_key BLOB, priority INTEGER, data BLOB, "
            "retries INTEGER, error BLOB, died REAL, PRIMARY KEY (queue_table, id))"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS gearsql_retry_policy (queue_table TEXT, "
            "function_name BLOB, attempts INTEGER, base REAL, max_delay REAL, "
            "PRIMARY KEY (queue_table, function_name))"
        )
        # Version 3: uniques that remember (the unique window).
        conn.execute(
            "CREATE TABLE IF NOT EXISTS gearsql_unique (queue_table TEXT, function_name BLOB, "
            "unique_key BLOB, expires REAL, result BLOB, "
            "PRIMARY KEY (queue_table, function_name, unique_key))"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS gearsql_unique_window (queue_table TEXT, "
            "function_name BLOB, seconds REAL, PRIMARY KEY (queue_table, function_name))"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS gearsql_schedule (queue_table TEXT, name BLOB, "
            "function_name BLOB, spec TEXT, data BLOB, due INTEGER, "
            "PRIMARY KEY (queue_table, name))"
        )
        conn.execute(
            "INSERT OR REPLACE INTO gearsql_schema (name, version) VALUES (?, ?)",
            (table, SCHEMA_VERSION),
        )

    def _operate(self, what: str, operation: Callable[[sqlite3.Connection], T]) -> T:
        self._check_usable()
        assert self._handle is not None  # open, so connected: SQLite never loses it
        try:
            return operation(self._handle)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite {what} failed: {exc}") from exc

    def _load(self, conn: sqlite3.Connection) -> list[StoredJob]:
        rows = conn.execute(
            f"SELECT {', '.join(JOB_COLUMNS)} FROM {self.table} ORDER BY rowid"
        ).fetchall()
        return [job_from_row(row) for row in rows]

    def _select(self, conn: sqlite3.Connection, table: SideTable) -> list[Any]:
        order = f" ORDER BY {table.order}" if table.order else ""
        return conn.execute(
            f"SELECT {', '.join(table.columns)} FROM {table.name} WHERE queue_table = ?{order}",
            (self.table,),
        ).fetchall()

    def _commit(self, conn: sqlite3.Connection, changes: Changes) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            if changes.add:
                conn.executemany(
                    f"INSERT OR REPLACE INTO {self.table} ({', '.join(JOB_COLUMNS)})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            _sql_value(job.unique),
                            _sql_value(job.function),
                            job.priority,
                            job.data,
                            job.when,
                            job.retries,
                            job.error or None,
                        )
                        for job in changes.add
                    ],
                )
            if changes.remove:
                conn.executemany(
                    f"DELETE FROM {self.table} WHERE unique_key = ? AND function_name = ?",
                    [(_sql_value(job.unique), _sql_value(job.function)) for job in changes.remove],
                )
            for table, action, params in side_writes(changes, self.table):
                conn.executemany(_side_sql(table, action), params)
            conn.execute("COMMIT")
        except sqlite3.Error:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self._unlock()


def _side_sql(table: SideTable, action: str) -> str:
    """SQLite's statement for one action of :func:`~gearsql.stores.base.side_writes`."""
    return side_sql(table, action, lambda kind: "?", "INSERT OR REPLACE")
