"""``mysql://user:password@host:3306/database?option=value`` URLs, as ``--store``, ``gearsql
install mysql`` and ``gearsql relay`` take them; no driver needed to parse one."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["parse_mysql_url"]


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
