"""What an administrator wants to know of one database's pipeline without reading bytea: the
backlog of the outbox (rows, the oldest one's age), its dead letters (how many, the newest
reasons) and the relays' last contact (``gman_relay_contact``), read with one short
transaction that takes no lock. ``gearsql relay status`` prints
it; the databases offer the same as ``gman_pipeline()`` (PostgreSQL) and the view
``gman_pipeline`` (MariaDB, SQLite)."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from gearsql._mysqlurl import MYSQL_SCHEMES
from gearsql._sqlcommon import check_identifier
from gearsql._sqliteurl import SQLITE_SCHEMES, sqlite_path
from gearsql.relay.source import OutboxMissing

__all__ = ["PipelineStatus", "pipeline_status"]

#: How many of the newest dead letters' reasons are shown.
REASONS = 5


@dataclass(frozen=True)
class PipelineStatus:
    """The state of one outbox. ``oldest_age`` is in seconds (None when the outbox is empty);
    ``dead_table`` is False for an install older than the dead letters (run the install
    again); ``last_dead_reasons`` are ``"<id>: <reason>"``, newest first."""

    database: str
    backlog: int
    oldest_age: float | None
    dead: int = 0
    last_dead_at: str | None = None
    last_dead_reasons: list[str] = field(default_factory=list)
    dead_table: bool = True
    #: ``(relay, last_contact, seconds ago, servers)`` of each relay that recorded its
    #: contact, the latest first; None for an install without ``gman_relay_contact``.
    contacts: list[tuple[str, str, float, str]] | None = None

    def lines(self) -> list[str]:
        """The status as lines of text for a terminal."""
        age = "" if self.oldest_age is None else f", the oldest {self.oldest_age:.1f} s old"
        lines = [self.database, f"  backlog: {self.backlog} row(s){age}"]
        if not self.dead_table:
            lines.append("  dead letters: no gman_outbox_dead table (run the install again)")
        else:
            last = f", the newest at {self.last_dead_at}" if self.last_dead_at else ""
            lines.append(f"  dead letters: {self.dead}{last}")
            lines += [f"    {reason}" for reason in self.last_dead_reasons]
        if self.contacts is None:
            lines.append("  relay contact: no gman_relay_contact table (run the install again)")
        elif not self.contacts:
            lines.append("  relay contact: none recorded")
        else:
            relay, at, ago, servers = self.contacts[0]
            lines.append(
                f"  relay contact: the last at {at} ({ago:.1f} s ago) by {relay}, to {servers}"
            )
            lines += [
                f"    {relay} at {at} ({ago:.1f} s ago), to {servers}"
                for relay, at, ago, servers in self.contacts[1:]
            ]
        return lines


#: How many relays' contacts are shown.
CONTACTS = 5


def _contacts(rows: list[Any]) -> list[tuple[str, str, float, str]]:
    return [(str(r), str(at), max(0.0, float(ago)), str(s)) for r, at, ago, s in rows]


def pipeline_status(dsn: str, schema: str = "gearsql") -> PipelineStatus:
    """Read the status of the outbox at ``dsn`` (as ``gearsql relay --dsn`` takes it).

    Raises ValueError for a DSN that names no database gearsql knows, :class:`OutboxMissing`
    (a ValueError) when there is no outbox, and the driver's error when the database cannot be
    reached."""
    scheme = urlsplit(dsn).scheme
    if scheme in ("postgresql", "postgres"):
        return _postgres(dsn, schema)
    if scheme in MYSQL_SCHEMES:
        return _mysql(dsn)
    if scheme in SQLITE_SCHEMES:
        return _sqlite(sqlite_path(dsn))
    raise ValueError(
        f"unknown database {dsn!r}: use postgresql://..., mysql://..., "
        "sqlite:///relative/path.db or sqlite:////absolute/path.db"
    )


def _reasons(rows: list[Any]) -> list[str]:
    return [f"{id_}: {reason}" for id_, reason in rows]


def _postgres(dsn: str, schema: str) -> PipelineStatus:
    import psycopg

    check_identifier(schema, "schema")
    outbox, dead = f'"{schema}".gman_outbox', f'"{schema}".gman_outbox_dead'
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        database, has_outbox, has_dead = _first(
            conn.execute(
                "SELECT current_database(), to_regclass(%s) IS NOT NULL, "
                "to_regclass(%s) IS NOT NULL",
                (outbox, dead),
            )
        )
        if not has_outbox:
            raise OutboxMissing(f"{outbox} does not exist in database {database!r}")
        backlog, age = _first(
            conn.execute(
                f"SELECT count(*), extract(epoch FROM now() - min(created_at)) FROM {outbox}"
            )
        )
        name = f"postgresql database {database!r}, {outbox}"
        if not has_dead:
            return PipelineStatus(name, int(backlog), _seconds(age), dead_table=False)
        count, last = _first(conn.execute(f"SELECT count(*), max(dead_at)::text FROM {dead}"))
        reasons = conn.execute(
            f"SELECT id, reason FROM {dead} ORDER BY dead_at DESC, id DESC LIMIT %s", (REASONS,)
        ).fetchall()
        contact = f'"{schema}".gman_relay_contact'
        contacts = None
        if _first(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (contact,)))[0]:
            contacts = _contacts(
                conn.execute(
                    "SELECT relay, last_contact::text, "
                    f"extract(epoch FROM now() - last_contact), servers FROM {contact} "
                    "ORDER BY last_contact DESC LIMIT %s",
                    (CONTACTS,),
                ).fetchall()
            )
    return PipelineStatus(
        name, int(backlog), _seconds(age), int(count), last, _reasons(reasons), True, contacts
    )


def _first(cursor: Any) -> Any:
    row = cursor.fetchone()
    assert row is not None
    return row


def _seconds(value: Any) -> float | None:
    return None if value is None else max(0.0, float(value))


def _mysql(dsn: str) -> PipelineStatus:
    import mysql.connector

    from gearsql._mysqlurl import connect_config

    config = connect_config(dsn)
    conn: Any = mysql.connector.connect(**config)
    try:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
            "AND table_name IN ('gman_outbox', 'gman_outbox_dead', 'gman_relay_contact')"
        )
        tables = {str(row[0]) for row in cursor.fetchall()}
        name = f"mysql {config['host']}:{config['port']}/{config['database']}"
        if "gman_outbox" not in tables:
            raise OutboxMissing(f"gman_outbox does not exist in database {config['database']!r}")
        cursor.execute(
            "SELECT COUNT(*), TIMESTAMPDIFF(MICROSECOND, MIN(created_at), NOW(6)) "
            "/ 1000000 FROM gman_outbox"
        )
        backlog, age = cursor.fetchone()
        if "gman_outbox_dead" not in tables:
            return PipelineStatus(name, int(backlog), _seconds(age), dead_table=False)
        cursor.execute("SELECT COUNT(*), CAST(MAX(dead_at) AS CHAR) FROM gman_outbox_dead")
        count, last = cursor.fetchone()
        cursor.execute(
            "SELECT id, reason FROM gman_outbox_dead ORDER BY dead_at DESC, id DESC LIMIT %s",
            (REASONS,),
        )
        reasons = cursor.fetchall()
        contacts = None
        if "gman_relay_contact" in tables:
            cursor.execute(
                "SELECT relay, CAST(last_contact AS CHAR), "
                "TIMESTAMPDIFF(MICROSECOND, last_contact, NOW(6)) / 1000000, servers "
                "FROM gman_relay_contact ORDER BY last_contact DESC LIMIT %s",
                (CONTACTS,),
            )
            contacts = _contacts(cursor.fetchall())
        cursor.close()
    finally:
        conn.close()
    return PipelineStatus(
        name, int(backlog), _seconds(age), int(count), last, _reasons(reasons), True, contacts
    )


def _sqlite(path: str) -> PipelineStatus:
    if not os.path.exists(path):
        raise OutboxMissing(f"no SQLite database at {os.path.abspath(path)}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name IN ('gman_outbox', 'gman_outbox_dead', 'gman_relay_contact')"
            )
        }
        name = f"sqlite {os.path.abspath(path)}"
        if "gman_outbox" not in tables:
            raise OutboxMissing(f"{os.path.abspath(path)} has no gman_outbox table")
        backlog, age = conn.execute(
            "SELECT count(*), (julianday('now') - julianday(min(created_at))) * 86400.0 "
            "FROM gman_outbox"
        ).fetchone()
        if "gman_outbox_dead" not in tables:
            return PipelineStatus(name, int(backlog), _seconds(age), dead_table=False)
        count, last = conn.execute("SELECT count(*), max(dead_at) FROM gman_outbox_dead").fetchone()
        reasons = conn.execute(
            "SELECT id, reason FROM gman_outbox_dead ORDER BY dead_at DESC, id DESC LIMIT ?",
            (REASONS,),
        ).fetchall()
        contacts = []  # the relay makes the table at its first batch
        if "gman_relay_contact" in tables:
            contacts = _contacts(
                conn.execute(
                    "SELECT relay, last_contact, "
                    "(julianday('now') - julianday(last_contact)) * 86400.0, servers "
                    "FROM gman_relay_contact ORDER BY last_contact DESC LIMIT ?",
                    (CONTACTS,),
                ).fetchall()
            )
    finally:
        conn.close()
    return PipelineStatus(
        name, int(backlog), _seconds(age), int(count), last, _reasons(reasons), True, contacts
    )
