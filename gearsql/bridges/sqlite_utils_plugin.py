"""A sqlite-utils plugin: every connection sqlite-utils opens gets the gman_* functions.

Registered through the ``sqlite_utils`` entry point, so ``sqlite-utils query app.db "SELECT
gman_do('reverse', 'hello')"`` works once gearsql is installed. Settings come from the
environment: ``GEARSQL_SERVERS`` (the job servers the functions may reach; default
``$GEARMAN_SERVERS`` or ``127.0.0.1:4730``), ``GEARSQL_BACKGROUND_MODE`` (``transactional``, the
default, or ``immediate``) and ``GEARSQL_TIMEOUT`` (seconds, default 60). A gman_* error's message
is also logged on the ``gearsql.udf`` logger, so the CLI shows it on stderr next to sqlite's
generic "user-defined function raised exception".
"""

from __future__ import annotations

import logging
import os
import sqlite3

from sqlite_utils import hookimpl

from gearsql.sqlite import last_error, register

log = logging.getLogger("gearsql.udf")


@hookimpl
def prepare_connection(conn: sqlite3.Connection) -> None:
    """Add the gman_* functions to a connection sqlite-utils opened."""
    servers = os.environ.get("GEARSQL_SERVERS") or os.environ.get("GEARMAN_SERVERS")
    register(
        conn,
        servers or "127.0.0.1:4730",
        background_mode=os.environ.get("GEARSQL_BACKGROUND_MODE", "transactional"),
        timeout=float(os.environ.get("GEARSQL_TIMEOUT", "60")),
        on_error=lambda message: log.error("%s", message),
    )


__all__ = ["last_error", "prepare_connection"]
