"""The gman_* functions in PostgreSQL: the install and uninstall SQL, and running them.

Everything goes over an ordinary connection as SQL: the PL/Python bodies from ``udf/functions.py``
and, inside ``_gman_load()``, the library's source text (the gearsql codec, the sans-IO client
connection and ``udf/gman.py``), which the first call of a session loads into the backend's
Python. Nothing is placed on the database host.

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
- the functions and the ``gman_sum`` aggregate; EXECUTE revoked from PUBLIC and granted to
  ``--role``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from gearsql._sqlcommon import (
    BACKGROUND_MODES,
    NOTIFY_CHANNEL,
    OUTBOX_COLUMNS,
    SETTING_DEFAULTS,
    check_identifier,
)
from gearsql.bridges import library_package, library_sources, load_library, udf_module
from gearsql.protocol import MAX_FUNCTION_NAME, MAX_UNIQUE

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
#: SQLSTATEs of the gman_* functions (docs/design.md has the table; udf/gman.py raises the same).
BAD_ARGUMENT = "22023"  # invalid_parameter_value
BAD_SETTING = "GM006"
NO_PLPYTHON = "0A000"  # feature_not_supported
_LEGACY_OUTBOX_INSERT = "{s}._gman_outbox_insert(bytea, bytea, bytea, text)"
_DOLLAR_TAG = "$gearsql$"

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
}


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _dollar(body: str) -> str:
    if _DOLLAR_TAG in body:
        raise RuntimeError(f"a function body contains {_DOLLAR_TAG}")
    return f"{_DOLLAR_TAG}\n{body}{_DOLLAR_TAG}"


def _signatures(entry: dict[str, Any]) -> list[tuple[list[tuple[str, str]], str]]:
    """(params with SQL types, return type) of each overload: ``payload`` becomes text and bytea."""
    params = entry["params"]
    kinds = ["text", "bytea"] if any(kind == "payload" for _, kind in params) else ["text"]
    overloads = []
    for kind in kinds:
        typed = [(name, kind if sql == "payload" else sql) for name, sql in params]
        returns = kind if entry["returns"] == "payload" else entry["returns"]
        overloads.append((typed, returns))
    return overloads


def _arg_types(params: list[tuple[str, str]]) -> str:
    return ", ".join(sql for _, sql in params)


def _loader_body(package: str, sources: dict[str, str]) -> str:
    return (
        f"{_read_udf('loader')}\n"
        f"SOURCES = {sources!r}\n"
        f"GD[{package!r}] = load_package({package!r}, SOURCES).gman\n"
    )


def _read_udf(name: str) -> str:
    from gearsql.bridges._udf_sources import UDF_SOURCES

    return UDF_SOURCES[name]


#: A PL/pgSQL exception handler that re-raises the error of a PL/Python body with its SQLSTATE,
#: message, detail and hint, but without PL/Python's "plpy.Error: " prefix and traceback.
#: (QUERY_CANCELED is not among OTHERS: a cancel goes through as it is.)
_RERAISE = (
    "EXCEPTION WHEN OTHERS THEN\n"
    "    GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,\n"
    "        e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;\n"
    "    e_message := pg_catalog.regexp_replace(e_message, '^plpy\\.[A-Za-z]+: ', '');\n"
    "    IF e_detail OPERATOR(pg_catalog.<>) '' AND e_hint OPERATOR(pg_catalog.<>) '' THEN\n"
    "        RAISE EXCEPTION USING ERRCODE = e_code, MESSAGE = e_message,\n"
    "            DETAIL = e_detail, HINT = e_hint;\n"
    "    ELSIF e_detail OPERATOR(pg_catalog.<>) '' THEN\n"
    "        RAISE EXCEPTION USING ERRCODE = e_code, MESSAGE = e_message, DETAIL = e_detail;\n"
    "    ELSIF e_hint OPERATOR(pg_catalog.<>) '' THEN\n"
    "        RAISE EXCEPTION USING ERRCODE = e_code, MESSAGE = e_message, HINT = e_hint;\n"
    "    ELSE\n"
    "        RAISE EXCEPTION USING ERRCODE = e_code, MESSAGE = e_message;\n"
    "    END IF;\n"
)
_ERROR_VARIABLES = "    e_code text;\n    e_message text;\n    e_detail text;\n    e_hint text;\n"


def _function_sql(
    schema: str, entry: dict[str, Any], key: str, load: str, plpython: bool = True
) -> list[str]:
    """``entry`` as SQL functions, one per overload.

    With PL/Python, a public function is PL/pgSQL (SECURITY DEFINER, fixed search_path) around
    ``_gman_py_<name>``, the PL/Python body, which only the installing role may execute: the
    wrapper re-raises an error with its SQLSTATE, message, detail and hint, minus PL/Python's
    ``plpy.Error:`` prefix and its Python traceback in CONTEXT. The same goes for the
    aggregate's internal functions.

    Without PL/Python, a PL/pgSQL function of the same signature that says why it cannot run
    (SQLSTATE 0A000, feature_not_supported)."""
    functions = udf_module("functions")
    s = _ident(schema)
    python_body = (
        f"SCHEMA = {schema!r}\n"
        + functions.PREAMBLE.format(key=key, load=load)
        + entry["body"]
        + "\n"
    )
    statements = []
    for params, returns in _signatures(entry):
        args = ", ".join(f"{_ident(name)} {sql}" for name, sql in params)
        names = ", ".join(_ident(name) for name, _ in params)
        if returns == "status":
            args += (
                ", OUT known boolean, OUT running boolean, OUT numerator bigint,"
                " OUT denominator bigint, OUT state text, OUT detail text"
            )
            result = "record"
        else:
            result = returns
        public = f"{s}.{_ident(entry['name'])}({args})"
        if not plpython:
            body = (
                "BEGIN\n    "
                + _raise(
                    f"{entry['name']} needs PL/Python (plpython3u), and gearsql was installed "
                    "without it in this database",
                    NO_PLPYTHON,
                    hint="the gman_do*_background functions work (transactional mode: the relay "
                    "submits the jobs); a superuser can install PL/Python and run gearsql install "
                    "postgres again",
                )
                + "\nEND\n"
            )
            statements.append(
                f"CREATE OR REPLACE FUNCTION {public}\n"
                f"RETURNS {result} LANGUAGE plpgsql VOLATILE AS {_dollar(body)};"
            )
            continue
        inner = f"{s}.{_ident('_gman_py_' + entry['name'])}"
        statements.append(
            f"CREATE OR REPLACE FUNCTION {inner}({args})\n"
            f"RETURNS {result} LANGUAGE plpython3u VOLATILE AS {_dollar(python_body)};"
        )
        if returns == "status":
            call = (
                "SELECT r.known, r.running, r.numerator, r.denominator, r.state, r.detail\n"
                "      INTO known, running, numerator, denominator, state, detail\n"
                f"      FROM {inner}({names}) AS r;\n    RETURN;"
            )
        else:
            call = f"RETURN {inner}({names});"
        body = "DECLARE\n" + _ERROR_VARIABLES + f"BEGIN\n    {call}\n" + _RERAISE + "END\n"
        statements.append(
            f"CREATE OR REPLACE FUNCTION {public}\nRETURNS {result} LANGUAGE plpgsql VOLATILE "
            f"SECURITY DEFINER\nSET search_path = pg_catalog, pg_temp AS {_dollar(body)};"
        )
    return statements


def _python_bodies(schema: str) -> list[str]:
    """The signatures of the ``_gman_py_*`` functions (PL/Python bodies of public functions)."""
    functions = udf_module("functions")
    background = {name for name, _ in functions.BACKGROUND}
    return [
        f"{_ident(schema)}.{_ident('_gman_py_' + entry['name'])}({_arg_types(params)})"
        for entry in functions.FUNCTIONS
        if entry["name"] not in background
        for params, _ in _signatures(entry)
    ]


#: The PL/Python function the background calls go through in immediate mode (not granted: the
#: public functions, SECURITY DEFINER, call it as the installing role).
_NOW_PARAMS = [
    ("p_name", "text"),
    ("p_priority", "text"),
    ("p_function", "text"),
    ("p_workload", "bytea"),
    ("p_unique", "text"),
]


def _now_sql(schema: str, key: str, load: str) -> str:
    functions = udf_module("functions")
    body = (
        f"SCHEMA = {schema!r}\n"
        + functions.PREAMBLE.format(key=key, load=load)
        + "return lib.submit_background(plpy, GD, SCHEMA, p_name, p_priority, p_function, "
        "p_workload, p_unique)\n"
    )
    args = ", ".join(f"{name} {sql}" for name, sql in _NOW_PARAMS)
    return (
        f"CREATE OR REPLACE FUNCTION {_ident(schema)}._gman_background_now({args})\n"
        f"RETURNS text LANGUAGE plpython3u VOLATILE AS {_dollar(body)};"
    )


def _now_signature(schema: str) -> str:
    return f"{_ident(schema)}._gman_background_now({_arg_types(_NOW_PARAMS)})"


def _raise(message: str, code: str, *args: str, hint: str | None = None) -> str:
    """A PL/pgSQL RAISE of ``message`` (``%`` for each of ``args``) with SQLSTATE ``code``."""
    using = f"ERRCODE = {_literal(code)}"
    if hint is not None:
        using += f", HINT = {_literal(hint)}"
    values = "".join(f", {arg}" for arg in args)
    return f"RAISE EXCEPTION {_literal(message)}{values} USING {using};"


def _background_sql(schema: str, entry: dict[str, Any], plpython: bool) -> list[str]:
    """``gman_do*_background`` in PL/pgSQL: in transactional mode (the default) a call only
    checks its arguments and writes an outbox row, so it stays about as cheap as an INSERT (a
    trigger may call it for every row); immediate mode hands over to PL/Python. SECURITY
    DEFINER: the caller needs EXECUTE on this function only, not on the tables or helpers. It has
    no ``SET search_path`` (that setting, switched on every call, doubled a trigger's cost):
    instead every table, function, type and operator in the body is named with its schema
    (``OPERATOR(pg_catalog.=)``), so a caller's search_path cannot substitute its own.

    The checks and their messages are those of ``udf/gman.py`` (``_function``, ``_unique``,
    ``_workload``, ``_check_size``). PostgreSQL text cannot hold NUL, so there is no NUL check.
    pg_notify sends one notification per transaction however many rows it writes: PostgreSQL
    folds a channel's identical payloads within a transaction into one."""
    s = _ident(schema)
    name = entry["name"]
    priority = dict(udf_module("functions").BACKGROUND)[name]
    has_unique = len(entry["params"]) == 3
    where = f"(table {schema}.gman_settings)"
    statements = []
    for params, _returns in _signatures(entry):
        binary = params[1][1] == "bytea"
        args = ", ".join(f"{_ident(p)} {sql}" for p, sql in params)
        data = "workload" if binary else "pg_catalog.convert_to(workload, 'UTF8')"
        unique = '"unique"' if has_unique else "NULL::text"
        if plpython:
            immediate = (
                f"BEGIN\n            RETURN {s}._gman_background_now({_literal(name)}, "
                f"{_literal(priority)}, function, raw, {unique});\n"
                + _RERAISE.replace("\n", "\n        ")
                + "END;"
            )
        else:
            immediate = _raise(
                f"{name}: background_mode is 'immediate', which needs PL/Python (plpython3u), "
                "and gearsql was installed without it in this database",
                NO_PLPYTHON,
                hint="set background_mode to 'transactional' (the relay submits the jobs)",
            )
        lines = [
            "DECLARE",
            "    raw pg_catalog.bytea;",
            "    mode pg_catalog.text;",
            "    limit_text pg_catalog.text;",
            "    size_limit pg_catalog.int8;",
            "    new_id pg_catalog.int8;",
            _ERROR_VARIABLES.replace(" text;", " pg_catalog.text;").rstrip("\n"),
            "BEGIN",
            "    IF function IS NULL THEN",
            "        " + _raise(f"{name}: the function name is NULL", BAD_ARGUMENT),
            "    END IF;",
            "    IF pg_catalog.octet_length(function) OPERATOR(pg_catalog.>) "
            f"{MAX_FUNCTION_NAME} THEN",
            "        "
            + _raise(
                f"{name}: the function name is longer than {MAX_FUNCTION_NAME} bytes (% bytes)",
                BAD_ARGUMENT,
                "pg_catalog.octet_length(function)",
            ),
            "    END IF;",
            "    IF function OPERATOR(pg_catalog.=) '' THEN",
            "        " + _raise(f"{name}: the function name is empty", BAD_ARGUMENT),
            "    END IF;",
        ]
        if has_unique:
            lines += [
                '    IF pg_catalog.octet_length("unique") OPERATOR(pg_catalog.>) '
                f"{MAX_UNIQUE} THEN",
                "        "
                + _raise(
                    f"{name}: the unique id is longer than {MAX_UNIQUE} bytes (% bytes)",
                    BAD_ARGUMENT,
                    'pg_catalog.octet_length("unique")',
                ),
                "    END IF;",
            ]
        lines += [
            "    IF workload IS NULL THEN",
            "        " + _raise(f"{name}: the workload is NULL", BAD_ARGUMENT),
            "    END IF;",
            f"    raw := {data};",
            "    SELECT pg_catalog.max(value) FILTER (WHERE name OPERATOR(pg_catalog.=) "
            "'background_mode'),",
            "           pg_catalog.max(value) FILTER (WHERE name OPERATOR(pg_catalog.=) "
            "'max_workload')",
            f"      INTO mode, limit_text FROM {s}.gman_settings",
            "     WHERE name OPERATOR(pg_catalog.=) ANY "
            "('{background_mode,max_workload}'::pg_catalog.text[]);",
            "    mode := coalesce(mode, 'transactional');",
            "    limit_text := pg_catalog.btrim(coalesce(limit_text, ''));",
            "    IF limit_text OPERATOR(pg_catalog.=) '' THEN",
            "        limit_text := '0';",
            "    END IF;",
            "    IF limit_text OPERATOR(pg_catalog.!~) '^[0-9]{1,18}$' THEN",
            "        "
            + _raise(
                "gearsql: bad setting: max_workload=%",
                BAD_SETTING,
                "pg_catalog.quote_literal(limit_text)",
                hint=f"an administrator fixes it {where}",
            ),
            "    END IF;",
            "    size_limit := limit_text::pg_catalog.int8;",
            "    IF size_limit OPERATOR(pg_catalog.>) 0",
            "       AND pg_catalog.octet_length(raw) OPERATOR(pg_catalog.>) size_limit THEN",
            "        "
            + _raise(
                f"{name}: the workload is % bytes, more than the max_workload setting (% bytes)",
                BAD_ARGUMENT,
                "pg_catalog.octet_length(raw)",
                "size_limit",
                hint="a job server refuses a packet above its maximum size; pass a reference "
                "to the data (a key, a path) instead, or an administrator raises max_workload "
                f"{where} and the job server's limit together",
            ),
            "    END IF;",
            "    IF mode OPERATOR(pg_catalog.=) 'immediate' THEN",
            "        " + immediate,
            "    ELSIF mode OPERATOR(pg_catalog.<>) 'transactional' THEN",
            "        "
            + _raise(
                "gearsql: bad setting background_mode=%",
                BAD_SETTING,
                "pg_catalog.quote_literal(mode)",
                hint="it is 'transactional' or 'immediate'",
            ),
            "    END IF;",
            f"    INSERT INTO {s}.gman_outbox ({', '.join(OUTBOX_COLUMNS[1:])})",
            f"    VALUES (pg_catalog.convert_to(function, 'UTF8'), "
            f"pg_catalog.convert_to({unique}, 'UTF8'), raw, {_literal(priority)})",
            "    RETURNING id INTO new_id;",
            f"    PERFORM pg_catalog.pg_notify({_literal(NOTIFY_CHANNEL)}, {_literal(schema)});",
            "    RETURN 'outbox:' OPERATOR(pg_catalog.||) new_id::pg_catalog.text;",
            "END",
        ]
        statements.append(
            f"CREATE OR REPLACE FUNCTION {s}.{_ident(name)}({args})\n"
            "RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS "
            f"{_dollar(chr(10).join(lines) + chr(10))};"
        )
    return statements


def _drop_old_job_status(schema: str) -> str:
    """A DO block that drops a ``gman_job_status`` of an older install, whose result had no
    ``state`` and ``detail`` (CREATE OR REPLACE cannot change a result type), remembering who
    was granted EXECUTE on it for :func:`_regrant_job_status`."""
    return (
        "DO $do$\nDECLARE\n    old record;\n    grantees text := '';\nBEGIN\n"
        "    FOR old IN SELECT p.oid::regprocedure AS signature, p.proacl, p.proowner\n"
        "               FROM pg_proc AS p\n"
        f"               WHERE p.pronamespace = {_literal(schema)}::regnamespace\n"
        "                 AND p.proname = 'gman_job_status'\n"
        "                 AND NOT 'state' = ANY(coalesce(p.proargnames, '{}'::text[]))\n"
        "    LOOP\n"
        "        SELECT grantees\n"
        "               || coalesce(string_agg(a.grantee::regrole::text || E'\\n', ''), '')\n"
        "          INTO grantees FROM aclexplode(old.proacl) AS a\n"
        "         WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> 0\n"
        "           AND a.grantee <> old.proowner;\n"
        "        EXECUTE format('DROP FUNCTION %s', old.signature);\n"
        "    END LOOP;\n"
        "    PERFORM set_config('gearsql.regrant', grantees, true);\nEND\n$do$;"
    )


def _regrant_job_status(schema: str) -> str:
    return (
        "DO $do$\nDECLARE\n    grantee text;\nBEGIN\n"
        "    FOREACH grantee IN ARRAY string_to_array(\n"
        "        rtrim(coalesce(current_setting('gearsql.regrant', true), ''), E'\\n'), E'\\n')\n"
        "    LOOP\n"
        "        EXECUTE format('GRANT EXECUTE ON FUNCTION %s.gman_job_status(text) TO %s',\n"
        f"                       {_literal(_ident(schema))}, grantee);\n"
        "    END LOOP;\nEND\n$do$;"
    )


def _all_functions(schema: str, plpython: bool = True) -> list[tuple[str, str]]:
    """(kind, qualified signature) of every function and aggregate, for REVOKE and DROP (those
    in PL/Python only with ``plpython``)."""
    functions = udf_module("functions")
    objects = [("FUNCTION", f"{_ident(schema)}._gman_settings()")]
    if plpython:
        objects += [
            ("FUNCTION", _now_signature(schema)),
            ("FUNCTION", f"{_ident(schema)}._gman_load()"),
            *(("FUNCTION", signature) for signature in _python_bodies(schema)),
        ]
    objects += [
        ("FUNCTION", f"{_ident(schema)}._gman_outbox_state(bigint)"),
        ("FUNCTION", f"{_ident(schema)}.{_ident('gman_pipeline')}()"),
    ]
    for entry in functions.FUNCTIONS:
        for params, _ in _signatures(entry):
            objects.append(
                ("FUNCTION", f"{_ident(schema)}.{_ident(entry['name'])}({_arg_types(params)})")
            )
    for aggregate in functions.AGGREGATES:
        for params, _ in _signatures(aggregate):
            objects.append(
                ("AGGREGATE", f"{_ident(schema)}.{_ident(aggregate['name'])}({_arg_types(params)})")
            )
    return objects


def _granted(schema: str, plpython: bool) -> list[str]:
    """What ``--role`` may execute: the public gman_* functions, and the aggregate's internal
    functions (PostgreSQL checks EXECUTE on those for whoever calls gman_sum)."""
    functions = udf_module("functions")
    internal = {entry["name"] for entry in functions.FUNCTIONS if entry.get("internal")}
    prefix = f"{_ident(schema)}."
    return [
        signature
        for _, signature in _all_functions(schema, plpython)
        if signature.startswith(prefix + '"gman_')
        or any(signature.startswith(f"{prefix}{_ident(name)}(") for name in internal)
    ]


def install_sql(
    schema: str = DEFAULT_SCHEMA,
    role: str | None = None,
    servers: str | None = None,
    background_mode: str | None = None,
    timeout: str | None = None,
    for_file: bool = False,
    plpython: bool = True,
) -> str:
    """The SQL that installs (or upgrades) the functions into ``schema``.

    Settings already in the schema are kept, except those given here (``timeout``: seconds a
    foreground gman_do* waits for its result). ``role`` gets USAGE on the schema and EXECUTE on
    the functions; PUBLIC gets nothing. Raises ValueError for a schema or role that is not a
    plain identifier, a bad background mode or a timeout that is not 0 < seconds <= 86400.

    Without ``plpython`` (managed services that offer no untrusted language), the background
    functions are installed as usual (transactional mode, PL/pgSQL) and every other function
    raises SQLSTATE 0A000 saying it needs PL/Python; no superuser is needed then.
    """
    check_identifier(schema, "schema")
    if role is not None:
        check_identifier(role, "role")
    if background_mode is not None and background_mode not in BACKGROUND_MODES:
        raise ValueError("background_mode is 'transactional' or 'immediate'")
    if servers is not None:
        load_library().parse_servers(servers)  # ValueError names a bad entry
    if timeout is not None:
        _check_seconds("timeout", timeout)
    functions = udf_module("functions")
    sources = library_sources()
    package = library_package(sources)
    s = _ident(schema)
    load = f"SELECT {s}._gman_load()"
    parts: list[str] = []
    if for_file:
        parts.append(_file_header(schema))
    parts += [
        "BEGIN;",
        *(["CREATE EXTENSION IF NOT EXISTS plpython3u;"] if plpython else []),
        f"CREATE SCHEMA IF NOT EXISTS {s};",
        f"CREATE TABLE IF NOT EXISTS {s}.gman_settings (\n"
        f"    name text PRIMARY KEY CHECK (name IN ({', '.join(map(_literal, SETTINGS))})),\n"
        "    value text NOT NULL\n);",
        f"REVOKE ALL ON TABLE {s}.gman_settings FROM PUBLIC;",
    ]
    # An install made before a setting existed has a CHECK without its name: replace it.
    names = ", ".join(map(_literal, SETTINGS))
    parts += [
        f"ALTER TABLE {s}.gman_settings DROP CONSTRAINT IF EXISTS gman_settings_name_check;",
        f"ALTER TABLE {s}.gman_settings ADD CONSTRAINT gman_settings_name_check "
        f"CHECK (name IN ({names}));",
        f"INSERT INTO {s}.gman_settings (name, value) VALUES\n"
        + ",\n".join(
            f"    ({_literal(name)}, {_literal(default)})"
            for name, (default, _) in SETTINGS.items()
        )
        + "\nON CONFLICT (name) DO NOTHING;",
    ]
    chosen = {"servers": servers, "background_mode": background_mode, "timeout": timeout}
    for name, value in chosen.items():
        if value is not None:
            parts.append(
                f"UPDATE {s}.gman_settings SET value = {_literal(value)} "
                f"WHERE name = {_literal(name)};"
            )
    parts.append(
        f"COMMENT ON TABLE {s}.gman_settings IS "
        f"{_literal('gearsql settings; only the installing role changes them')};"
    )
    parts += [
        f"CREATE TABLE IF NOT EXISTS {s}.gman_outbox (\n"
        "    id bigserial PRIMARY KEY,\n"
        "    created_at timestamptz NOT NULL DEFAULT now(),\n"
        "    function bytea NOT NULL,\n"
        "    unique_key bytea,\n"
        "    workload bytea NOT NULL,\n"
        "    priority text NOT NULL DEFAULT 'normal'\n"
        "        CHECK (priority IN ('high', 'normal', 'low'))\n"
        ");",
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
        f"{_literal('gearsql: outbox rows no job server will take, and why')};",
        f"CREATE OR REPLACE FUNCTION {s}._gman_outbox_state(p_id bigint)\n"
        "RETURNS TABLE (state text, detail text) LANGUAGE sql STABLE SECURITY DEFINER\n"
        "SET search_path = pg_catalog, pg_temp AS $$\n"
        "    SELECT 'pending', 'in the outbox since ' || o.created_at::text\n"
        f"    FROM {s}.gman_outbox AS o WHERE o.id = p_id\n"
        "    UNION ALL\n"
        "    SELECT 'dead',\n"
        "           d.reason || ' (moved to gman_outbox_dead at ' || d.dead_at::text || ')'\n"
        f"    FROM {s}.gman_outbox_dead AS d WHERE d.id = p_id\n$$;",
        f"CREATE OR REPLACE FUNCTION {s}.gman_pipeline()\n"
        "RETURNS TABLE (backlog bigint, oldest_age interval, dead bigint, last_dead_at "
        "timestamptz, last_dead_reasons text[])\n"
        "LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$\n"
        f"    SELECT (SELECT count(*) FROM {s}.gman_outbox),\n"
        f"           (SELECT now() - min(created_at) FROM {s}.gman_outbox),\n"
        f"           (SELECT count(*) FROM {s}.gman_outbox_dead),\n"
        f"           (SELECT max(dead_at) FROM {s}.gman_outbox_dead),\n"
        "           ARRAY(SELECT d.id || ': ' || d.reason\n"
        f"                 FROM {s}.gman_outbox_dead AS d ORDER BY d.dead_at DESC, d.id DESC\n"
        "                 LIMIT 5)\n$$;",
        f"COMMENT ON FUNCTION {s}.gman_pipeline() IS "
        + _literal(
            "gearsql: rows waiting in the outbox (how many, the oldest age) and dead "
            "letters (how many, the newest reasons)"
        )
        + ";",
        f"CREATE OR REPLACE FUNCTION {s}._gman_settings()\n"
        "RETURNS TABLE (name text, value text) LANGUAGE sql STABLE SECURITY DEFINER\n"
        "SET search_path = pg_catalog, pg_temp AS $$\n"
        f"    SELECT s.name, s.value FROM {s}.gman_settings AS s\n$$;",
        # Older installs wrote the outbox through this helper, which skipped the checks.
        f"DROP FUNCTION IF EXISTS {_LEGACY_OUTBOX_INSERT.format(s=s)};",
        _drop_old_job_status(schema),
    ]
    if plpython:
        parts += [
            f"CREATE OR REPLACE FUNCTION {s}._gman_load()\n"
            "RETURNS void LANGUAGE plpython3u VOLATILE AS "
            f"{_dollar(_loader_body(package, sources))};",
            _now_sql(schema, package, load),
        ]
    background = {name for name, _ in functions.BACKGROUND}
    for entry in functions.FUNCTIONS:
        if entry["name"] in background:
            parts += _background_sql(schema, entry, plpython)
        else:
            parts += _function_sql(schema, entry, package, load, plpython)
    parts.append(_regrant_job_status(schema))
    for aggregate in functions.AGGREGATES:
        for params, _ in _signatures(aggregate):
            types = _arg_types(params)
            parts.append(
                f"CREATE OR REPLACE AGGREGATE {s}.{_ident(aggregate['name'])}({types}) (\n"
                f"    SFUNC = {s}.{_ident(aggregate['step'])},\n"
                f"    STYPE = {aggregate['state']},\n"
                f"    FINALFUNC = {s}.{_ident(aggregate['final'])},\n"
                "    FINALFUNC_MODIFY = READ_WRITE\n);"
            )
    # GRANT and REVOKE name aggregates as functions too.
    for _, signature in _all_functions(schema, plpython):
        parts.append(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC;")
    if role is not None:
        r = _ident(role)
        parts.append(f"GRANT USAGE ON SCHEMA {s} TO {r};")
        granted = _granted(schema, plpython)
        for _, signature in _all_functions(schema, plpython):
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
    s = _ident(schema)
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
            f"    IF to_regclass({_literal(s + '.gman_outbox')}) IS NOT NULL\n"
            f"       AND EXISTS (SELECT 1 FROM {s}.gman_outbox) THEN\n"
            f"        RAISE EXCEPTION 'gearsql: %.gman_outbox still holds jobs not yet relayed',"
            f" {_literal(schema)}\n"
            "            USING HINT = 'let the relay drain it, or uninstall with --force';\n"
            "    END IF;\nEND\n$$;"
        )
    for kind, signature in reversed(_all_functions(schema)):
        parts.append(f"DROP {kind} IF EXISTS {signature};")
    parts.append(f"DROP FUNCTION IF EXISTS {_LEGACY_OUTBOX_INSERT.format(s=s)};")
    parts += [
        f"DROP TABLE IF EXISTS {s}.gman_outbox_dead;",
        f"DROP TABLE IF EXISTS {s}.gman_outbox;",
        f"DROP TABLE IF EXISTS {s}.gman_settings;",
    ]
    if schema != "public":
        parts.append(
            "DO $$\nBEGIN\n"
            "    IF NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace\n"
            f"                   WHERE n.nspname = {_literal(schema)})\n"
            "       AND NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace\n"
            f"                       WHERE n.nspname = {_literal(schema)})\n"
            "       AND NOT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n "
            "ON n.oid = t.typnamespace\n"
            f"                       WHERE n.nspname = {_literal(schema)}) THEN\n"
            f"        DROP SCHEMA IF EXISTS {s};\n"
            "    END IF;\nEND\n$$;"
        )
    parts.append("COMMIT;")
    return "\n\n".join(parts) + "\n"


def _check_seconds(name: str, value: str) -> None:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {value!r}") from None
    if not 0 < seconds <= 86400:
        raise ValueError(f"{name} must be more than 0 and at most 86400 seconds")


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
        install_sql(schema, role, servers, background_mode, timeout, plpython=plpython),
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
