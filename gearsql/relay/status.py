"""What an administrator wants to know of one database's pipeline without reading bytea: the
backlog of the outbox (rows, the oldest one's age) and its dead letters (how many, the newest
reasons), read with one short transaction that takes no lock. ``gearsql relay status`` prints
it; the databases offer the same as ``gman_pipeline()`` (PostgreSQL) and the view
``gman_pipeline`` (MariaDB, SQLite)."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

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
        return lines


def pipeline_status(dsn: str, schema: str = "gearsql") -> PipelineStatus:
    """Read the status of the outbox at ``dsn`` (as ``gearsql relay --dsn`` takes it).

    Raises ValueError for a DSN that names no database gearsql knows, :class:`OutboxMissing`
    (a ValueError) when there is no outbox, and the driver's error when the database cannot be
    reached."""
    scheme = urlsplit(dsn).scheme
    if scheme in ("postgresql", "postgres"):
        return _postgres(dsn, schema)
    if scheme in ("mysql", "mariadb"):
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
    return PipelineStatus(name, int(backlog), _seconds(age), int(count), last, _reasons(reasons))


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
            "AND table_name IN ('gman_outbox', 'gman_outbox_dead')"
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
        cursor.close()
    finally:
        conn.close()
    return PipelineStatus(name, int(backlog), _seconds(age), int(count), last, _reasons(reasons))


def _sqlite(path: str) -> PipelineStatus:
    if not os.path.exists(path):
        raise OutboxMissing(f"no SQLite database at {os.path.abspath(path)}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name IN ('gman_outbox', 'gman_outbox_dead')"
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
    finally:
        conn.close()
    return PipelineStatus(name, int(backlog), _seconds(age), int(count), last, _reasons(reasons))
