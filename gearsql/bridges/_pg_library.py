"""Where a PostgreSQL install keeps the udf library, and how a backend loads it fast.

The table ``<schema>._gman_library`` holds one row per module of the library (``udf/loader.py``
and the modules it loads) for the installed version (``package``): its source and, filled at
install time by ``<schema>._gman_compile()`` in the database server's own Python, its compiled
code (``marshal`` data) with that interpreter's bytecode magic number. The first gman_* call of
every backend reads the rows in its own body (:func:`load_lines`: the compiled code where the
magic matches the running interpreter, else the source) and runs the code, compiling the sources
only after an upgrade of the server's Python, until ``SELECT <schema>._gman_compile()`` is run
again or gearsql is reinstalled. Only the installing role may read or write the table: the
functions that read it run as that role (SECURITY DEFINER wrappers), and what it holds is
executed.
"""

from __future__ import annotations

from gearsql._sqlcommon import pg_ident as _ident
from gearsql._sqlcommon import pg_literal as _literal

_SOURCE_TAG = "$gearsql_source$"


def _quoted_source(text: str) -> str:
    if _SOURCE_TAG in text:
        raise RuntimeError(f"a library module contains {_SOURCE_TAG}")
    return f"{_SOURCE_TAG}{text}{_SOURCE_TAG}"


def _query(schema: str, package: str, columns: str) -> str:
    return (
        f"SELECT {columns} FROM {_ident(schema)}._gman_library WHERE package = {_literal(package)}"
    )


#: The first lines of both PL/Python bodies: the rows of this version by module, and the loader
#: run from its compiled code when that fits this interpreter. {query} is filled in.
_BOOTSTRAP = """\
import marshal
ROWS = {{row["module"]: row for row in plpy.execute({query!r})}}
try:
    from _frozen_importlib_external import MAGIC_NUMBER
except ImportError:
    MAGIC_NUMBER = None
LOADER = {{"__name__": {loader!r}}}
_row = ROWS["loader"]
if MAGIC_NUMBER is not None and _row["magic"] == MAGIC_NUMBER and _row["code"] is not None:
    _code = marshal.loads(_row["code"])
else:
    _code = compile(_row["source"], {filename!r}, "exec")
exec(_code, LOADER)
SOURCES = {{name: row["source"] for name, row in ROWS.items() if name != "loader"}}
"""


def _bootstrap(schema: str, package: str) -> str:
    return _BOOTSTRAP.format(
        query=_query(schema, package, "module, source, magic, code"),
        loader=package + ".loader",
        filename="<" + package + ".loader>",
    )


#: The library's rows for this interpreter: a module's compiled code where its magic is
#: ``{magic}`` (filled in by the body: the running interpreter's), else its source. (Not
#: sorted: an ORDER BY cost a new backend's first call more than finding the loader's row.)
_LOAD_QUERY = (
    "SELECT module, CASE WHEN magic = pg_catalog.decode('{{magic}}', 'hex') THEN code END AS code,"
    " CASE WHEN magic = pg_catalog.decode('{{magic}}', 'hex') AND code IS NOT NULL THEN NULL"
    " ELSE source END AS source FROM {table} WHERE package = {package}"
)

#: The lines of a PL/Python body that load the library when its ``lib`` is not in GD yet (one
#: query, then the loader's code; no other function is called: a call through SPI to a loading
#: function cost a new backend's first call 0.45 ms). Every line here is compiled with each
#: body, so they are few. {key}, {query} and {loader} are filled in.
_LOAD = """\
    from _frozen_importlib_external import MAGIC_NUMBER
    QUERY = {query!r}
    ROWS = plpy.execute(QUERY.replace("{{magic}}", MAGIC_NUMBER.hex()))
    LOADER = {{"__name__": {loader!r}}}
    for ROW in ROWS:
        if ROW["module"] == "loader":
            exec(ROW["source"] or __import__("marshal").loads(ROW["code"]), LOADER)
    lib = GD[{key!r}] = LOADER["load_rows"]({key!r}, ROWS, plpy, QUERY).gman
"""


def load_lines(schema: str, package: str) -> str:
    """The lines (indented for the body's ``if lib is None:``) that put the library's ``gman``
    module in GD as ``lib``, reading ``_gman_library`` once."""
    query = _LOAD_QUERY.format(table=f"{_ident(schema)}._gman_library", package=_literal(package))
    return _LOAD.format(
        key=package,
        query=query,
        loader=package + ".loader",
    )


def compile_body(schema: str, package: str) -> str:
    """The PL/Python body of ``_gman_compile()``: compiles every module of this version in this
    interpreter and stores the code; returns how many modules."""
    s = _ident(schema)
    return (
        _bootstrap(schema, package)
        + 'ALL = dict(SOURCES, loader=ROWS["loader"]["source"])\n'
        + f'CODES = LOADER["compile_sources"]({package!r}, ALL)\n'
        + 'MAGIC = LOADER["bytecode_magic"]()\n'
        + "PLAN = plpy.prepare(\n"
        + repr(
            f"UPDATE {s}._gman_library SET magic = $1, code = $2 "
            f"WHERE package = {_literal(package)} AND module = $3"
        )
        + ', ["bytea", "bytea", "text"])\n'
        + "for NAME, CODE in CODES.items():\n"
        + "    plpy.execute(PLAN, [MAGIC, CODE, NAME])\n"
        + "return len(CODES)\n"
    )


def install_sql(schema: str, package: str, modules: dict[str, str]) -> list[str]:
    """The table with this version's modules (``modules``: name -> source, the loader as
    ``loader``), rows of other versions removed. ``_gman_compile()`` must be created and called
    after it (see :func:`compile_call`)."""
    s = _ident(schema)
    rows = ",\n".join(
        f"    ({_literal(package)}, {_literal(name)}, {_quoted_source(text)})"
        for name, text in modules.items()
    )
    return [
        f"CREATE TABLE IF NOT EXISTS {s}._gman_library (\n"
        "    package text NOT NULL,\n"
        "    module text NOT NULL,\n"
        "    source text NOT NULL,\n"
        "    magic bytea,\n"
        "    code bytea,\n"
        "    PRIMARY KEY (package, module)\n"
        ");",
        # Stored as they are: every new backend reads the rows, and decompressing them cost
        # its first call 0.45 ms (ALTER, not CREATE: a column's STORAGE clause is PostgreSQL 16).
        f"ALTER TABLE {s}._gman_library ALTER COLUMN source SET STORAGE EXTERNAL,"
        " ALTER COLUMN code SET STORAGE EXTERNAL;",
        f"REVOKE ALL ON TABLE {s}._gman_library FROM PUBLIC;",
        f"COMMENT ON TABLE {s}._gman_library IS "
        + _literal(
            "gearsql: the gman_* functions' library (sources, and code compiled by "
            "_gman_compile() for the server's Python)"
        )
        + ";",
        f"DELETE FROM {s}._gman_library;",
        f"INSERT INTO {s}._gman_library (package, module, source) VALUES\n{rows};",
    ]


def compile_function_sql(schema: str, package: str, dollar: str) -> str:
    """``CREATE FUNCTION _gman_compile()``; ``dollar`` is the body already dollar-quoted."""
    return (
        f"CREATE OR REPLACE FUNCTION {_ident(schema)}._gman_compile()\n"
        f"RETURNS integer LANGUAGE plpython3u VOLATILE AS {dollar};"
    )


def compile_call(schema: str) -> str:
    return f"SELECT {_ident(schema)}._gman_compile();"


def uninstall_sql(schema: str) -> str:
    return f"DROP TABLE IF EXISTS {_ident(schema)}._gman_library;"
