"""The CREATE statements of PostgreSQL's gman_* functions, for the install in
:mod:`gearsql.bridges.postgres`: the PL/Python bodies (``udf/functions.py``) wrapped in PL/pgSQL
that re-raises their errors with gearsql's SQLSTATEs, the transactional background functions in
PL/pgSQL alone, and the list of every function with its signature (what is granted, dropped
and checked). The settings, the install and uninstall scripts and running them stay there.
"""

from __future__ import annotations

import textwrap
from typing import Any

from gearsql._sqlcommon import NOTIFY_CHANNEL, OUTBOX_COLUMNS
from gearsql._sqlcommon import pg_ident as ident
from gearsql._sqlcommon import pg_literal as literal
from gearsql.bridges import udf_module
from gearsql.protocol import MAX_FUNCTION_NAME, MAX_UNIQUE

#: SQLSTATEs of the gman_* functions (docs/design.md has the table; udf/gman.py raises the same).
BAD_ARGUMENT = "22023"  # invalid_parameter_value
BAD_SETTING = "GM006"
NO_PLPYTHON = "0A000"  # feature_not_supported
READ_ONLY = "25006"  # read_only_sql_transaction: a hot standby, or a read-only transaction
LEGACY_OUTBOX_INSERT = "{s}._gman_outbox_insert(bytea, bytea, bytea, text)"
_DOLLAR_TAG = "$gearsql$"


def dollar(body: str) -> str:
    if _DOLLAR_TAG in body:
        raise RuntimeError(f"a function body contains {_DOLLAR_TAG}")
    return f"{_DOLLAR_TAG}\n{body}{_DOLLAR_TAG}"


def entry_signatures(entry: dict[str, Any]) -> list[tuple[list[tuple[str, str]], str]]:
    """(params with SQL types, return type) of each overload: ``payload`` becomes text and bytea."""
    params = entry["params"]
    kinds = ["text", "bytea"] if any(kind.startswith("payload") for _, kind in params) else ["text"]
    overloads = []
    for kind in kinds:
        # payload[] (an array) and setof payload (a set-returning function) too
        typed = [(name, sql.replace("payload", kind)) for name, sql in params]
        returns = entry["returns"].replace("payload", kind)
        overloads.append((typed, returns))
    return overloads


def arg_types(params: list[tuple[str, str]]) -> str:
    return ", ".join(sql for _, sql in params)


def read_udf(name: str) -> str:
    """The source of ``udf/<name>.py`` as generated into the package."""
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


def function_sql(
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
    s = ident(schema)
    python_body = (
        f"SCHEMA = {schema!r}\n"
        + functions.PREAMBLE.format(key=key, load=load)
        + entry["body"]
        + "\n"
    )
    statements = []
    for params, returns in entry_signatures(entry):
        args = ", ".join(f"{ident(name)} {sql}" for name, sql in params)
        names = ", ".join(ident(name) for name, _ in params)
        if returns == "status":
            args += (
                ", OUT known boolean, OUT running boolean, OUT numerator bigint,"
                " OUT denominator bigint, OUT state text, OUT detail text"
            )
            result = "record"
        else:
            result = returns
        public = f"{s}.{ident(entry['name'])}({args})"
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
                f"RETURNS {result} LANGUAGE plpgsql VOLATILE AS {dollar(body)};"
            )
            continue
        inner = f"{s}.{ident('_gman_py_' + entry['name'])}"
        statements.append(
            f"CREATE OR REPLACE FUNCTION {inner}({args})\n"
            f"RETURNS {result} LANGUAGE plpython3u VOLATILE AS {dollar(python_body)};"
        )
        if returns == "status":
            call = (
                "SELECT r.known, r.running, r.numerator, r.denominator, r.state, r.detail\n"
                "      INTO known, running, numerator, denominator, state, detail\n"
                f"      FROM {inner}({names}) AS r;\n    RETURN;"
            )
        elif returns.startswith("setof "):
            call = f"RETURN QUERY SELECT * FROM {inner}({names});"
        else:
            call = f"RETURN {inner}({names});"
        body = "DECLARE\n" + _ERROR_VARIABLES + f"BEGIN\n    {call}\n" + _RERAISE + "END\n"
        statements.append(
            f"CREATE OR REPLACE FUNCTION {public}\nRETURNS {result} LANGUAGE plpgsql VOLATILE "
            f"SECURITY DEFINER\nSET search_path = pg_catalog, pg_temp AS {dollar(body)};"
        )
    return statements


