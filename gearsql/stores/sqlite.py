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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gearsql.stores.base import (
    DeadLetter,
    RememberedUnique,
    StoredJob,
    StoredPolicy,
    StoredSchedule,
    StoredWindow,
    StoreError,
    check_identifier,
)
from gearsql.stores.threaded import ThreadedStore

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "default_sqlite_path"]

#: Version of gearsql's own additions to the table layout (kept in ``gearsql_schema``).
SCHEMA_VERSION = 3


def default_sqlite_path() -> Path:
    """Where ``gearsql server`` keeps its queue when not told otherwise:
    ``$XDG_STATE_HOME/gearsql/queue.sqlite3`` (``~/.local/state/gearsql/queue.sqlite3``)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(state) / "gearsql" / "queue.sqlite3"


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

    def _connection(self) -> sqlite3.Connection:
        self._check_usable()
        assert self._handle is not None  # open, so connected: SQLite never loses it
        return self._handle

    async def load(self) -> list[StoredJob]:
        return await self._run(self._load)

    def _load(self) -> list[StoredJob]:
        conn = self._connection()
        try:
            rows = conn.execute(
                "SELECT unique_key, function_name, priority, data, when_to_run, "
                f"gearsql_retries, gearsql_error FROM {self.table} ORDER BY rowid"
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the SQLite queue: {exc}") from exc
        return [
            StoredJob(
                _as_bytes(unique),
                _as_bytes(function),
                int(priority or 0),
                _as_bytes(data),
                int(when or 0),
                int(retries or 0),
                _as_bytes(error),
            )
            for unique, function, priority, data, when, retries, error in rows
        ]

    async def load_dead(self) -> list[DeadLetter]:
        return await self._run(self._load_dead)

    def _load_dead(self) -> list[DeadLetter]:
        conn = self._connection()
        try:
            rows = conn.execute(
                "SELECT id, function_name, unique_key, priority, data, retries, error, died "
                "FROM gearsql_dead WHERE queue_table = ? ORDER BY id",
                (self.table,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the SQLite dead letters: {exc}") from exc
        return [
            DeadLetter(
                int(id_),
                _as_bytes(function),
                _as_bytes(unique),
                int(priority or 0),
                _as_bytes(data),
                int(retries or 0),
                _as_bytes(error),
                float(died or 0),
            )
            for id_, function, unique, priority, data, retries, error, died in rows
        ]

    async def load_policies(self) -> list[StoredPolicy]:
        return await self._run(self._load_policies)

    def _load_policies(self) -> list[StoredPolicy]:
        conn = self._connection()
        try:
            rows = conn.execute(
                "SELECT function_name, attempts, base, max_delay FROM gearsql_retry_policy "
                "WHERE queue_table = ?",
                (self.table,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the SQLite retry policies: {exc}") from exc
        return [
            StoredPolicy(_as_bytes(function), int(attempts), float(base), float(limit))
            for function, attempts, base, limit in rows
        ]

    async def load_remembered(self) -> list[RememberedUnique]:
        return await self._run(self._load_remembered)

    def _load_remembered(self) -> list[RememberedUnique]:
        conn = self._connection()
        try:
            rows = conn.execute(
                "SELECT function_name, unique_key, expires, result FROM gearsql_unique "
                "WHERE queue_table = ?",
                (self.table,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the SQLite remembered uniques: {exc}") from exc
        return [
            RememberedUnique(
                _as_bytes(function), _as_bytes(unique), float(expires), _as_bytes(result)
            )
            for function, unique, expires, result in rows
        ]

    async def load_windows(self) -> list[StoredWindow]:
        return await self._run(self._load_windows)

    def _load_windows(self) -> list[StoredWindow]:
        conn = self._connection()
        try:
            rows = conn.execute(
                "SELECT function_name, seconds FROM gearsql_unique_window WHERE queue_table = ?",
                (self.table,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the SQLite unique windows: {exc}") from exc
        return [StoredWindow(_as_bytes(function), float(seconds)) for function, seconds in rows]

    async def load_schedules(self) -> list[StoredSchedule]:
        return await self._run(self._load_schedules)

    def _load_schedules(self) -> list[StoredSchedule]:
        conn = self._connection()
        try:
            rows = conn.execute(
                "SELECT name, function_name, spec, data, due FROM gearsql_schedule "
                "WHERE queue_table = ? ORDER BY name",
                (self.table,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the SQLite schedules: {exc}") from exc
        return [
            StoredSchedule(
                _as_bytes(name),
                _as_bytes(function),
                _as_bytes(spec).decode(),
                _as_bytes(data),
                int(due or 0),
            )
            for name, function, spec, data, due in rows
        ]

    async def commit(
        self,
        add: Sequence[StoredJob],
        remove: Sequence[StoredJob],
        *,
        dead_add: Sequence[DeadLetter] = (),
        dead_remove: Sequence[int] = (),
        policies: Sequence[StoredPolicy] = (),
        policies_removed: Sequence[bytes] = (),
        remembered: Sequence[RememberedUnique] = (),
        remembered_expired: float = 0.0,
        windows: Sequence[StoredWindow] = (),
        windows_removed: Sequence[bytes] = (),
        schedules: Sequence[StoredSchedule] = (),
        schedules_removed: Sequence[bytes] = (),
    ) -> None:
        await self._run(
            self._commit,
            add,
            remove,
            dead_add,
            dead_remove,
            policies,
            policies_removed,
            remembered,
            remembered_expired,
            windows,
            windows_removed,
            schedules,
            schedules_removed,
        )

    def _commit(
        self,
        add: Sequence[StoredJob],
        remove: Sequence[StoredJob],
        dead_add: Sequence[DeadLetter] = (),
        dead_remove: Sequence[int] = (),
        policies: Sequence[StoredPolicy] = (),
        policies_removed: Sequence[bytes] = (),
        remembered: Sequence[RememberedUnique] = (),
        remembered_expired: float = 0.0,
        windows: Sequence[StoredWindow] = (),
        windows_removed: Sequence[bytes] = (),
        schedules: Sequence[StoredSchedule] = (),
        schedules_removed: Sequence[bytes] = (),
    ) -> None:
        conn = self._connection()
        table = self.table
        try:
            conn.execute("BEGIN IMMEDIATE")
            if add:
                conn.executemany(
                    f"INSERT OR REPLACE INTO {table} "
                    "(unique_key, function_name, priority, data, when_to_run, gearsql_retries,"
                    " gearsql_error) VALUES (?, ?, ?, ?, ?, ?, ?)",
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
                        for job in add
                    ],
                )
            if remove:
                conn.executemany(
                    f"DELETE FROM {table} WHERE unique_key = ? AND function_name = ?",
                    [(_sql_value(job.unique), _sql_value(job.function)) for job in remove],
                )
            if dead_add:
                conn.executemany(
                    "INSERT OR REPLACE INTO gearsql_dead (queue_table, id, function_name, "
                    "unique_key, priority, data, retries, error, died) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(table, *dead) for dead in dead_add],
                )
            if dead_remove:
                conn.executemany(
                    "DELETE FROM gearsql_dead WHERE queue_table = ? AND id = ?",
                    [(table, id_) for id_ in dead_remove],
                )
            if policies:
                conn.executemany(
                    "INSERT OR REPLACE INTO gearsql_retry_policy (queue_table, function_name, "
                    "attempts, base, max_delay) VALUES (?, ?, ?, ?, ?)",
                    [(table, *policy) for policy in policies],
                )
            if policies_removed:
                conn.executemany(
                    "DELETE FROM gearsql_retry_policy WHERE queue_table = ? AND function_name = ?",
                    [(table, name) for name in policies_removed],
                )
            if remembered_expired:
                conn.execute(
                    "DELETE FROM gearsql_unique WHERE queue_table = ? AND expires <= ?",
                    (table, remembered_expired),
                )
            if remembered:
                conn.executemany(
                    "INSERT OR REPLACE INTO gearsql_unique (queue_table, function_name, "
                    "unique_key, expires, result) VALUES (?, ?, ?, ?, ?)",
                    [(table, *entry) for entry in remembered],
                )
            if windows:
                conn.executemany(
                    "INSERT OR REPLACE INTO gearsql_unique_window (queue_table, function_name, "
                    "seconds) VALUES (?, ?, ?)",
                    [(table, *window) for window in windows],
                )
            if windows_removed:
                conn.executemany(
                    "DELETE FROM gearsql_unique_window WHERE queue_table = ? AND function_name = ?",
                    [(table, name) for name in windows_removed],
                )
            if schedules:
                conn.executemany(
                    "INSERT OR REPLACE INTO gearsql_schedule (queue_table, name, function_name, "
                    "spec, data, due) VALUES (?, ?, ?, ?, ?, ?)",
                    [(table, *schedule) for schedule in schedules],
                )
            if schedules_removed:
                conn.executemany(
                    "DELETE FROM gearsql_schedule WHERE queue_table = ? AND name = ?",
                    [(table, name) for name in schedules_removed],
                )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise StoreError(f"SQLite commit failed: {exc}") from exc

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self._unlock()


def _as_bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)
