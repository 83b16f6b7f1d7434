"""``mysql://user:password@host:3306/database?option=value`` URLs, as ``--store``, ``gearsql
install mysql`` and ``gearsql relay`` take them (no driver needed to parse one), and the
connection helpers the install, the relay and MariaDB's foreground calls share, so that the
relay does not import the install's DDL module (``gearsql/bridges/mysql.py``)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "ESCAPED",
    "MYSQL_SCHEMES",
    "MySQLConnection",
    "MySQLCursor",
    "connect_config",
    "connector",
    "literal_size",
    "lock_name",
    "parse_mysql_url",
]

#: Bytes the driver escapes with a backslash inside a quoted literal (one extra byte each).
ESCAPED = (b"\\", b"\n", b"\r", b"'", b'"', b"\x1a", b"\x00")


def literal_size(value: bytes) -> int:
    """The length of ``value`` as a quoted literal in a statement the driver sends: what the
    server counts against its ``max_allowed_packet``."""
    return len(value) + sum(value.count(char) for char in ESCAPED) + 2


class MySQLCursor(Protocol):
    """What the relay uses of a mysql-connector cursor."""

    def execute(self, operation: str, params: Sequence[Any] = ..., /) -> object: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Sequence[Any]: ...

    def close(self) -> object: ...


class MySQLConnection(Protocol):
    """What the relay uses of a mysql-connector connection."""

    def cursor(self) -> MySQLCursor: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


#: The options a DSN of the install and the relay may carry.
_DSN_OPTIONS = frozenset({"connect_timeout", "unix_socket"})


def parse_mysql_url(
    url: str, options: Collection[str], what: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """Split ``url`` into mysql-connector ``connect()`` arguments (host, port, user, password,
    database, and unix_socket when given) and its query options (the last value of each).

    ``options`` are the query options the caller understands; ``what`` names the URL in errors
    (``"MySQL store"``). Raises ValueError for an unknown option or a URL without a database.
    """
    parts = urlsplit(url)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = set(query) - set(options)
    if unknown:
        raise ValueError(
            f"unknown {what} option(s) {', '.join(sorted(unknown))}: "
            f"use {', '.join(sorted(options))}"
        )
    database = unquote(parts.path.strip("/"))
    if not database:
        raise ValueError(f"a {what} URL needs a database: mysql://user:pw@host:3306/db")
    config: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "database": database,
    }
    if "unix_socket" in query:
        config["unix_socket"] = query["unix_socket"]
    return config, query


def lock_name(database: str, kind: str, call_id: int) -> str:
    """The named lock of a foreground call: ``kind`` is ``ready`` (the caller's row is
    written whole), ``claim`` (the relay runs the job) or ``done`` (its outcome is in
    ``gman_results``). The same as the SQL ``_gman_lock_name``."""
    import hashlib  # not at the top: every server imports this module, few need hashlib (0.6 MiB)

    digest = hashlib.sha1(database.encode("utf-8")).hexdigest()[:16]
    return f"gearsql.{digest}.{kind}.{call_id}"


#: URL schemes of a MySQL/MariaDB database, alike everywhere a DSN is taken.
MYSQL_SCHEMES = ("mysql", "mariadb")


def connect_config(dsn: str) -> dict[str, Any]:
    """mysql-connector ``connect()`` arguments from ``mysql://user:pw@host:3306/db`` (also
    ``mariadb://``; options ``connect_timeout`` seconds and ``unix_socket``), the URL form of
    ``--store mysql://...``. Raises ValueError without a database or for an unknown option."""
    if urlsplit(dsn).scheme not in MYSQL_SCHEMES:
        raise ValueError(f"not a MySQL URL: {dsn!r} (mysql://user:pw@host:3306/db)")
    config, query = parse_mysql_url(dsn, _DSN_OPTIONS, "MySQL")
    config["autocommit"] = True
    config["connection_timeout"] = max(1, round(float(query.get("connect_timeout", 5))))
    return config


def connector(dsn: str) -> Callable[[], Any]:
    """A function that opens a new connection to ``dsn`` each time it is called (for
    :func:`gearsql.bridges.mysql_calls.serve_calls`)."""
    config = connect_config(dsn)

    def connect() -> Any:
        import mysql.connector

        return mysql.connector.connect(**config)

    return connect