def _python_bodies(schema: str) -> list[str]:
    """The signatures of the ``_gman_py_*`` functions (PL/Python bodies of public functions)."""
    functions = udf_module("functions")
    background = {name for name, _ in functions.BACKGROUND}
    return [
        f"{ident(schema)}.{ident('_gman_py_' + entry['name'])}({arg_types(params)})"
        for entry in functions.FUNCTIONS
        if entry["name"] not in background
        for params, _ in entry_signatures(entry)
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


def now_sql(schema: str, key: str, load: str) -> str:
    functions = udf_module("functions")
    body = (
        f"SCHEMA = {schema!r}\n"
        + functions.PREAMBLE.format(key=key, load=load)
        + "return lib.submit_background(plpy, GD, SCHEMA, p_name, p_priority, p_function, "
        "p_workload, p_unique)\n"
    )
    args = ", ".join(f"{name} {sql}" for name, sql in _NOW_PARAMS)
    return (
        f"CREATE OR REPLACE FUNCTION {ident(schema)}._gman_background_now({args})\n"
        f"RETURNS text LANGUAGE plpython3u VOLATILE AS {dollar(body)};"
    )


def _now_signature(schema: str) -> str:
    return f"{ident(schema)}._gman_background_now({arg_types(_NOW_PARAMS)})"


def _raise(message: str, code: str, *args: str, hint: str | None = None) -> str:
    """A PL/pgSQL RAISE of ``message`` (``%`` for each of ``args``) with SQLSTATE ``code``."""
    using = f"ERRCODE = {literal(code)}"
    if hint is not None:
        using += f", HINT = {literal(hint)}"
    values = "".join(f", {arg}" for arg in args)
    return f"RAISE EXCEPTION {literal(message)}{values} USING {using};"


def background_sql(schema: str, entry: dict[str, Any], plpython: bool) -> list[str]:
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
    s = ident(schema)
    name = entry["name"]
    priority = dict(udf_module("functions").BACKGROUND)[name]
    has_unique = len(entry["params"]) == 3
    where = f"(table {schema}.gman_settings)"
    statements = []
    for params, _returns in entry_signatures(entry):
        binary = params[1][1] == "bytea"
        args = ", ".join(f"{ident(p)} {sql}" for p, sql in params)
        data = "workload" if binary else "pg_catalog.convert_to(workload, 'UTF8')"
        unique = '"unique"' if has_unique else "NULL::text"
        if plpython:
            immediate = (
                f"BEGIN\n            RETURN {s}._gman_background_now({literal(name)}, "
                f"{literal(priority)}, function, raw, {unique});\n"
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
            "    settings pg_catalog.text[];",
            "    mode pg_catalog.text;",
            "    limit_text pg_catalog.text;",
            "    size_limit pg_catalog.int8;",
            "    new_id pg_catalog.int8;",
            _ERROR_VARIABLES.replace(" text;", " pg_catalog.text;").rstrip("\n"),
            "BEGIN",
        ]
        checks = [
            # The two settings as constants (see background_settings_sql): no query.
            f"    settings := {s}._gman_background_settings();",
            "    mode := coalesce(settings[1], 'transactional');",
            # Immediate mode goes to PL/Python at once, which checks the arguments and the
            # settings itself with the same messages: each check run here first cost a new
            # backend's first call its own plan.
            "    IF mode OPERATOR(pg_catalog.=) 'immediate' THEN",
            "        " + immediate,
            "    END IF;",
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
            checks += [
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
        checks += [
            "    IF workload IS NULL THEN",
            "        " + _raise(f"{name}: the workload is NULL", BAD_ARGUMENT),
            "    END IF;",
            "    limit_text := pg_catalog.btrim(coalesce(settings[2], ''));",
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
            "    IF mode OPERATOR(pg_catalog.<>) 'transactional' THEN",
            "        "
            + _raise(
                "gearsql: bad setting background_mode=%",
                BAD_SETTING,
                "pg_catalog.quote_literal(mode)",
                hint="it is 'transactional' or 'immediate'",
            ),
            "    END IF;",
            # A hot standby (or default_transaction_read_only) would fail the INSERT with a
            # bare "cannot execute INSERT in a read-only transaction".
            "    IF pg_catalog.current_setting('transaction_read_only') OPERATOR(pg_catalog.=) "
            "'on' THEN",
            "        "
            + _raise(
                f"{name}: this database is read-only (a replica?): a transactional background "
                "call writes the outbox",
                READ_ONLY,
                hint="call it on the primary (or in a read-write transaction)",
            ),
            "    END IF;",
        ]
        unique_guard = (
            [f'       OR pg_catalog.octet_length("unique") OPERATOR(pg_catalog.>) {MAX_UNIQUE}']
            if has_unique
            else []
        )
        lines += [
            f"    raw := {data};",
            # The common case passes one test, which the published limit (NULL when the
            # settings need a closer look) keeps to constants and lengths; the checks run
            # only when it fails, and say which one did.
            f"    IF {s}._gman_background_limit() IS NULL",
            "       OR function IS NULL OR raw IS NULL",
            "       OR pg_catalog.octet_length(function) OPERATOR(pg_catalog.>) "
            f"{MAX_FUNCTION_NAME}",
            "       OR function OPERATOR(pg_catalog.=) ''",
            *unique_guard,
            "       OR pg_catalog.octet_length(raw) OPERATOR(pg_catalog.>) "
            f"{s}._gman_background_limit()",
            "       OR pg_catalog.current_setting('transaction_read_only') "
            "OPERATOR(pg_catalog.=) 'on' THEN",
            textwrap.indent("\n".join(checks), "    "),
            "    END IF;",
            f"    INSERT INTO {s}.gman_outbox ({', '.join(OUTBOX_COLUMNS[1:])})",
            f"    VALUES (pg_catalog.convert_to(function, 'UTF8'), "
            f"pg_catalog.convert_to({unique}, 'UTF8'), raw, {literal(priority)})",
            "    RETURNING id INTO new_id;",
            # pg_notify returns void, which concat renders as ''.
            "    RETURN pg_catalog.concat('outbox:', new_id, "
            f"pg_catalog.pg_notify({literal(NOTIFY_CHANNEL)}, {literal(schema)}));",
            "END",
        ]
        statements.append(
            f"CREATE OR REPLACE FUNCTION {s}.{ident(name)}({args})\n"
            "RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS "
            f"{dollar(chr(10).join(lines) + chr(10))};"
        )
    return statements


#: The trigger on gman_settings that republishes the background functions' settings.
PUBLISH_TRIGGER = "gman_publish_settings"


def background_settings_sql(schema: str) -> list[str]:
    """``_gman_background_settings()``: the ``background_mode`` and ``max_workload`` settings
    (NULL where missing) as an IMMUTABLE SQL function of constants, which a background call
    evaluates without a query (reading gman_settings on every call was half the cost of a
    trigger calling it per row). A statement trigger on gman_settings writes the function anew
    (``_gman_publish_settings()``, SECURITY DEFINER: its owner owns the function) in the
    transaction that changes the table, and replacing a function invalidates the plans that
    folded it in, so a change applies from the next statement of every session, as before.
    Only the function's owner can replace it, so no caller can feed the checks other values.

    Beside it ``_gman_background_limit()``, written by the same trigger: the largest workload a
    call may write straight to the outbox (``max_workload``, the largest int8 for none), or
    NULL when the mode is not transactional or a setting is bad, so that the common case of a
    call tests constants only and the slower checks that name the problem run when it fails."""
    s = ident(schema)
    publish = (
        "DECLARE\n"
        "    mode pg_catalog.text;\n"
        "    limit_text pg_catalog.text;\n"
        "    fast pg_catalog.text;\n"
        "BEGIN\n"
        "    SELECT pg_catalog.max(value) FILTER (WHERE name = 'background_mode'),\n"
        "           pg_catalog.max(value) FILTER (WHERE name = 'max_workload')\n"
        f"      INTO mode, limit_text FROM {s}.gman_settings;\n"
        "    EXECUTE pg_catalog.format(\n"
        "        'CREATE OR REPLACE FUNCTION %s._gman_background_settings() '\n"
        "        'RETURNS pg_catalog.text[] LANGUAGE sql IMMUTABLE AS %L',\n"
        f"        {literal(s)},\n"
        "        pg_catalog.format('SELECT ARRAY[%s, %s]::pg_catalog.text[]',\n"
        "                          pg_catalog.quote_nullable(mode),\n"
        "                          pg_catalog.quote_nullable(limit_text)));\n"
        # What the common case of a call needs: the largest workload it may write to the
        # outbox, NULL when it must read the settings above (immediate mode, a bad setting).
        "    limit_text := pg_catalog.btrim(coalesce(limit_text, ''));\n"
        "    IF coalesce(mode, 'transactional') OPERATOR(pg_catalog.=) 'transactional'\n"
        "       AND limit_text OPERATOR(pg_catalog.~) '^[0-9]{0,18}$' THEN\n"
        "        fast := coalesce(NULLIF(NULLIF(limit_text, '')\n"
        "                         ::pg_catalog.int8, 0), 9223372036854775807)::pg_catalog.text;\n"
        "    END IF;\n"
        "    EXECUTE pg_catalog.format(\n"
        "        'CREATE OR REPLACE FUNCTION %s._gman_background_limit() '\n"
        "        'RETURNS pg_catalog.int8 LANGUAGE sql IMMUTABLE AS %L',\n"
        f"        {literal(s)},\n"
        "        pg_catalog.format('SELECT %s::pg_catalog.int8', coalesce(fast, 'NULL')));\n"
        "    RETURN NULL;\n"
        "END\n"
    )
    return [
        f"CREATE OR REPLACE FUNCTION {s}._gman_publish_settings()\n"
        "RETURNS trigger LANGUAGE plpgsql VOLATILE SECURITY DEFINER\n"
        f"SET search_path = pg_catalog, pg_temp AS {dollar(publish)};",
        f"REVOKE ALL ON FUNCTION {s}._gman_publish_settings() FROM PUBLIC;",
        f"DROP TRIGGER IF EXISTS {PUBLISH_TRIGGER} ON {s}.gman_settings;",
        f"CREATE TRIGGER {PUBLISH_TRIGGER}\n"
        f"AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {s}.gman_settings\n"
        f"FOR EACH STATEMENT EXECUTE FUNCTION {s}._gman_publish_settings();",
    ]


def drop_old_result(schema: str, name: str, column: str) -> str:
    """A DO block that drops the function ``name`` of an older install whose result lacks
    ``column`` (CREATE OR REPLACE cannot change a result type), remembering who was granted
    EXECUTE on it for :func:`regrant`."""
    return (
        "DO $do$\nDECLARE\n    old record;\n    grantees text := '';\nBEGIN\n"
        "    FOR old IN SELECT p.oid::regprocedure AS signature, p.proacl, p.proowner\n"
        "               FROM pg_proc AS p\n"
        f"               WHERE p.pronamespace = {literal(schema)}::regnamespace\n"
        f"                 AND p.proname = {literal(name)}\n"
        f"                 AND NOT {literal(column)}\n"
        "                     = ANY(coalesce(p.proargnames, '{}'::text[]))\n"
        "    LOOP\n"
        "        SELECT grantees\n"
        "               || coalesce(string_agg(a.grantee::regrole::text || E'\\n', ''), '')\n"
        "          INTO grantees FROM aclexplode(old.proacl) AS a\n"
        "         WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> 0\n"
        "           AND a.grantee <> old.proowner;\n"
        "        EXECUTE format('DROP FUNCTION %s', old.signature);\n"
        "    END LOOP;\n"
        f"    PERFORM set_config({literal('gearsql.regrant_' + name)}, grantees, true);\nEND\n$do$;"
    )


def regrant(schema: str, name: str, arguments: str) -> str:
    """Grant EXECUTE on ``name(arguments)`` again to those :func:`drop_old_result` found."""
    return (
        "DO $do$\nDECLARE\n    grantee text;\nBEGIN\n"
        "    FOREACH grantee IN ARRAY string_to_array(\n"
        f"        rtrim(coalesce(current_setting({literal('gearsql.regrant_' + name)}, true), ''), "
        "E'\\n'), E'\\n')\n"
        "    LOOP\n"
        f"        EXECUTE format('GRANT EXECUTE ON FUNCTION %s.{name}({arguments}) TO %s',\n"
        f"                       {literal(ident(schema))}, grantee);\n"
        "    END LOOP;\nEND\n$do$;"
    )


def all_functions(schema: str, plpython: bool = True) -> list[tuple[str, str]]:
    """(kind, qualified signature) of every function and aggregate, for REVOKE and DROP (those
    in PL/Python only with ``plpython``)."""
    functions = udf_module("functions")
    objects = [("FUNCTION", f"{ident(schema)}._gman_settings()")]
    if plpython:
        objects += [
            ("FUNCTION", _now_signature(schema)),
            ("FUNCTION", f"{ident(schema)}._gman_compile()"),
            *(("FUNCTION", signature) for signature in _python_bodies(schema)),
        ]
    objects += [
        ("FUNCTION", f"{ident(schema)}._gman_background_settings()"),
        ("FUNCTION", f"{ident(schema)}._gman_background_limit()"),
        ("FUNCTION", f"{ident(schema)}._gman_outbox_state(bigint)"),
        ("FUNCTION", f"{ident(schema)}.{ident('gman_pipeline')}()"),
        ("FUNCTION", f"{ident(schema)}.{ident('gman_relay_contacts')}()"),
    ]
    for entry in functions.FUNCTIONS:
        for params, _ in entry_signatures(entry):
            objects.append(
                ("FUNCTION", f"{ident(schema)}.{ident(entry['name'])}({arg_types(params)})")
            )
    for aggregate in functions.AGGREGATES:
        for params, _ in entry_signatures(aggregate):
            objects.append(
                ("AGGREGATE", f"{ident(schema)}.{ident(aggregate['name'])}({arg_types(params)})")
            )
    return objects


def granted_signatures(schema: str, plpython: bool) -> list[str]:
    """What ``--role`` may execute: the public gman_* functions, and the aggregate's internal
    functions (PostgreSQL checks EXECUTE on those for whoever calls gman_sum)."""
    functions = udf_module("functions")
    internal = {entry["name"] for entry in functions.FUNCTIONS if entry.get("internal")}
    prefix = f"{ident(schema)}."
    return [
        signature
        for _, signature in all_functions(schema, plpython)
        if signature.startswith(prefix + '"gman_')
        or any(signature.startswith(f"{prefix}{ident(name)}(") for name in internal)
    ]
