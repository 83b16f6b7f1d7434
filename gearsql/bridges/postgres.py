"""The gman_* functions in PostgreSQL: the install and uninstall SQL, and running them.

Everything goes over an ordinary connection as SQL: the PL/Python bodies from ``udf/functions.py``
and, in the table ``_gman_library``, the library's source text (the gearsql codec, the sans-IO
client connection and ``udf/gman.py``) and its compiled code, which the first call of a session
loads into the backend's Python. Nothing is placed on the database host.

Objects, all in one schema (default ``gearsql``):

- ``gman_settings(name, value)``: the settings. Only its owner (the installing superuser) may
  read or change it; the functions read it through ``_gman_settings()``, a SECURITY DEFINER
  function. ``servers`` lists the job servers this database may reach: ``gman_servers_set`` can
  only choose among them, so no SQL user can make the database open sockets elsewhere.
- ``gman_outbox``: the rows ``gman_do*_background`` writes in transactional mode, each followed by
  ``NOTIFY gearsql_outbox`` with the schema name as payload (the relay drains it).
- ``gman_outbox_dead``: outbox rows no job server will ever take (too large, a name or unique
  the protocol cannot carry), moved there by the relay with the reason, in the transaction that
  deletes them from the outbox. ``gman_pipeline()`` sums up both tables for an administrator.
- ``gman_origin``: the identity of the database the outbox belongs to, recorded at the first
  install (:data:`gearsql._sqlcommon.PG_ORIGIN_QUERY`); a relay on a restored copy finds another
  and stops while the outbox holds rows (:mod:`gearsql.relay.origin`).
- ``gman_outbox_sent``: the job server's handle of each row the relay submitted, written in the
  transaction that deletes the row, for ``gman_job_status('outbox:<id>')``; the relay keeps it
  to 24 hours and the last 100000 ids. ``gman_relay_contact``: each relay's last contact (at
  most every 5 s), shown by ``gman_relay_contacts()``.
- ``gman_function_servers(function, servers, set_at)``: the job servers chosen for one function
  with ``gman_servers_set(servers, function)`` (within ``servers``); direct calls read it with
  the settings, the relay with each batch.
- the functions and the ``gman_sum`` aggregate; EXECUTE revoked from PUBLIC and granted to
  ``--role``.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from gearsql._sqlcommon import (
    BACKGROUND_MODES,
    NOTIFY_CHANNEL,
    PG_ORIGIN_QUERY,
    SETTING_DEFAULTS,
    check_identifier,
    check_seconds,
)
from gearsql._sqlcommon import pg_ident as ident
from gearsql._sqlcommon import pg_literal as literal
from gearsql.bridges import _pg_library, library_package, library_sources, load_library, udf_module
from gearsql.bridges._pgfunctions import (
    LEGACY_OUTBOX_INSERT,
    all_functions,
    arg_types,
    background_settings_sql,
    background_sql,
    dollar,
    drop_old_result,
    entry_signatures,
    function_sql,
    granted_signatures,
    now_sql,
    read_udf,
    regrant,
)

__all__ = [
    "DEFAULT_SCHEMA",
    "NOTIFY_CHANNEL",
    "SETTINGS",
    "install",
    "install_sql",
    "plpython_available",
    "uninstall",
    "uninstall_sql",
]

DEFAULT_SCHEMA = "gearsql"

#: name -> (default, meaning). The same names are register() keywords in gearsql.sqlite.
SETTINGS: dict[str, tuple[str, str]] = {
    "servers": (
        SETTING_DEFAULTS["servers"],
        "job servers this database may reach (host[:port],...)",
    ),
    "background_mode": (
        SETTING_DEFAULTS["background_mode"],
        "transactional: gman_do*_background writes an outbox row in the caller's transaction "
        "(no job unless it commits; the relay submits it); immediate: submit at call time and "
        "return the job handle, even if the transaction later rolls back",
    ),
    "connect_timeout": (SETTING_DEFAULTS["connect_timeout"], "seconds to connect to a job server"),
    "timeout": (
        SETTING_DEFAULTS["timeout"],
        "seconds a call waits for a job server's answer or a foreground result",
    ),
    "poll_interval": (
        SETTING_DEFAULTS["poll_interval"],
        "seconds between checks for a query cancel while waiting",
    ),
    "max_workload": (
        SETTING_DEFAULTS["max_workload"],
        "bytes: a longer workload is an SQL error at call time (0: no limit); the default fits "
        "a job server's default maximum packet of 64 MiB",
    ),
    "ssl": (
        SETTING_DEFAULTS["ssl"],
        "on: reach the job servers over TLS (also on when an ssl_* file is set)",
    ),
    "ssl_ca_file": (
        SETTING_DEFAULTS["ssl_ca_file"],
        "CA (PEM) the job servers' certificates are checked against",
    ),
    "ssl_certificate": (
        SETTING_DEFAULTS["ssl_certificate"],
        "certificate (PEM) for job servers that verify their clients",
    ),
    "ssl_key": (SETTING_DEFAULTS["ssl_key"], "private key (PEM) of ssl_certificate"),
}
#: The TLS settings :func:`install_sql` takes (paths on the database server's host).
TLS_SETTINGS = ("ssl", "ssl_ca_file", "ssl_certificate", "ssl_key")


def install_sql(
    schema: str = DEFAULT_SCHEMA,
    role: str | None = None,
    servers: str | None = None,
    background_mode: str | None = None,
    timeout: str | None = None,
    for_file: bool = False,
    plpython: bool = True,
    tls: Mapping[str, str] | None = None,
) -> str:
    """The SQL that installs (or upgrades) the functions into ``schema``.

    Settings already in the schema are kept, except those given here (``timeout``: seconds a
    foreground gman_do* waits for its result). ``role`` gets USAGE on the schema and EXECUTE on
    the functions; PUBLIC gets nothing. Raises ValueError for a schema or role that is not a
    plain identifier, a bad background mode or a timeout that is not 0 < seconds <= 86400.

    Without ``plpython`` (managed services that offer no untrusted language), the background
    functions are installed as usual (transactional mode, PL/pgSQL) and every other function
    raises SQLSTATE 0A000 saying it needs PL/Python; no superuser is needed then.

    ``tls`` sets the TLS settings it names (:data:`TLS_SETTINGS`: ``ssl`` on or off and the
    paths of the CA, certificate and key files on the database server's host).
    """
    check_identifier(schema, "schema")
    tls = dict(tls or {})
    unknown = sorted(set(tls) - set(TLS_SETTINGS))
    if unknown:
        raise ValueError(f"unknown TLS setting {unknown[0]!r}")
    if tls.get("ssl", "off") not in ("on", "off"):
        raise ValueError("the ssl setting is 'on' or 'off'")
    if role is not None:
        check_identifier(role, "role")
    if background_mode is not None and background_mode not in BACKGROUND_MODES:
        raise ValueError("background_mode is 'transactional' or 'immediate'")
    if servers is not None:
        load_library().parse_servers(servers)  # ValueError names a bad entry
    if timeout is not None:
        check_seconds("timeout", timeout)
    functions = udf_module("functions")
    sources = library_sources()
    package = library_package(sources)
    s = ident(schema)
    load = _pg_library.load_lines(schema, package)
    parts: list[str] = []
    if for_file:
        parts.append(_file_header(schema))
    parts += [
        "BEGIN;",
        *(["CREATE EXTENSION IF NOT EXISTS plpython3u;"] if plpython else []),
        f"CREATE SCHEMA IF NOT EXISTS {s};",
        f"CREATE TABLE IF NOT EXISTS {s}.gman_settings (\n"
        f"    name text PRIMARY KEY CHECK (name IN ({', '.join(map(literal, SETTINGS))})),\n"
        "    value text NOT NULL\n);",
        f"REVOKE ALL ON TABLE {s}.gman_settings FROM PUBLIC;",
    ]
    # An install made before a setting existed has a CHECK without its name: replace it.
    names = ", ".join(map(literal, SETTINGS))
    # Before the settings are written: the trigger publishes them for the background calls.
    parts += background_settings_sql(schema)
    parts += [
        f"ALTER TABLE {s}.gman_settings DROP CONSTRAINT IF EXISTS gman_settings_name_check;",
        f"ALTER TABLE {s}.gman_settings ADD CONSTRAINT gman_settings_name_check "
        f"CHECK (name IN ({names}));",
        f"INSERT INTO {s}.gman_settings (name, value) VALUES\n"
        + ",\n".join(
            f"    ({literal(name)}, {literal(default)})" for name, (default, _) in SETTINGS.items()
        )
        + "\nON CONFLICT (name) DO NOTHING;",
    ]
    chosen = {
        "servers": servers,
        "background_mode": background_mode,
        "timeout": timeout,
        **tls,
    }
    for name, value in chosen.items():
        if value is not None:
            parts.append(
                f"UPDATE {s}.gman_settings SET value = {literal(value)} "
                f"WHERE name = {literal(name)};"
            )
    parts.append(
        f"COMMENT ON TABLE {s}.gman_settings IS "
        f"{literal('gearsql settings; only the installing role changes them')};"
    )
    parts += [
        f"CREATE TABLE IF NOT EXISTS {s}.gman_outbox (\n"
        "    id bigserial PRIMARY KEY,\n"
        "    created_at timestamptz NOT NULL DEFAULT now(),\n"
        "    function bytea NOT NULL,\n"
        "    unique_key bytea,\n"
        "    workload bytea NOT NULL,\n"
        "    priority text NOT NULL DEFAULT 'normal'\n"
        ");",
        # No CHECK on priority (an older install's goes): PostgreSQL prepares a table's CHECK
        # expressions anew for every INSERT statement, and a trigger's background call is one
        # INSERT per row, where it cost about a third of the call. Only the gman_* functions
        # write here, each with its own word; the relay submits any other word at normal.
        f"ALTER TABLE {s}.gman_outbox DROP CONSTRAINT IF EXISTS gman_outbox_priority_check;",
        # Each session takes its ids 64 at a time: nextval then rarely touches the sequence's
        # page (about a tenth of a trigger's call). Ids stay unique and rise within a session;
        # a session that ends leaves a gap.
        f"ALTER SEQUENCE {s}.gman_outbox_id_seq CACHE 64;",
        f"REVOKE ALL ON TABLE {s}.gman_outbox FROM PUBLIC;",
        f"REVOKE ALL ON SEQUENCE {s}.gman_outbox_id_seq FROM PUBLIC;",
        f"CREATE TABLE IF NOT EXISTS {s}.gman_outbox_dead (\n"
        "    id bigint PRIMARY KEY,\n"
        "    created_at timestamptz NOT NULL,\n"
        "    function bytea NOT NULL,\n"
        "    unique_key bytea,\n"
        "    workload bytea NOT NULL,\n"
        "    priority text NOT NULL,\n"
        "    reason text NOT NULL,\n"
        "    dead_at timestamptz NOT NULL DEFAULT now()\n"
        ");",
        f"REVOKE ALL ON TABLE {s}.gman_outbox_dead FROM PUBLIC;",
        f"COMMENT ON TABLE {s}.gman_outbox_dead IS "
        f"{literal('gearsql: outbox rows no job server will take, and why')};",
        # Which database wrote the outbox (docs/reliability.md case 52): a restored copy has
        # the row of its original, so its relay stops before submitting the original's rows.
        f"CREATE TABLE IF NOT EXISTS {s}.gman_origin (\n"
        "    identity text NOT NULL,\n"
        "    description text NOT NULL,\n"
        "    recorded_at timestamptz NOT NULL DEFAULT now()\n"
        ");",
        f"REVOKE ALL ON TABLE {s}.gman_origin FROM PUBLIC;",
        f"COMMENT ON TABLE {s}.gman_origin IS "
        f"{literal('gearsql: the database this outbox belongs to (gearsql relay adopt)')};",
        f"INSERT INTO {s}.gman_origin (identity, description)\n"
        f"{PG_ORIGIN_QUERY}\n"
        f"  AND NOT EXISTS (SELECT 1 FROM {s}.gman_origin);",
        f"CREATE TABLE IF NOT EXISTS {s}.gman_outbox_sent (\n"
        "    id bigint PRIMARY KEY,\n"
        "    function bytea NOT NULL,\n"
        "    handle text NOT NULL,\n"
        "    server text NOT NULL,\n"
        "    sent_at timestamptz NOT NULL DEFAULT now()\n"
        ");",
        f"CREATE INDEX IF NOT EXISTS gman_outbox_sent_at ON {s}.gman_outbox_sent (sent_at);",
        f"REVOKE ALL ON TABLE {s}.gman_outbox_sent FROM PUBLIC;",
        f"COMMENT ON TABLE {s}.gman_outbox_sent IS "
        + literal(
            "gearsql: outbox rows the relay submitted, with the job server's handle "
            "(kept 24 hours, at most the last 100000 ids)"
        )
        + ";",
        f"CREATE TABLE IF NOT EXISTS {s}.gman_relay_contact (\n"
        "    relay text PRIMARY KEY,\n"
        "    last_contact timestamptz NOT NULL DEFAULT now(),\n"
        "    servers text NOT NULL\n"
        ");",
        f"REVOKE ALL ON TABLE {s}.gman_relay_contact FROM PUBLIC;",
        f"COMMENT ON TABLE {s}.gman_relay_contact IS "
        + literal("gearsql: each relay's last contact with this outbox (host:pid, servers)")
        + ";",
        # gman_servers_set(servers, function): the job servers of one function, for direct
        # calls and the relay; written only through that function (SECURITY DEFINER).
        f"CREATE TABLE IF NOT EXISTS {s}.gman_function_servers (\n"
        "    function text PRIMARY KEY,\n"
        "    servers text NOT NULL,\n"
        "    set_at timestamptz NOT NULL DEFAULT now()\n"
        ");",
        f"REVOKE ALL ON TABLE {s}.gman_function_servers FROM PUBLIC;",
        f"COMMENT ON TABLE {s}.gman_function_servers IS "
        + literal(
            "gearsql: job servers chosen per function with gman_servers_set(servers, function)"
        )
        + ";",
        f"CREATE OR REPLACE FUNCTION {s}._gman_outbox_state(p_id bigint)\n"
        "RETURNS TABLE (state text, detail text) LANGUAGE sql STABLE SECURITY DEFINER\n"
        "SET search_path = pg_catalog, pg_temp AS $$\n"
        "    SELECT 'pending', 'in the outbox since ' || o.created_at::text\n"
        f"    FROM {s}.gman_outbox AS o WHERE o.id = p_id\n"
        "    UNION ALL\n"
        "    SELECT 'dead',\n"
        "           d.reason || ' (moved to gman_outbox_dead at ' || d.dead_at::text || ')'\n"
        f"    FROM {s}.gman_outbox_dead AS d WHERE d.id = p_id\n"
        "    UNION ALL\n"
        "    SELECT 'submitted',\n"
        "           x.handle || ' (submitted to ' || x.server || ' by the relay at '\n"
        "           || x.sent_at::text || ')'\n"
        f"    FROM {s}.gman_outbox_sent AS x WHERE x.id = p_id\n$$;",
        drop_old_result(schema, "gman_pipeline", "last_relay_contact"),
        f"CREATE OR REPLACE FUNCTION {s}.gman_pipeline()\n"
        "RETURNS TABLE (backlog bigint, oldest_age interval, dead bigint, last_dead_at "
        "timestamptz, last_dead_reasons text[], last_relay_contact timestamptz)\n"
        "LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$\n"
        f"    SELECT (SELECT count(*) FROM {s}.gman_outbox),\n"
        f"           (SELECT now() - min(created_at) FROM {s}.gman_outbox),\n"
        f"           (SELECT count(*) FROM {s}.gman_outbox_dead),\n"
        f"           (SELECT max(dead_at) FROM {s}.gman_outbox_dead),\n"
        "           ARRAY(SELECT d.id || ': ' || d.reason\n"
        f"                 FROM {s}.gman_outbox_dead AS d ORDER BY d.dead_at DESC, d.id DESC\n"
        "                 LIMIT 5),\n"
        f"           (SELECT max(last_contact) FROM {s}.gman_relay_contact)\n$$;",
        f"COMMENT ON FUNCTION {s}.gman_pipeline() IS "
        + literal(
            "gearsql: rows waiting in the outbox (how many, the oldest age), dead "
            "letters (how many, the newest reasons) and the last relay contact"
        )
        + ";",
        f"CREATE OR REPLACE FUNCTION {s}.gman_relay_contacts()\n"
        "RETURNS TABLE (relay text, last_contact timestamptz, age interval, servers text)\n"
        "LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$\n"
        "    SELECT c.relay, c.last_contact, now() - c.last_contact, c.servers\n"
        f"    FROM {s}.gman_relay_contact AS c ORDER BY c.last_contact DESC\n$$;",
        f"COMMENT ON FUNCTION {s}.gman_relay_contacts() IS "
        + literal("gearsql: each relay's last contact with the outbox (host:pid), latest first")
        + ";",
        f"CREATE OR REPLACE FUNCTION {s}._gman_settings()\n"
        "RETURNS TABLE (name text, value text) LANGUAGE sql STABLE SECURITY DEFINER\n"
        "SET search_path = pg_catalog, pg_temp AS $$\n"
        f"    SELECT s.name, s.value FROM {s}.gman_settings AS s\n$$;",
        # Older installs wrote the outbox through this helper, which skipped the checks.
        f"DROP FUNCTION IF EXISTS {LEGACY_OUTBOX_INSERT.format(s=s)};",
        drop_old_result(schema, "gman_job_status", "state"),
    ]
    if plpython:
        parts += [
            # Older installs loaded the library through this function; the bodies do it now.
            f"DROP FUNCTION IF EXISTS {s}._gman_load();",
            now_sql(schema, package, load),
            *_pg_library.install_sql(schema, package, {**sources, "loader": read_udf("loader")}),
            _pg_library.compile_function_sql(
                schema, package, dollar(_pg_library.compile_body(schema, package))
            ),
            _pg_library.compile_call(schema),
        ]
    background = {name for name, _ in functions.BACKGROUND}
    for entry in functions.FUNCTIONS:
        if entry["name"] in background:
            parts += background_sql(schema, entry, plpython)
        else:
            parts += function_sql(schema, entry, package, load, plpython)
    parts.append(regrant(schema, "gman_job_status", "text"))
    parts.append(regrant(schema, "gman_pipeline", ""))
    for aggregate in functions.AGGREGATES:
        for params, _ in entry_signatures(aggregate):
            types = arg_types(params)
            parts.append(
                f"CREATE OR REPLACE AGGREGATE {s}.{ident(aggregate['name'])}({types}) (\n"
                f"    SFUNC = {s}.{ident(aggregate['step'])},\n"
                f"    STYPE = {aggregate['state']},\n"
                f"    FINALFUNC = {s}.{ident(aggregate['final'])},\n"
                "    FINALFUNC_MODIFY = READ_WRITE\n);"
            )
    # GRANT and REVOKE name aggregates as functions too.
    for _, signature in all_functions(schema, plpython):
        parts.append(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC;")
    if role is not None:
        r = ident(role)
        parts.append(f"GRANT USAGE ON SCHEMA {s} TO {r};")
        granted = granted_signatures(schema, plpython)
        for _, signature in all_functions(schema, plpython):
            if signature in granted:
                parts.append(f"GRANT EXECUTE ON FUNCTION {signature} TO {r};")
            else:  # an older install granted the internal helpers too
                parts.append(f"REVOKE ALL ON FUNCTION {signature} FROM {r};")
    parts.append("COMMIT;")
    return "\n\n".join(parts) + "\n"


def _file_header(schema: str) -> str:
    lines = [
        "-- gearsql: the gman_* Gearman functions for PostgreSQL (PL/Python, plpython3u).",
        "-- Generated by sql/generate.py from udf/ and the gearsql codec; do not edit by hand.",
        "--",
        f"-- Installs into schema {schema!r}; run as a superuser (plpython3u is untrusted):",
        "--     psql -v ON_ERROR_STOP=1 -f sql/postgres/install.sql DBNAME",
        "-- Another schema, a role to grant EXECUTE to, allowed job servers:",
        "--     gearsql install postgres --dsn DSN --schema S --role R --servers HOST:PORT",
        "--     gearsql install postgres --schema S --role R --print-sql > install.sql",
        "-- Then grant the functions to the role that calls them, for example:",
        f"--     GRANT USAGE ON SCHEMA {schema} TO app;",
        f"--     GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO app;",
        "--",
        f"-- Settings ({schema}.gman_settings; only the owner changes them, e.g.",
        f"--     UPDATE {schema}.gman_settings SET value = '10.0.0.5:4730' WHERE name = 'servers';",
        "-- ):",
    ]
    for name, (default, meaning) in SETTINGS.items():
        lines.append(f"--   {name} (default {default}): {meaning}")
    return "\n".join(lines)


def uninstall_sql(schema: str = DEFAULT_SCHEMA, force: bool = False, for_file: bool = False) -> str:
    """The SQL that removes everything :func:`install_sql` created. Unless ``force``, it refuses
    (raises an error, changes nothing) while the outbox holds rows not yet relayed. The schema
    itself is dropped when it is left empty (never ``public``)."""
    check_identifier(schema, "schema")
    s = ident(schema)
    parts: list[str] = []
    if for_file:
        parts.append(
            "-- gearsql: remove the gman_* functions, settings and outbox from schema "
            f"{schema!r}.\n"
            "-- Generated by sql/generate.py; do not edit by hand. Refuses while the outbox\n"
            "-- holds rows the relay has not submitted (gearsql uninstall postgres --force "
            "drops them)."
        )
    parts.append("BEGIN;")
    if not force:
        parts.append(
            "DO $$\nBEGIN\n"
            f"    IF to_regclass({literal(s + '.gman_outbox')}) IS NOT NULL\n"
            f"       AND EXISTS (SELECT 1 FROM {s}.gman_outbox) THEN\n"
            f"        RAISE EXCEPTION 'gearsql: %.gman_outbox still holds jobs not yet relayed',"
            f" {literal(schema)}\n"
            "            USING HINT = 'let the relay drain it, or uninstall with --force';\n"
            "    END IF;\nEND\n$$;"
        )
    for kind, signature in reversed(all_functions(schema)):
        parts.append(f"DROP {kind} IF EXISTS {signature};")
    parts.append(f"DROP FUNCTION IF EXISTS {LEGACY_OUTBOX_INSERT.format(s=s)};")
    parts.append(f"DROP FUNCTION IF EXISTS {s}._gman_load();")  # an older install's
    parts += [
        _pg_library.uninstall_sql(schema),
        f"DROP TABLE IF EXISTS {s}.gman_function_servers;",
        f"DROP TABLE IF EXISTS {s}.gman_origin;",
        f"DROP TABLE IF EXISTS {s}.gman_relay_contact;",
        f"DROP TABLE IF EXISTS {s}.gman_outbox_sent;",
        f"DROP TABLE IF EXISTS {s}.gman_outbox_dead;",
        f"DROP TABLE IF EXISTS {s}.gman_outbox;",
        f"DROP TABLE IF EXISTS {s}.gman_settings;",  # and its trigger
        f"DROP FUNCTION IF EXISTS {s}._gman_publish_settings();",
    ]
    if schema != "public":
        parts.append(
            "DO $$\nBEGIN\n"
            "    IF NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace\n"
            f"                   WHERE n.nspname = {literal(schema)})\n"
            "       AND NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace\n"
            f"                       WHERE n.nspname = {literal(schema)})\n"
            "       AND NOT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n "
            "ON n.oid = t.typnamespace\n"
            f"                       WHERE n.nspname = {literal(schema)}) THEN\n"
            f"        DROP SCHEMA IF EXISTS {s};\n"
            "    END IF;\nEND\n$$;"
        )
    parts.append("COMMIT;")
    return "\n\n".join(parts) + "\n"


#: What an install or uninstall needs, said when PostgreSQL refuses it for lack of privilege.
_PRIVILEGE_NEEDED = {
    "install": "installing needs CREATE on the database (for the schema), and the PL/Python "
    "functions need a PostgreSQL superuser (plpython3u is an untrusted language, in which only a "
    "superuser may create the extension and functions; owning the database is not enough); "
    "without a superuser, gearsql installs without PL/Python (background calls only)",
    "uninstall": "removing needs a superuser or the role that installed the functions (the "
    "owner of the schema and its objects)",
}


def check_dsn(dsn: str) -> None:
    """ValueError unless ``dsn`` is a PostgreSQL URL (``postgresql://`` or ``postgres://``) or a
    ``key=value`` connection string, the two forms libpq takes."""
    if "://" in dsn and urlsplit(dsn).scheme not in ("postgresql", "postgres"):
        raise ValueError(
            f"not a PostgreSQL DSN: {urlsplit(dsn).scheme}://...; give "
            "postgresql://user@host:5432/database (or 'host=... dbname=...')"
        )


def _run(dsn: str, sql: str, action: str) -> None:
    check_dsn(dsn)
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("psycopg is needed: pip install 'gearsql[postgres]'") from exc
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute(sql.encode("utf-8"))
        except psycopg.errors.InsufficientPrivilege as exc:
            user = conn.info.user
            reason = str(exc).strip().splitlines()[0]
            raise PermissionError(f"{reason} (as {user}): {_PRIVILEGE_NEEDED[action]}") from exc


def install(
    dsn: str,
    schema: str = DEFAULT_SCHEMA,
    role: str | None = None,
    servers: str | None = None,
    background_mode: str | None = None,
    timeout: str | None = None,
    plpython: bool | None = None,
    tls: Mapping[str, str] | None = None,
) -> bool:
    """Install or upgrade the functions over a connection to ``dsn``, in one transaction, and
    say whether PL/Python was used. ``plpython`` None: use it when the server allows
    (:func:`plpython_available`). Raises ValueError for bad names or a DSN that is not
    PostgreSQL's, PermissionError when the role may not install (with PL/Python it must be a
    superuser), and ``psycopg.Error`` when the database refuses for another reason."""
    if plpython is None:
        plpython = plpython_available(dsn)
    _run(
        dsn,
        install_sql(schema, role, servers, background_mode, timeout, plpython=plpython, tls=tls),
        "install",
    )
    return plpython


#: Whether this connection can use plpython3u: the role is a superuser (only a superuser may
#: create functions in an untrusted language) and the extension is there or the server offers it.
_PLPYTHON_QUERY = (
    "SELECT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)"
    " AND (EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'plpython3u')"
    "      OR EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions"
    "                 WHERE name = 'plpython3u'))"
)


def plpython_available(dsn: str) -> bool:
    """Whether the install over ``dsn`` can use PL/Python (see ``_PLPYTHON_QUERY``)."""
    check_dsn(dsn)
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(_PLPYTHON_QUERY).fetchone()
    return bool(row and row[0])


def uninstall(dsn: str, schema: str = DEFAULT_SCHEMA, force: bool = False) -> None:
    """Remove the functions, settings and outbox from ``schema`` (see :func:`uninstall_sql`).
    Raises as :func:`install` does."""
    _run(dsn, uninstall_sql(schema, force), "uninstall")
