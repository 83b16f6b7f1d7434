"""The gman_* functions in MariaDB: the install and uninstall SQL, and running them.

MariaDB cannot open a socket from SQL, so nothing here talks to a job server. Every function is
a plain stored routine installed over an ordinary connection (or from ``sql/mysql/``) into one
database, and a sidecar does the Gearman side: the relay (``gearsql relay --dsn mysql://...``).

Objects, all in the installing database:

- ``gman_outbox``: the rows ``gman_do*_background`` write in the caller's transaction. The relay
  submits each one after commit; a rolled-back transaction leaves no row and so no job.
- ``gman_outbox_dead``: outbox rows no job server will take, moved there by the relay with the
  reason; the view ``gman_pipeline`` sums up both tables and ``gman_job_status('outbox:<id>')``
  follows one row.
- ``gman_origin``: the identity of the database the outbox belongs to, recorded by the install;
  a relay on a restored copy stops while the outbox holds rows (:mod:`gearsql.relay.origin`).
- ``gman_outbox_sent``: the job server's handle of each row the relay submitted (kept 24 hours,
  the last 100000 ids), for ``gman_job_status``; ``gman_relay_contact``: each relay's last
  contact, which ``gman_pipeline`` shows as ``last_relay_contact``.
- ``gman_settings(name, value)``: the settings (:data:`SETTINGS`). Callers get no privilege on
  it or on any table: every function runs ``SQL SECURITY DEFINER``, as the installing account.
- ``gman_calls`` and ``gman_results``: how a foreground ``gman_do*`` waits for its result
  (see below); ``gearsql.bridges.mysql_calls.serve_calls`` is the relay's side.
- ``gman_function_servers(function, servers, set_at)``: the job servers chosen for one function
  with ``gman_servers_set_function(servers, function)`` (the old UDF's two-argument
  ``gman_servers_set``), within ``servers``; the relay submits that function's outbox rows and
  foreground calls there.
- the functions; ``--grant-to`` accounts get EXECUTE on the public ones.

MariaDB has no overloading and no default arguments for stored functions, so the optional
third argument ``unique`` of the Gearman UDFs becomes a function of its own: ``gman_do(f, w)``
and ``gman_do_unique(f, w, u)``, ``gman_do_background(f, w)`` and
``gman_do_background_unique(f, w, u)``, and so on for ``_high`` and ``_low``. The two-argument
forms are exactly the old UDF's, so existing triggers work unchanged.

**Foreground calls.** A stored function cannot wait for anything another session writes to a
table the usual way: every table a function touches is locked when the calling statement
starts (prelocking), so a MyISAM or Aria request table stays locked against the relay for the
whole call, and an InnoDB row stays invisible until the statement commits. So ``gman_do``
inserts its request into the InnoDB table ``gman_calls`` *without* committing it; the relay
reads it at READ UNCOMMITTED, takes the named lock ``gearsql.<db>.claim.<id>``, runs the job,
commits the outcome into ``gman_results`` and then takes ``gearsql.<db>.done.<id>``. The
function polls ``IS_USED_LOCK`` of the done lock (named locks are seen by every session at
once), reads its result with a locking read (which sees the latest committed row, whatever the
statement's snapshot), deletes both rows and returns. Nothing of a call is ever committed by
the caller; a killed or failed call is rolled back with its statement. Inside a transaction
(``@@in_transaction``, or autocommit off) the foreground functions refuse: the job would run
even if the transaction rolled back, and the wait would hold the transaction's locks.

Needs MariaDB 10.3 or later (``CREATE OR REPLACE`` routines, ``@@in_transaction``, compound
statements outside routines); MySQL lacks ``@@in_transaction`` and is not supported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from gearsql._mysqlurl import connect_config, connector, lock_name
from gearsql._sqlcommon import (
    MYSQL_ORIGIN_QUERY,
    MYSQL_ORIGIN_SETUP,
    SETTING_DEFAULTS,
    check_seconds,
)
from gearsql.bridges._mysqlroutines import (
    FUNCTIONS,
    PIPELINE,
    literal,
    routines,
)

__all__ = [
    "FUNCTIONS",
    "RELAY_PRIVILEGES",
    "SETTINGS",
    "TABLES",
    "VIEWS",
    "check_account",
    "connect_config",
    "connector",
    "install",
    "install_sql",
    "install_statements",
    "lock_name",
    "uninstall",
    "uninstall_sql",
    "uninstall_statements",
]

#: name -> (default, meaning).
SETTINGS: dict[str, tuple[str, str]] = {
    "servers": (
        SETTING_DEFAULTS["servers"],
        "job servers gman_servers_set accepts (host[:port],...); the relay decides where jobs go",
    ),
    "timeout": (SETTING_DEFAULTS["timeout"], "seconds a foreground gman_do* waits for its result"),
    "poll_interval": ("0.05", "seconds between a waiting gman_do*'s checks for its result"),
    "max_workload": (
        SETTING_DEFAULTS["max_workload"],
        "bytes: a longer workload is an SQL error at call time (0: no limit); the default "
        "fits a job server's default maximum packet of 64 MiB",
    ),
}

#: The tables the install creates, in creation order.
TABLES = (
    "gman_settings",
    "gman_outbox",
    "gman_outbox_dead",
    "gman_origin",
    "gman_outbox_sent",
    "gman_relay_contact",
    "gman_calls",
    "gman_results",
    "gman_function_servers",
)

#: Views (callers granted the functions may read them).
VIEWS = ("gman_pipeline",)

#: Table -> privileges the relay's account gets (``relay_account``): it submits and deletes
#: outbox rows, reads the calls waiting (uncommitted) and writes their results.
RELAY_PRIVILEGES: dict[str, str] = {
    "gman_outbox": "SELECT, UPDATE, DELETE",
    "gman_outbox_dead": "SELECT, INSERT",
    "gman_origin": "SELECT, INSERT, UPDATE, DELETE",
    "gman_outbox_sent": "SELECT, INSERT, DELETE",
    "gman_relay_contact": "SELECT, INSERT, UPDATE, DELETE",
    "gman_settings": "SELECT",
    "gman_calls": "SELECT",
    "gman_results": "SELECT, INSERT, UPDATE, DELETE",
    "gman_function_servers": "SELECT",
}

#: Internal routines (kind, name); callers get no EXECUTE on them.
_INTERNAL = (
    ("PROCEDURE", "_gman_check"),
    ("FUNCTION", "_gman_setting"),
    ("FUNCTION", "_gman_server"),
    ("FUNCTION", "_gman_servers"),
    ("FUNCTION", "_gman_servers_allowed"),
    ("FUNCTION", "_gman_lock_name"),
    ("FUNCTION", "_gman_outbox_insert"),
    ("FUNCTION", "_gman_call"),
)

_SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_AUTO_CREATE_USER"
_DELIMITER = "$$"
_ACCOUNT_PART = r"[A-Za-z0-9_.$%:/-]{1,80}"
_ACCOUNT = re.compile(
    rf"^(?P<q1>['`\"]?)(?P<user>{_ACCOUNT_PART})(?P=q1)"
    rf"(?:@(?P<q2>['`\"]?)(?P<host>{_ACCOUNT_PART})(?P=q2))?$"
)


def check_account(value: str) -> str:
    """``value`` (``'app'@'%'``, ``app@localhost`` or a role name ``app_role``) as it goes into
    a GRANT, quoted; ValueError for anything else (it becomes part of generated SQL)."""
    match = _ACCOUNT.match(value.strip())
    if not match:
        raise ValueError(
            f"account {value!r} is not 'user'@'host' or a role name (letters, digits and "
            "_ . $ - in names; % and : also in hosts)"
        )
    user, host = match.group("user"), match.group("host")
    if host is None:
        return f"`{user}`"
    return f"'{user}'@'{host}'"


def _check_servers(servers: str) -> str:
    from gearsql.bridges import load_library

    load_library().parse_servers(servers)  # ValueError names a bad entry
    return servers


# ----------------------------------------------------------------------------- the SQL

#: gman_results.status: the outcome of a foreground call, as the relay records it; the kinds of
#: failure pick the call's SQLSTATE (``_gman_call``). Values are only ever appended, and
#: :data:`_UPGRADES` appends them to an older install's column.
_RESULT_STATUS = (
    "ENUM('complete','fail','exception','error','timeout','unreachable','refused') NOT NULL"
)

_TABLE_SQL = {
    "gman_settings": """CREATE TABLE IF NOT EXISTS gman_settings (
    name VARCHAR(64) CHARACTER SET ascii NOT NULL PRIMARY KEY,
    value VARCHAR(1024) CHARACTER SET utf8mb4 NOT NULL
) ENGINE=InnoDB COMMENT='gearsql settings; only the installing account changes them'""",
    "gman_outbox": """CREATE TABLE IF NOT EXISTS gman_outbox (
    id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    function VARBINARY(512) NOT NULL,
    unique_key VARBINARY(64) NULL,
    workload LONGBLOB NOT NULL,
    priority ENUM('high','normal','low') NOT NULL DEFAULT 'normal'
) ENGINE=InnoDB COMMENT='gearsql: background jobs the relay submits once committed'""",
    "gman_outbox_dead": """CREATE TABLE IF NOT EXISTS gman_outbox_dead (
    id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    created_at TIMESTAMP(6) NOT NULL,
    function VARBINARY(512) NOT NULL,
    unique_key VARBINARY(64) NULL,
    workload LONGBLOB NOT NULL,
    priority ENUM('high','normal','low') NOT NULL DEFAULT 'normal',
    reason VARCHAR(1000) CHARACTER SET utf8mb4 NOT NULL,
    dead_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB COMMENT='gearsql: outbox rows no job server will take, and why'""",
    # Which database wrote the outbox (docs/reliability.md case 52): its identity is made from
    # this table's own creation time (MYSQL_ORIGIN_QUERY), so it is never altered or rebuilt.
    "gman_origin": """CREATE TABLE IF NOT EXISTS gman_origin (
    identity VARCHAR(200) CHARACTER SET utf8mb4 NOT NULL,
    description VARCHAR(1000) CHARACTER SET utf8mb4 NOT NULL,
    recorded_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB COMMENT='gearsql: the database this outbox belongs to (gearsql relay adopt)'""",
    "gman_outbox_sent": """CREATE TABLE IF NOT EXISTS gman_outbox_sent (
    id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    function VARBINARY(512) NOT NULL,
    handle VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL,
    server VARCHAR(300) CHARACTER SET utf8mb4 NOT NULL,
    sent_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY gman_outbox_sent_at (sent_at)
) ENGINE=InnoDB COMMENT='gearsql: submitted outbox rows and their handles (24 h, 100000 ids)'""",
    "gman_relay_contact": """CREATE TABLE IF NOT EXISTS gman_relay_contact (
    relay VARCHAR(300) CHARACTER SET utf8mb4 NOT NULL PRIMARY KEY,
    last_contact TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    servers VARCHAR(2000) CHARACTER SET utf8mb4 NOT NULL
) ENGINE=InnoDB COMMENT='gearsql: the last contact of each relay with this outbox'""",
    "gman_calls": """CREATE TABLE IF NOT EXISTS gman_calls (
    id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    function VARBINARY(512) NOT NULL,
    unique_key VARBINARY(64) NULL,
    workload LONGBLOB NOT NULL,
    priority ENUM('high','normal','low') NOT NULL DEFAULT 'normal',
    timeout DOUBLE NOT NULL,
    connection_id BIGINT UNSIGNED NOT NULL
) ENGINE=InnoDB COMMENT='gearsql: foreground calls waiting (never committed; read uncommitted)'""",
    "gman_results": f"""CREATE TABLE IF NOT EXISTS gman_results (
    call_id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    status {_RESULT_STATUS},
    result LONGBLOB NULL,
    message VARCHAR(400) CHARACTER SET utf8mb4 NULL
) ENGINE=InnoDB COMMENT='gearsql: outcomes of foreground calls, written by the relay'""",
    "gman_function_servers": """CREATE TABLE IF NOT EXISTS gman_function_servers (
    function VARBINARY(512) NOT NULL PRIMARY KEY,
    servers TEXT CHARACTER SET utf8mb4 NOT NULL,
    set_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB COMMENT='gearsql: job servers of one function (gman_servers_set_function)'""",
}

#: What an install older than this one lacks in tables it already has (CREATE TABLE IF NOT
#: EXISTS leaves them as they are); each changes only an install that lacks it, so a new or
#: current install needs no ALTER privilege.
_UPGRADES = (
    # The kinds of failure of a foreground call (instant: values appended to an ENUM).
    "BEGIN NOT ATOMIC\n"
    "    IF (SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()\n"
    "        AND TABLE_NAME = 'gman_results' AND COLUMN_NAME = 'status') NOT LIKE '%''refused''%'\n"
    "    THEN\n"
    f"        ALTER TABLE gman_results MODIFY status {_RESULT_STATUS};\n"
    "    END IF;\n"
    "END",
)


def install_statements(
    servers: str | None = None,
    grant_to: Sequence[str] = (),
    timeout: str | None = None,
    relay_account: str | None = None,
) -> list[str]:
    """The statements that install (or upgrade) everything into the current database.

    Settings already there are kept, except those given. Every ``grant_to`` account (see
    :func:`check_account`) gets EXECUTE on the public functions and nothing on the tables;
    ``relay_account`` gets :data:`RELAY_PRIVILEGES` on the tables. Raises ValueError for a bad
    account, server list or timeout.
    """
    accounts = [check_account(account) for account in grant_to]
    relay = None if relay_account is None else check_account(relay_account)
    chosen = {
        "servers": servers if servers is None else _check_servers(servers),
        "timeout": timeout if timeout is None else check_seconds("timeout", timeout),
    }
    statements = [
        "SET NAMES utf8mb4",
        f"SET SESSION sql_mode = '{_SQL_MODE}'",
        *(_TABLE_SQL[table] for table in TABLES),
        *_UPGRADES,
        MYSQL_ORIGIN_SETUP,
        "INSERT INTO gman_origin (identity, description)\n"
        f"{MYSQL_ORIGIN_QUERY}\n"
        "  AND NOT EXISTS (SELECT 1 FROM gman_origin)",
        "INSERT IGNORE INTO gman_settings (name, value) VALUES\n"
        + ",\n".join(
            f"    ({literal(name)}, {literal(default)})" for name, (default, _) in SETTINGS.items()
        ),
    ]
    for name, value in chosen.items():
        if value is not None:
            statements.append(
                f"UPDATE gman_settings SET value = {literal(value)} WHERE name = {literal(name)}"
            )
    statements += routines()
    statements.append(PIPELINE)
    for account in accounts:
        for name in FUNCTIONS:
            statements.append(f"GRANT EXECUTE ON FUNCTION {name} TO {account}")
        for view in VIEWS:
            statements.append(f"GRANT SELECT ON TABLE {view} TO {account}")
    if relay is not None:
        for table, privileges in RELAY_PRIVILEGES.items():
            statements.append(f"GRANT {privileges} ON TABLE {table} TO {relay}")
        for view in VIEWS:
            statements.append(f"GRANT SELECT ON TABLE {view} TO {relay}")
    return statements


def uninstall_statements(force: bool = False) -> list[str]:
    """The statements that remove everything :func:`install_statements` created. Unless
    ``force``, they first refuse (SQL error, nothing changed) while ``gman_outbox`` holds rows
    the relay has not submitted."""
    statements = []
    if not force:
        statements.append(
            "BEGIN NOT ATOMIC\n"
            "    IF EXISTS (SELECT 1 FROM information_schema.TABLES\n"
            "               WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'gman_outbox') THEN\n"
            "        IF EXISTS (SELECT 1 FROM gman_outbox) THEN\n"
            "            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT =\n"
            "                'gearsql: gman_outbox still holds jobs not yet relayed (let the "
            "relay drain it, or uninstall with --force)';\n"
            "        END IF;\n"
            "    END IF;\n"
            "END"
        )
    for view in VIEWS:
        statements.append(f"DROP VIEW IF EXISTS {view}")
    for name in reversed(list(FUNCTIONS)):
        statements.append(f"DROP FUNCTION IF EXISTS {name}")
    for kind, name in reversed(_INTERNAL):
        statements.append(f"DROP {kind} IF EXISTS {name}")
    for table in reversed(TABLES):
        statements.append(f"DROP TABLE IF EXISTS {table}")
    return statements


def _script(statements: list[str]) -> str:
    """Statements as a script for the mysql client: routines between DELIMITER lines."""
    parts = []
    for statement in statements:
        if statement.startswith(("CREATE OR REPLACE", "BEGIN NOT ATOMIC")):
            if _DELIMITER in statement:
                raise RuntimeError(f"a routine contains the delimiter {_DELIMITER}")
            parts.append(f"DELIMITER {_DELIMITER}\n{statement}{_DELIMITER}\nDELIMITER ;")
        else:
            parts.append(statement + ";")
    return "\n\n".join(parts) + "\n"


def _install_header() -> str:
    lines = [
        "-- gearsql: the gman_* Gearman functions for MariaDB (stored functions, an outbox and",
        "-- the relay sidecar). Generated by sql/generate.py from gearsql/bridges/mysql.py; do",
        "-- not edit by hand. Needs MariaDB 10.3 or later.",
        "--",
        "-- Installs into the current database, as an account that may create routines:",
        "--     mysql --database=app < sql/mysql/install.sql",
        "-- or, with accounts to grant EXECUTE to and the allowed job servers:",
        "--     gearsql install mysql --dsn mysql://root@127.0.0.1:3306/app \\",
        "--         --grant-to \"'app'@'%'\" --servers 10.0.0.5:4730",
        "-- Then run the relay, which submits the outbox and serves foreground calls:",
        "--     gearsql relay --dsn mysql://relay:pw@127.0.0.1:3306/app --servers 10.0.0.5:4730",
        "--",
        "-- Callers need only EXECUTE on the functions (they run as the installing account):",
        "--     GRANT EXECUTE ON FUNCTION app.gman_do_background TO 'app'@'%';",
        "-- The relay's account needs, on the tables (gearsql install mysql --relay-account):",
        *(
            f"--     GRANT {privileges} ON TABLE app.{table} TO 'relay'@'%';"
            for table, privileges in RELAY_PRIVILEGES.items()
        ),
        "-- With the binary log on, MariaDB also wants log_bin_trust_function_creators = 1 to",
        "-- create these functions (they write tables and are not deterministic).",
        "--",
        "-- Functions (MariaDB has no overloading, so the optional unique is a name of its own):",
    ]
    for name, (params, returns) in FUNCTIONS.items():
        lines.append(f"--   {name}({', '.join(params)}) -> {returns.split()[0]}")
    lines += [
        "--",
        "-- Outbox rows no job server will take (too large, say) are moved by the relay into",
        "-- gman_outbox_dead with the reason. The view gman_pipeline (SELECT for --grant-to",
        "-- accounts) shows the backlog (rows, the oldest one's age) and the dead letters",
        "-- (how many, the newest reasons); gman_job_status('outbox:<id>') says whether a",
        "-- row is pending, dead or submitted.",
        "--",
        "-- Settings (gman_settings; only the installing account changes them, e.g.",
        "--     UPDATE gman_settings SET value = '10.0.0.5:4730' WHERE name = 'servers';",
        "-- ):",
    ]
    for name, (default, meaning) in SETTINGS.items():
        lines.append(f"--   {name} (default {default}): {meaning}")
    return "\n".join(lines) + "\n\n"


def install_sql(
    servers: str | None = None,
    grant_to: Sequence[str] = (),
    timeout: str | None = None,
    relay_account: str | None = None,
    for_file: bool = False,
) -> str:
    """:func:`install_statements` as a script for the ``mysql`` client."""
    text = _script(install_statements(servers, grant_to, timeout, relay_account))
    return _install_header() + text if for_file else text


def uninstall_sql(force: bool = False, for_file: bool = False) -> str:
    """:func:`uninstall_statements` as a script for the ``mysql`` client."""
    text = _script(uninstall_statements(force))
    if for_file:
        text = (
            "-- gearsql: remove the gman_* functions, settings, outbox and call tables from the\n"
            "-- current database. Generated by sql/generate.py; do not edit by hand. Refuses\n"
            "-- while gman_outbox holds jobs the relay has not submitted (gearsql uninstall\n"
            "-- mysql --force drops them).\n\n" + text
        )
    return text


# ----------------------------------------------------------------------------- running it


#: What an install or uninstall needs, said when MariaDB refuses it for lack of privilege.
_PRIVILEGES_NEEDED = {
    "install": "installing needs the database's owner (ALL PRIVILEGES on it) or root: at least "
    "CREATE, INSERT, CREATE ROUTINE and ALTER ROUTINE on the database",
    "uninstall": "removing needs the database's owner (ALL PRIVILEGES on it) or root: at least "
    "SELECT, DROP and ALTER ROUTINE on the database",
    "grant": "--grant-to and --relay-account also need the GRANT OPTION on the database "
    "(GRANT ALL ON db.* TO ... WITH GRANT OPTION), or root",
}

#: ER_DBACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED_ERROR, ER_SPECIFIC_ACCESS_DENIED_ERROR,
#: ER_PROCACCESS_DENIED_ERROR.
_ACCESS_DENIED = frozenset({1044, 1142, 1227, 1370})


def _run(dsn: str, statements: list[str], action: str) -> None:
    try:
        import mysql.connector
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "mysql-connector-python is needed: pip install 'gearsql[mysql]'"
        ) from exc
    try:
        conn: Any = mysql.connector.connect(**connect_config(dsn))
    except mysql.connector.Error as exc:
        if exc.errno in _ACCESS_DENIED:  # no privilege at all on the database
            raise PermissionError(f"{exc.msg}: {_PRIVILEGES_NEEDED[action]}") from exc
        raise
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT VERSION()")
        version = str(cursor.fetchone()[0])
        if "mariadb" not in version.lower():
            raise RuntimeError(
                f"the gman_* functions need MariaDB 10.3 or later; this server is {version}"
            )
        for statement in statements:
            try:
                cursor.execute(statement)
            except mysql.connector.Error as exc:
                if exc.errno == 1418:  # ER_BINLOG_UNSAFE_ROUTINE
                    raise RuntimeError(
                        "the binary log is on: MariaDB creates these functions only with "
                        "log_bin_trust_function_creators = 1 (SET GLOBAL, or in my.cnf)"
                    ) from exc
                if exc.errno in _ACCESS_DENIED:
                    granting = statement.startswith("GRANT")
                    needed = _PRIVILEGES_NEEDED["grant" if granting else action]
                    raise PermissionError(f"{exc.msg}: {needed}") from exc
                raise
    finally:
        conn.close()


def install(
    dsn: str,
    servers: str | None = None,
    grant_to: Sequence[str] = (),
    timeout: str | None = None,
    relay_account: str | None = None,
) -> None:
    """Install or upgrade everything into the database of ``dsn`` (see
    :func:`install_statements`). Raises ValueError for bad arguments, RuntimeError for a server
    that is not MariaDB, PermissionError (saying which privileges) when the account lacks one,
    and ``mysql.connector.Error`` when the database refuses for another reason."""
    _run(dsn, install_statements(servers, grant_to, timeout, relay_account), "install")


def uninstall(dsn: str, force: bool = False) -> None:
    """Remove everything from the database of ``dsn`` (see :func:`uninstall_statements`).
    Raises as :func:`install` does."""
    _run(dsn, uninstall_statements(force), "uninstall")
