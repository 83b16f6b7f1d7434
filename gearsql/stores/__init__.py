"""Durable job stores behind one small interface, and the factory that picks one from a URL.

A store keeps background and epoch jobs so that a restarted server replays them. The server calls
it from the event loop; a store that talks to a database does its blocking work elsewhere (a
thread) so the loop never waits on disk or network.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from gearsql._mysqlurl import MYSQL_SCHEMES
from gearsql._sqliteurl import SQLITE_SCHEMES, default_sqlite_path, sqlite_path, sqlite_url
from gearsql.stores.base import (
    Changes,
    DeadLetter,
    RememberedUnique,
    Store,
    StoredJob,
    StoredPolicy,
    StoredSchedule,
    StoredWindow,
    StoreError,
    check_identifier,
)
from gearsql.stores.memory import MemoryStore

__all__ = [
    "Changes",
    "DeadLetter",
    "MemoryStore",
    "RememberedUnique",
    "Store",
    "StoreError",
    "StoredJob",
    "StoredPolicy",
    "StoredSchedule",
    "StoredWindow",
    "check_identifier",
    "default_store_url",
    "open_store",
]


def _parse_size(text: str) -> int:
    """``100000``, ``64KB``, ``100MB``, ``2GB`` as bytes."""
    units = {"KB": 1024, "MB": 1024**2, "GB": 1024**3, "K": 1024, "M": 1024**2, "G": 1024**3}
    number, factor = text.strip().upper(), 1
    for suffix, size in units.items():
        if number.endswith(suffix):
            number, factor = number[: -len(suffix)], size
            break
    try:
        return int(float(number) * factor) if factor > 1 else int(number)
    except ValueError:
        raise ValueError(
            f"max_size is a size in bytes, such as 100000, 64KB, 100MB or 2GB, not {text!r}"
        ) from None


def default_store_url() -> str:
    """The store ``gearsql server`` uses without ``--store``: SQLite in the user's state dir
    (an absolute path, so ``sqlite:////...``)."""
    return sqlite_url(default_sqlite_path())


def open_store(url: str) -> Store:
    """The store a ``--store`` value names (not yet opened).

    ``memory`` keeps nothing across restarts; ``sqlite:///queue.sqlite3`` (relative to the
    current directory) or ``sqlite:////var/lib/gearsql/queue.sqlite3`` (absolute: four slashes,
    as in SQLAlchemy) keeps jobs in an SQLite file; ``postgresql://user@host/db``
    (psycopg 3, the ``postgres`` extra) and ``mysql://user:password@host/db`` (MySQL or
    MariaDB through mysql-connector-python, the ``mysql`` extra) in a database table.
    ``?table=NAME`` picks the table (default ``gearman_queue``, as C gearmand); for SQLite,
    ``?max_size=100MB`` caps the file (submissions beyond it get QUEUE_ERROR). Raises
    :class:`ValueError` for anything else.
    """
    if url in ("memory", "memory://", "none"):
        return MemoryStore()
    parts = urlsplit(url)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    if parts.scheme in SQLITE_SCHEMES:
        from gearsql.stores.sqlite import SQLiteStore

        path = sqlite_path(url)
        max_size = query.get("max_size")
        return SQLiteStore(
            path,
            table=query.get("table", "gearman_queue"),
            max_size=_parse_size(max_size) if max_size else None,
        )
    if parts.scheme in ("postgresql", "postgres"):
        from gearsql.stores.postgres import PostgresStore

        return PostgresStore(url, table=query.get("table", "gearman_queue"))
    if parts.scheme in MYSQL_SCHEMES:
        from gearsql.stores.mysql import MySQLStore

        return MySQLStore(url, table=query.get("table", "gearman_queue"))
    raise ValueError(
        f"unknown store {url!r}: use memory, sqlite:///relative/path.db, "
        "sqlite:////absolute/path.db, postgresql://... or mysql://..."
    )
