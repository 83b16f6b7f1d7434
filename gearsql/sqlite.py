"""The gman_* functions on a :mod:`sqlite3` connection, running the same bodies as PostgreSQL.

``register(conn, servers=...)`` adds ``gman_do``, ``gman_do_high``, ``gman_do_low``, the three
``*_background`` forms, ``gman_servers_set`` (one argument: this connection's servers; with a
function: that function's servers for every connection and the relay, kept in the file's table
``gman_function_servers``), ``gman_job_status`` (a JSON object),
``gman_map`` (a JSON array of workloads in, a JSON array of results out) and the ``gman_sum``
aggregate. Their bodies are the PL/Python bodies of ``udf/functions.py``, compiled by
the plpython3u-compatible shim (``udf/plpy_shim.py``), so both databases behave the same.

Settings are keyword arguments with the PostgreSQL settings' names and defaults: ``servers``
(the job servers the functions may reach; ``gman_servers_set`` chooses among them),
``background_mode`` (``"transactional"``: write a ``gman_outbox`` row in the caller's transaction,
for the relay to submit after commit; ``"immediate"``: submit at call time and return the job
handle), ``connect_timeout``, ``timeout``, ``poll_interval`` and ``max_workload`` (bytes; a
longer workload is an error at call time, 0 for no limit; the default fits a job server's
default maximum packet of 64 MiB).

The relay moves outbox rows that no job server will take (too large, say) into the table
``gman_outbox_dead`` with the reason; the view ``gman_pipeline`` shows the backlog and the dead
letters, and ``gman_job_status('outbox:<id>')`` tells whether a row is pending, dead or
submitted (with the job server's handle, which the relay keeps in ``gman_outbox_sent`` for 24
hours). The relay also makes ``gman_relay_contact``, its last contact, written with a batch
(never while the outbox is idle, so that it does not take the file's write lock), and
``gman_origin``, the file it first relayed (its device and inode), so that a relay on a copy of
the file does not submit the original's pending rows again (docs/reliability.md case 52).

Errors: Python's :mod:`sqlite3` turns any exception in a user function into
``sqlite3.OperationalError("user-defined function raised exception")``, losing the message. The
message is kept: :func:`last_error` returns it, and connections made by :func:`connect` (or with
``factory=gearsql.sqlite.Connection``) raise :class:`GearmanSQLError`, an OperationalError that
carries it. ``sqlite3_interrupt`` (``conn.interrupt()``) stops a waiting ``gman_do``.

Locks: a call that writes (the outbox row, ``gman_servers_set``) needs the file's write lock, and
SQLite waits for another connection's (the relay's claim, any writer) only in a transaction that
has not read yet, and a call reads before it writes. Begin a transaction that calls gman_* with
``BEGIN IMMEDIATE`` (or write first): otherwise the call fails at once with "database is
locked", and the error's ``HINT`` line says so. :meth:`Connection.close` rolls back an open
transaction before closing.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable
from typing import Any

from gearsql._servers import DEFAULT_SERVERS, format_address, parse_servers
from gearsql._sqlcommon import (
    BACKGROUND_MODES,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_WORKLOAD,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
)
from gearsql.bridges import load_library, udf_module

__all__ = [
    "BACKGROUND_MODES",
    "DEFAULT_MAX_WORKLOAD",
    "LOCKED_HINT",
    "PIPELINE_VIEW",
    "RELAY_CONTACT_TABLE",
    "Connection",
    "Cursor",
    "GearmanSQLError",
    "close_connections",
    "connect",
    "create_pipeline_view",
    "last_error",
    "register",
]


#: Each relay's last contact with the file (host:pid, when, its job servers), written by the
#: relay with its batches.
RELAY_CONTACT_TABLE = (
    "CREATE TABLE IF NOT EXISTS gman_relay_contact ("
    " relay TEXT PRIMARY KEY, last_contact TEXT NOT NULL, servers TEXT NOT NULL)"
)

#: The state of the pipeline for an administrator: rows waiting in the outbox (how many, the
#: age of the oldest in seconds), the dead letters (how many, when the newest died and why) and
#: when a relay was last in contact (as MariaDB's view).
PIPELINE_VIEW = (
    "CREATE VIEW IF NOT EXISTS gman_pipeline AS SELECT"
    " (SELECT count(*) FROM gman_outbox) AS backlog,"
    " (SELECT (julianday('now') - julianday(min(created_at))) * 86400.0 FROM gman_outbox)"
    " AS oldest_age_seconds,"
    " (SELECT count(*) FROM gman_outbox_dead) AS dead,"
    " (SELECT max(dead_at) FROM gman_outbox_dead) AS last_dead_at,"
    " (SELECT group_concat(line, char(10)) FROM (SELECT id || ': ' || reason AS line"
    " FROM gman_outbox_dead ORDER BY dead_at DESC, id DESC LIMIT 5)) AS last_dead_reasons,"
    " (SELECT max(last_contact) FROM gman_relay_contact) AS last_relay_contact"
)


def create_pipeline_view(conn: sqlite3.Connection) -> None:
    """Make the view ``gman_pipeline`` and the table of relay contacts it reads (the outbox
    and the dead letters must exist), replacing a view of an older version without
    ``last_relay_contact``. Raises sqlite3.OperationalError on a read-only file."""
    conn.execute(RELAY_CONTACT_TABLE)
    old = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'view' AND name = 'gman_pipeline'"
    ).fetchone()
    if old is not None and "last_relay_contact" not in str(old[0]):
        conn.execute("DROP VIEW gman_pipeline")
    conn.execute(PIPELINE_VIEW)


_SCHEMA = "main"
# Per-connection state: GD, the last error. Keyed by id(conn); the entry is dropped when the
# connection object is collected (weakref callbacks are not available on sqlite3.Connection
# subclasses of every version, so the dict is small and bounded by live connections).
_last_errors: dict[int, str] = {}
_closers: dict[int, weakref.finalize[Any, Any]] = {}
_lock = threading.Lock()


class GearmanSQLError(sqlite3.OperationalError):
    """A gman_* function failed; the message names the cause (no server, timeout, WORK_FAIL,
    a worker's exception, a bad argument) and ends with a ``SQLSTATE: <code>`` line, the code
    PostgreSQL gives the same failure (docs/design.md), also in :attr:`sqlstate`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        last = message.rsplit("\n", 1)[-1]
        self.sqlstate: str | None = (
            last.removeprefix("SQLSTATE: ") if last.startswith("SQLSTATE: ") else None
        )


def last_error(conn: sqlite3.Connection) -> str | None:
    """The message of the last gman_* error on ``conn`` (None if there was none)."""
    with _lock:
        return _last_errors.get(id(conn))


def _take_error(conn: sqlite3.Connection) -> str | None:
    with _lock:
        return _last_errors.pop(id(conn), None)


def _tls_settings(
    ssl: bool | None, ca_file: str | None, certificate: str | None, key: str | None
) -> dict[str, str]:
    """The TLS settings of the udf library (its ``ssl*`` settings), from the arguments or the
    environment, after checking that the files can be used."""
    from gearsql import _tls

    if _tls.client_context(ssl, ca_file, certificate, key) is None:
        return {"ssl": "off"}
    if ssl is not False and not (ca_file or certificate or key):
        ca_file = os.environ.get(_tls.ENV_CA_FILE) or None
        certificate = os.environ.get(_tls.ENV_CERTIFICATE) or None
        key = os.environ.get(_tls.ENV_KEY) or None
    return {
        "ssl": "on",
        "ssl_ca_file": ca_file or "",
        "ssl_certificate": certificate or "",
        "ssl_key": key or "",
    }


def register(
    conn: sqlite3.Connection,
    servers: str | list[str] | None = DEFAULT_SERVERS,
    *,
    background_mode: str = BACKGROUND_MODES[0],
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    timeout: float = DEFAULT_TIMEOUT,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    max_workload: int = DEFAULT_MAX_WORKLOAD,
    on_error: Callable[[str], None] | None = None,
    ssl: bool | None = None,
    ssl_ca_file: str | None = None,
    ssl_certificate: str | None = None,
    ssl_key: str | None = None,
) -> None:
    """Add every gman_* function to ``conn``.

    ``servers``: the job servers the functions may reach (``"host[:port],..."`` or a list;
    None reads ``$GEARMAN_SERVERS``). ``on_error`` also receives each error's message. In the
    transactional background mode the ``gman_outbox`` table that ``gearsql relay`` drains is
    created here already (unless a transaction is open). Raises ValueError for a bad server
    list, background mode or timeout.

    ``ssl``, ``ssl_ca_file``, ``ssl_certificate``, ``ssl_key``: TLS to the job servers, as the
    client takes it (docs/security.md); with none of them given the ``GEARSQL_SSL*`` environment
    variables decide, and ``ssl=False`` is plaintext. Raises :class:`gearsql._tls.TlsError` (a
    ValueError) for a file that cannot be used.
    """
    addresses = parse_servers(servers)
    if background_mode not in BACKGROUND_MODES:
        raise ValueError(f"background_mode must be one of {', '.join(BACKGROUND_MODES)}")
    if connect_timeout <= 0 or timeout <= 0 or poll_interval <= 0:
        raise ValueError("connect_timeout, timeout and poll_interval must be positive")
    if max_workload < 0:
        raise ValueError("max_workload must be 0 (no limit) or a number of bytes")
    tls = _tls_settings(ssl, ssl_ca_file, ssl_certificate, ssl_key)
    library = load_library()
    functions = udf_module("functions")
    shim = udf_module("plpy_shim")

    def run(query: str, args: list[Any]) -> list[dict[str, Any]]:
        cursor = sqlite3.Cursor(conn)  # plain cursor: no error translation inside a function
        try:
            cursor.execute(query, args)
            names = [d[0] for d in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            cursor.close()

    plpy = shim.Plpy(run)
    gd: dict[str, Any] = {
        "gearsql.dialect": "sqlite",
        "gearsql.static_settings": {
            "servers": ",".join(format_address(address) for address in addresses),
            "background_mode": background_mode,
            "connect_timeout": str(connect_timeout),
            "timeout": str(timeout),
            "poll_interval": str(poll_interval),
            "max_workload": str(int(max_workload)),
            **tls,
        },
    }
    preamble_key = "gearsql.library"
    gd[preamble_key] = library
    preamble = functions.PREAMBLE.format(key=preamble_key, load=f"    lib = GD[{preamble_key!r}]\n")

    def procedure(entry: dict[str, Any]) -> Callable[..., Any]:
        body = f"SCHEMA = {_SCHEMA!r}\n" + preamble + entry["body"] + "\n"
        params = [name for name, _ in entry["params"]]
        compiled: Callable[..., Any] = shim.make_procedure(entry["name"], params, body, plpy, gd)
        return compiled

    def guarded(name: str, compiled: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            assert owner is not None
            try:
                result = compiled(*args)
            except shim.Error as exc:
                if exc.hint is None and _locked(exc):
                    exc.hint = LOCKED_HINT
                _remember(conn, exc.full_message(), on_error)
                raise
            except Exception as exc:
                hint = f"\nHINT: {LOCKED_HINT}" if _locked(exc) else ""
                _remember(conn, f"{name}: {exc}{hint}", on_error)
                raise
            if isinstance(result, dict):
                return library.status_json(result)
            if isinstance(result, bool):
                return int(result)
            return result

        return call

    # The job server connections (in gd["gearsql.state"]) close with the sqlite3 connection:
    # `owner` is referenced only by the functions registered on it, which the connection drops
    # when it is closed and collected. (sqlite3.Connection itself takes no weak references.)
    sessions: dict[str, Any] = gd.setdefault("gearsql.state", {})
    owner = _Owner()
    _closers[id(conn)] = weakref.finalize(
        owner, _close, id(conn), library.close_all, {"gearsql.state": sessions}
    )
    by_name: dict[str, dict[int, Callable[..., Any]]] = {}
    for entry in functions.FUNCTIONS:
        if entry.get("internal"):
            continue
        arity = len(entry["params"])
        call = guarded(entry["name"], procedure(entry))
        by_name.setdefault(entry["name"], {})[arity] = call
        conn.create_function(entry["name"], arity, call)

    internals = {
        entry["name"]: procedure(entry) for entry in functions.FUNCTIONS if entry.get("internal")
    }
    for aggregate in functions.AGGREGATES:
        step = guarded(aggregate["name"], internals[aggregate["step"]])
        final = guarded(aggregate["name"], internals[aggregate["final"]])
        conn.create_aggregate(
            aggregate["name"], len(aggregate["params"]), _aggregate_class(step, final)
        )
    if background_mode == "transactional" and not conn.in_transaction:
        # Make the outbox now rather than at the first background call, so that a relay started
        # before that call finds it (the relay stops at a file without one, a wrong path most
        # likely). Inside the caller's transaction, or on a read-only file, it is left to the
        # first call, as before.
        with contextlib.suppress(sqlite3.Error):
            conn.execute(library._SQL["sqlite"]["outbox_table"])
            conn.execute(library.SQLITE_DEAD_TABLE)
            create_pipeline_view(conn)
            # Read by every call (gman_servers_set(servers, function) writes it): present, the
            # read is one query; missing, a failed one.
            conn.execute(library.SQLITE_FUNCTION_SERVERS_TABLE)


def _aggregate_class(step: Callable[..., Any], final: Callable[..., Any]) -> type:
    class Aggregate:
        def __init__(self) -> None:
            self.state: Any = None

        def step(self, *args: Any) -> None:
            self.state = step(self.state, *args)

        def finalize(self) -> Any:
            return final(self.state)

    return Aggregate


class _Owner:
    """Lives as long as the functions registered on one connection."""


def _close(key: int, close_all: Callable[[Any], None], gd: dict[str, Any]) -> None:
    close_all(gd)
    with _lock:
        _closers.pop(key, None)
        _last_errors.pop(key, None)


def close_connections(conn: sqlite3.Connection) -> None:
    """Close the job server connections the gman_* functions of ``conn`` opened (also done when
    ``conn`` is garbage collected, and by :meth:`Connection.close`)."""
    with _lock:
        closer = _closers.get(id(conn))
    if closer is not None:
        closer()


#: Added to SQLite's "database is locked" from inside a gman_* function. SQLite calls the busy
#: handler only for a connection with no transaction open: a call whose statement or transaction
#: has already read cannot wait to write its row, and fails at once while the relay's claim (or
#: any writer) holds the file's write lock.
LOCKED_HINT = (
    "another connection holds the database's write lock, and SQLite waits for it only in a "
    "transaction that has not read yet: begin it with BEGIN IMMEDIATE (or write first)"
)


def _locked(exc: BaseException) -> bool:
    """Whether ``exc`` comes from SQLite's SQLITE_BUSY ("database is locked", its fixed text,
    which Python 3.10 offers without the error code)."""
    seen: BaseException | None = exc
    for _ in range(8):  # the statement's error, wrapped by plpy.execute and maybe a body
        if seen is None:
            return False
        if isinstance(seen, sqlite3.OperationalError) and str(seen) == "database is locked":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _remember(
    conn: sqlite3.Connection, message: str, on_error: Callable[[str], None] | None
) -> None:
    with _lock:
        _last_errors[id(conn)] = message
    if on_error is not None:
        on_error(message)


def _translate(conn: sqlite3.Connection, exc: sqlite3.OperationalError) -> BaseException:
    message = _take_error(conn)
    if message is None or "user-defined" not in str(exc):
        return exc
    return GearmanSQLError(message)


class Cursor(sqlite3.Cursor):
    """A cursor whose errors from gman_* functions carry their message."""

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        try:
            super().execute(sql, parameters)
        except sqlite3.OperationalError as exc:
            raise _translate(self.connection, exc) from exc
        return self

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> Cursor:
        try:
            super().executemany(sql, seq_of_parameters)
        except sqlite3.OperationalError as exc:
            raise _translate(self.connection, exc) from exc
        return self

    def executescript(self, sql_script: str, /) -> Cursor:
        try:
            super().executescript(sql_script)
        except sqlite3.OperationalError as exc:
            raise _translate(self.connection, exc) from exc
        return self

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.OperationalError as exc:
            raise _translate(self.connection, exc) from exc

    def fetchmany(self, size: int | None = None) -> list[Any]:
        try:
            return super().fetchmany(self.arraysize if size is None else size)
        except sqlite3.OperationalError as exc:
            raise _translate(self.connection, exc) from exc

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.OperationalError as exc:
            raise _translate(self.connection, exc) from exc

    def __iter__(self) -> Cursor:
        return self

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.OperationalError as exc:
            raise _translate(self.connection, exc) from exc


class Connection(sqlite3.Connection):
    """A :class:`sqlite3.Connection` whose ``execute*`` and cursors raise
    :class:`GearmanSQLError` with the real message when a gman_* function fails."""

    def cursor(self, factory: Any = None) -> Any:
        return super().cursor(factory or Cursor)

    def close(self) -> None:
        close_connections(self)
        # Roll back first: a statement still alive (a failed cursor kept by a traceback, say)
        # makes close() leave a zombie connection that holds its transaction's locks, and in a
        # rollback-journal file its read lock keeps every writer from committing.
        with contextlib.suppress(sqlite3.Error):  # ProgrammingError: closed already
            if self.in_transaction:
                self.rollback()
        super().close()

    def _cursor(self) -> Cursor:
        cursor = self.cursor()
        assert isinstance(cursor, Cursor)
        return cursor

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        return self._cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Cursor:
        return self._cursor().executemany(sql, parameters)

    def executescript(self, sql_script: str, /) -> Cursor:
        return self._cursor().executescript(sql_script)


def connect(
    database: str,
    servers: str | list[str] | None = DEFAULT_SERVERS,
    *,
    background_mode: str = BACKGROUND_MODES[0],
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    timeout: float = DEFAULT_TIMEOUT,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    max_workload: int = DEFAULT_MAX_WORKLOAD,
    **kwargs: Any,
) -> Connection:
    """``sqlite3.connect(database, **kwargs)`` as a :class:`Connection` with the functions
    registered (see :func:`register` for the settings)."""
    conn = sqlite3.connect(database, factory=Connection, **kwargs)
    register(
        conn,
        servers,
        background_mode=background_mode,
        connect_timeout=connect_timeout,
        timeout=timeout,
        poll_interval=poll_interval,
        max_workload=max_workload,
    )
    assert isinstance(conn, Connection)
    return conn
