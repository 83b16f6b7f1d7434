"""What the SQL side of gearsql agrees on, kept once: the SQL functions' installs
(``gearsql/bridges/``, ``gearsql/sqlite.py``), the relay that drains their outbox and the
durable stores.

The check of the SQL names (schemas, table names) put into statements, the channel the
PostgreSQL outbox insert notifies, the outbox's columns, and the settings of the ``gman_*``
functions with their defaults. ``udf/gman.py`` runs inside the database (where gearsql is not
installed) and spells the defaults again; ``tests/test_bridge_sqlite.py`` checks they agree.
"""

from __future__ import annotations

import re

from gearsql._servers import DEFAULT_SERVERS
from gearsql.protocol import DEFAULT_MAX_PACKET_SIZE

__all__ = [
    "BACKGROUND_MODES",
    "DEAD_COLUMNS",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_WORKLOAD",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_TIMEOUT",
    "IDENTIFIER",
    "NOTIFY_CHANNEL",
    "OUTBOX_COLUMNS",
    "PG_ORIGIN_QUERY",
    "SETTING_DEFAULTS",
    "check_identifier",
    "check_seconds",
    "pg_ident",
    "pg_literal",
]

#: A plain SQL identifier: letters, digits, ``_`` and ``$``, not starting with a digit, at most
#: 63 characters. PostgreSQL, MariaDB and SQLite all take it unquoted.
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


def pg_ident(name: str) -> str:
    """``name`` as a PostgreSQL quoted identifier (any name; ``"`` doubled)."""
    return '"' + name.replace('"', '""') + '"'


def pg_literal(value: str) -> str:
    """``value`` as a PostgreSQL string literal (standard_conforming_strings, on since 9.1)."""
    return "'" + value.replace("'", "''") + "'"


def check_identifier(value: str, what: str) -> str:
    """``value`` if it is a plain SQL identifier, else ValueError naming it as ``what``
    ("schema", "table name"): such names go into generated SQL and PL/Python source."""
    if not IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a plain SQL identifier (letters, digits, _ and $, "
            "at most 63 characters, not starting with a digit)"
        )
    return value


def check_seconds(name: str, value: str) -> str:
    """``value`` if it is a number of seconds in (0, 86400] (the ``timeout`` setting of an
    install), else ValueError naming the setting ``name``."""
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {value!r}") from None
    if not 0 < seconds <= 86400:
        raise ValueError(f"{name} must be more than 0 and at most 86400 seconds")
    return value


#: The channel PostgreSQL's outbox insert notifies (with the schema as payload) and the relay
#: listens on.
NOTIFY_CHANNEL = "gearsql_outbox"

#: The identity of a PostgreSQL database and its description for people, as recorded in
#: ``<schema>.gman_origin`` by the install and compared by the relay (docs/reliability.md case
#: 52): the cluster's system identifier (a new one for every initdb, so a dump restored into
#: another cluster differs) and the database's oid (a copy made with CREATE DATABASE ...
#: TEMPLATE differs); a renamed database keeps both, a promoted physical replica too.
PG_ORIGIN_QUERY = (
    "SELECT c.system_identifier::text || ':' || d.oid::text,\n"
    "       pg_catalog.format('database %s (oid %s) of the cluster %s', "
    "pg_catalog.quote_literal(d.datname), d.oid, c.system_identifier)\n"
    "FROM pg_catalog.pg_control_system() AS c, pg_catalog.pg_database AS d\n"
    "WHERE d.datname = pg_catalog.current_database()"
)

#: The same for a MariaDB database, which has no identifier of its own that a restore changes
#: (``server_id`` and the port are the same on most servers, the host name changes with every
#: container): the database's name and the time ``gman_origin`` itself was created, which InnoDB
#: reports from its ``.frm`` file's ctime. A dump restored anywhere (another server, another
#: database, the same one dropped first) creates the table again, and a physical copy
#: (mariabackup, ``cp -a``) writes new files, so either differs; a server restart, a new
#: container over the same data volume, a ``mv`` of the data directory keep it. Read with the
#: session's ``time_zone`` at ``'+00:00'`` (:data:`MYSQL_ORIGIN_SETUP`), so that no time zone or
#: daylight saving change makes it differ.
MYSQL_ORIGIN_QUERY = (
    "SELECT CONCAT(TABLE_SCHEMA, ':', UNIX_TIMESTAMP(CREATE_TIME)),\n"
    "       CONCAT('database ', QUOTE(TABLE_SCHEMA), ' on ', @@hostname, ':', @@port,\n"
    "              ' (its gman_origin created ', CREATE_TIME, ' UTC)')\n"
    "FROM information_schema.TABLES\n"
    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'gman_origin' AND CREATE_TIME IS NOT NULL"
)
MYSQL_ORIGIN_SETUP = "SET SESSION time_zone = '+00:00'"

#: The outbox columns the relay reads, in the order of ``relay.batch.OutboxRow``; the SQL
#: functions write all but ``id``.
OUTBOX_COLUMNS = ("id", "function", "unique_key", "workload", "priority")

#: The columns an outbox row keeps in ``gman_outbox_dead``, besides its ``reason``.
DEAD_COLUMNS = ("id", "created_at", "function", "unique_key", "workload", "priority")

#: The default of the ``max_workload`` setting: the job server's default maximum packet less
#: room for the header, the longest function name and unique, and their separators.
DEFAULT_MAX_WORKLOAD = DEFAULT_MAX_PACKET_SIZE - 1024
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_TIMEOUT = 60.0
DEFAULT_POLL_INTERVAL = 0.1
BACKGROUND_MODES = ("transactional", "immediate")

#: The settings of the ``gman_*`` functions in PostgreSQL and SQLite, as text (the values of
#: PostgreSQL's ``gman_settings`` table). MariaDB has fewer (see ``bridges/mysql.py``).
SETTING_DEFAULTS: dict[str, str] = {
    "servers": DEFAULT_SERVERS,
    "background_mode": BACKGROUND_MODES[0],
    "connect_timeout": f"{DEFAULT_CONNECT_TIMEOUT:g}",
    "timeout": f"{DEFAULT_TIMEOUT:g}",
    "poll_interval": f"{DEFAULT_POLL_INTERVAL:g}",
    "max_workload": str(DEFAULT_MAX_WORKLOAD),
    # TLS to the job servers (docs/security.md): on when 'ssl' is on or any file is set.
    "ssl": "off",
    "ssl_ca_file": "",
    "ssl_certificate": "",
    "ssl_key": "",
}
