"""The outbox of an SQLite file. SQLite has no notifications; the relay watches the file's change
counter (``PRAGMA data_version``, a cheap read that takes no lock) and claims only after a
commit by another connection, besides polling."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Literal

from gearsql._sqlcommon import DEAD_COLUMNS
from gearsql._sqliteurl import sqlite_url
from gearsql.relay._thread import watch_in_thread
from gearsql.relay.batch import OutboxRow, as_bytes, inline_bytes, rows_from_claim
from gearsql.relay.origin import check_sqlite
from gearsql.relay.source import (
    SENT_KEEP_IDS,
    SENT_KEEP_SECONDS,
    SQLITE_OUTBOX_ORIGIN,
    OutboxMissing,
    Sent,
    Source,
    close_quietly,
    connect_file,
)
from gearsql.sqlite import RELAY_CONTACT_TABLE, create_pipeline_view

_DEAD = ", ".join(DEAD_COLUMNS)

__all__ = ["CONTACT_TABLE", "SENT_TABLE", "SQLiteSource"]

#: The rows the relay submitted, with the job server's handle (made by the relay, pruned to
#: SENT_KEEP_SECONDS and SENT_KEEP_IDS), and each relay's last contact.
SENT_TABLE = (
    "CREATE TABLE IF NOT EXISTS gman_outbox_sent ("
    " id INTEGER PRIMARY KEY, function BLOB NOT NULL, handle TEXT NOT NULL,"
    " server TEXT NOT NULL,"
    " sent_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
)
SENT_INDEX = "CREATE INDEX IF NOT EXISTS gman_outbox_sent_at ON gman_outbox_sent (sent_at)"
CONTACT_TABLE = RELAY_CONTACT_TABLE

#: Seconds between two looks at the change counter.
CHANGE_CHECK = 0.02


class SQLiteSource(Source):
    """``gman_outbox`` in an SQLite file. A claim holds SQLite's write lock (``BEGIN
    IMMEDIATE``) while its batch is submitted, which keeps two relays on one file apart; writers
    of the application wait for it (milliseconds, or one row while the job server is down) when
    they take the write lock first: a gman_* call after a read cannot wait and fails at once
    (``BEGIN IMMEDIATE``, gearsql/sqlite.py)."""

    wake: Literal["change counter", "poll"] = "change counter"

    def __init__(
        self, path: str, wake: Literal["change counter", "poll"] = "change counter"
    ) -> None:
        if wake not in ("change counter", "poll"):
            raise ValueError(f"an SQLite relay watches its change counter or polls, not {wake!r}")
        self.path = os.path.abspath(path)
        self.wake = wake
        self.conn: sqlite3.Connection | None = None
        #: Whether gman_outbox_sent and gman_relay_contact exist (made at the first use after
        #: a connect; a read-only file lacks them and the relay records nothing there).
        self._extras: bool | None = None
        self._contact: tuple[str, str] | None = None

    def _connect(self) -> sqlite3.Connection:
        return connect_file(self.path)

    def open(self) -> None:
        self.close()
        self.conn = self._connect()
        found = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'gman_outbox'"
        ).fetchone()
        if found is None:
            raise OutboxMissing(f"{self.path} has no gman_outbox table: {SQLITE_OUTBOX_ORIGIN}")
        from gearsql.bridges import load_library

        try:  # the relay makes it: a file made before gearsql had dead letters lacks it
            self.conn.execute(load_library().SQLITE_DEAD_TABLE)
            create_pipeline_view(self.conn)
            self.keeps_dead = True
        except sqlite3.OperationalError:  # a read-only file or directory
            self.keeps_dead = (
                self.conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'gman_outbox_dead'"
                ).fetchone()
                is not None
            )
        check_sqlite(self.conn, sqlite_url(self.path))  # a copied file stops here

    def identity(self) -> str:
        return f"sqlite:{os.path.realpath(self.path)}"

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def claim(self, limit: int, max_bytes: int, skip: Collection[bytes] = ()) -> list[OutboxRow]:
        conn = self.conn
        assert conn is not None
        # Look without a lock first: an empty outbox must not block the application.
        if conn.execute("SELECT 1 FROM gman_outbox LIMIT 1").fetchone() is None:
            return []
        conn.execute("BEGIN IMMEDIATE")
        try:
            # A workload too large to come inline is read only once its row is within the
            # budget.
            where = f"WHERE function NOT IN ({','.join('?' * len(skip))}) " if skip else ""
            claimed = conn.execute(
                "SELECT id, function, unique_key, "
                "CASE WHEN length(workload) <= ? THEN workload END, priority, length(workload) "
                f"FROM gman_outbox {where}ORDER BY id LIMIT ?",
                (inline_bytes(limit, max_bytes), *map(bytes, skip), limit),
            ).fetchall()
            if not claimed:
                conn.execute("ROLLBACK")
                return []
            return rows_from_claim(claimed, max_bytes, self._workloads)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _workloads(self, ids: list[int]) -> dict[int, bytes]:
        conn = self.conn
        assert conn is not None
        workloads: dict[int, bytes] = {}
        for start in range(0, len(ids), 500):  # within SQLite's limit of parameters
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT id, workload FROM gman_outbox WHERE id IN ({marks})"
            workloads.update(conn.execute(query, chunk).fetchall())
        return workloads

    def _has_extras(self) -> bool:
        conn = self.conn
        assert conn is not None
        if self._extras is None:
            try:
                for statement in (SENT_TABLE, SENT_INDEX, CONTACT_TABLE):
                    conn.execute(statement)
                self._extras = True
            except sqlite3.OperationalError:  # a read-only file or directory
                self._extras = False
        return self._extras

    def finish(
        self, ids: list[int], dead: Sequence[tuple[int, str]] = (), sent: Sequence[Sent] = ()
    ) -> None:
        conn = self.conn
        assert conn is not None
        if self._contact is not None and conn.in_transaction and self._has_extras():
            relay, servers = self._contact
            self._contact = None
            conn.execute(
                "INSERT INTO gman_relay_contact (relay, last_contact, servers) "
                "VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ?) ON CONFLICT (relay) "
                "DO UPDATE SET last_contact = excluded.last_contact, servers = excluded.servers",
                (relay, servers),
            )
        if sent and self._has_extras():
            for start in range(0, len(sent), 200):
                part = sent[start : start + 200]
                conn.execute(
                    "INSERT OR IGNORE INTO gman_outbox_sent (id, function, handle, server) VALUES "
                    + ",".join(["(?, ?, ?, ?)"] * len(part)),
                    [value for row in part for value in row],
                )
            conn.execute(
                "DELETE FROM gman_outbox_sent WHERE id <= ?", (sent[-1].id - SENT_KEEP_IDS,)
            )
            conn.execute(
                "DELETE FROM gman_outbox_sent WHERE sent_at < "
                "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?)",
                (f"-{SENT_KEEP_SECONDS} seconds",),
            )
        for id_, reason in dead:
            if self.keeps_dead:
                conn.execute(
                    f"INSERT OR IGNORE INTO gman_outbox_dead ({_DEAD}, reason)"
                    f" SELECT {_DEAD}, ? FROM gman_outbox WHERE id = ?",
                    (reason, id_),
                )
            conn.execute("DELETE FROM gman_outbox WHERE id = ?", (id_,))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            conn.execute(
                f"DELETE FROM gman_outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk
            )
        if conn.in_transaction:
            conn.execute("COMMIT")

    def contact(self, relay: str, servers: str) -> None:
        # Kept for the next finish(): a write of its own would take the file's write lock
        # while the outbox is idle, and an application's transaction that read first and
        # writes then gets "database is locked". So SQLite's last contact is the last batch.
        self._contact = (relay, servers)

    def function_servers(self) -> dict[bytes, str]:
        conn = self.conn
        assert conn is not None
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'gman_function_servers'"
        ).fetchone()
        if found is None:
            return {}
        rows = conn.execute("SELECT function, servers FROM gman_function_servers").fetchall()
        return {as_bytes(function): servers for function, servers in rows}

    def close(self) -> None:
        self._extras = None
        conn, self.conn = self.conn, None
        close_quietly(conn)

    async def watch(self, wake: Callable[[], None]) -> None:
        if self.wake == "poll":
            await super().watch(wake)
            return
        await watch_in_thread(self._follow, wake, "gearsql-relay-sqlite")

    def _follow(self, wake: Callable[[], None], stopping: threading.Event) -> None:
        conn = self._connect()
        try:
            last = None
            while not stopping.is_set():
                (version,) = conn.execute("PRAGMA data_version").fetchone()
                if version != last:
                    last = version
                    wake()
                stopping.wait(CHANGE_CHECK)
        finally:
            conn.close()
