"""The choice of a relay's :class:`~gearsql.relay.source.Source` from a ``--dsn`` and
``--source``."""

from __future__ import annotations

from urllib.parse import urlsplit

from gearsql._mysqlurl import MYSQL_SCHEMES
from gearsql._sqliteurl import SQLITE_SCHEMES, sqlite_path
from gearsql.relay._mysql import MySQLSource
from gearsql.relay._postgres import PostgresSource
from gearsql.relay._sqlite import SQLiteSource
from gearsql.relay.source import SOURCES, Source

__all__ = ["open_source"]


def open_source(dsn: str, schema: str = "gearsql", source: str = "auto") -> Source:
    """The :class:`Source` a ``--dsn`` names: ``postgresql://...`` (``source`` auto or listen:
    LISTEN; poll), ``mysql://...`` or ``mariadb://...`` (auto: the binlog where it can be
    followed; binlog; poll), ``sqlite:///app.db`` (relative to the current directory) or
    ``sqlite:////abs/app.db`` (auto: its change counter; poll).
    Nothing is connected yet. Raises ValueError."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: use one of {', '.join(SOURCES)}")
    scheme = urlsplit(dsn).scheme
    if scheme in ("postgresql", "postgres"):
        if source == "binlog":
            raise ValueError("--source binlog is for MySQL/MariaDB; PostgreSQL listens or polls")
        return PostgresSource(dsn, schema, "poll" if source == "poll" else "listen")
    if scheme in MYSQL_SCHEMES:
        if source == "listen":
            raise ValueError("--source listen is for PostgreSQL; MySQL follows the binlog or polls")
        return MySQLSource(
            dsn, "poll" if source == "poll" else "binlog" if source == "binlog" else "auto"
        )
    if scheme in SQLITE_SCHEMES:
        if source not in ("auto", "poll"):
            raise ValueError(f"--source {source}: an SQLite relay watches its file or polls")
        path = sqlite_path(dsn)
        return SQLiteSource(path, "poll" if source == "poll" else "change counter")
    raise ValueError(
        f"unknown database {dsn!r}: use postgresql://..., mysql://..., "
        "sqlite:///relative/path.db or sqlite:////absolute/path.db"
    )
