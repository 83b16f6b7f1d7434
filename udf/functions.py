"""The gman_* SQL functions: names, arguments, return types and PL/Python bodies, one table for
every database.

``sql/generate.py`` (and ``gearsql install postgres``) turns each entry into ``CREATE FUNCTION
... LANGUAGE plpython3u``; ``gearsql.sqlite`` compiles the very same bodies with the ``plpy``
shim. A body runs as PL/Python runs it: its arguments, ``plpy``, ``GD`` and ``SD`` in scope.

Argument type ``payload`` is ``text`` or ``bytea`` (PostgreSQL gets one overload of each; SQLite
takes either), ``payload[]`` an array of them (SQLite: a JSON array, text only); a return type
``payload`` follows the argument's, ``setof payload`` is a set of them (SQLite: a JSON array).
Only the standard library may be used here: this file is read by the generator, not imported by
the database.
"""

#: Loads the library into GD the first time a session calls any function (PostgreSQL); the
#: SQLite shim puts it in GD beforehand. {key} and {load} are filled in per install: {load} is
#: indented lines that set ``lib`` (gearsql/bridges/_pg_library.py's ``load_lines``).
PREAMBLE = """\
lib = GD.get({key!r})
if lib is None:
{load}"""

FOREGROUND = [("gman_do", "normal"), ("gman_do_high", "high"), ("gman_do_low", "low")]
BACKGROUND = [
    ("gman_do_background", "normal"),
    ("gman_do_high_background", "high"),
    ("gman_do_low_background", "low"),
]


def _job_functions():
    entries = []
    for names, call, returns in (
        (FOREGROUND, "do", "payload"),
        (BACKGROUND, "do_background", "text"),
    ):
        for name, priority in names:
            for with_unique in (False, True):
                params = [("function", "text"), ("workload", "payload")]
                unique = "None"
                if with_unique:
                    params.append(("unique", "text"))
                    unique = "unique"
                body = (
                    f"return lib.{call}(plpy, GD, SCHEMA, {name!r}, {priority!r}, "
                    f"function, workload, {unique})"
                )
                entries.append({"name": name, "params": params, "returns": returns, "body": body})
    return entries


#: Every function. ``internal`` ones exist for the aggregate and get no EXECUTE of their own in
#: documentation, but the role that may call gman_sum needs EXECUTE on them too.
FUNCTIONS = [
    *_job_functions(),
    {
        "name": "gman_servers_set",
        "params": [("servers", "text")],
        "returns": "boolean",
        "body": "return lib.servers_set(plpy, GD, SCHEMA, servers)",
    },
    {
        # Database-wide: jobs of `function` go to `servers` (NULL: back to the default).
        "name": "gman_servers_set",
        "params": [("servers", "text"), ("function", "text")],
        "returns": "text",
        "body": "return lib.function_servers_set(plpy, GD, SCHEMA, servers, function)",
    },
    {
        "name": "gman_job_status",
        "params": [("handle", "text")],
        "returns": "status",
        "body": "return lib.job_status(plpy, GD, SCHEMA, handle)",
    },
    {
        # PostgreSQL: SETOF text or bytea (following the array); SQLite: a JSON array in and out.
        "name": "gman_map",
        "params": [("function", "text"), ("workloads", "payload[]")],
        "returns": "setof payload",
        "body": "return lib.map_jobs(plpy, GD, SCHEMA, 'gman_map', function, workloads)",
    },
    {
        "name": "_gman_sum_step",
        "params": [("state", "bigint"), ("function", "text"), ("workload", "payload")],
        "returns": "bigint",
        "body": "return lib.sum_step(plpy, GD, SCHEMA, state, function, workload)",
        "internal": True,
    },
    {
        "name": "_gman_sum_final",
        "params": [("state", "bigint")],
        "returns": "bigint",
        "body": "return lib.sum_final(plpy, GD, SCHEMA, state)",
        "internal": True,
    },
]

#: gman_sum(function, workload): one task per row, run concurrently at the final step.
AGGREGATES = [
    {
        "name": "gman_sum",
        "params": [("function", "text"), ("workload", "payload")],
        "state": "bigint",
        "step": "_gman_sum_step",
        "final": "_gman_sum_final",
        "returns": "bigint",
    },
]
