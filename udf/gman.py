"""Gearman from SQL: what the gman_* functions do, written against the PL/Python ``plpy`` API.

This module runs inside PostgreSQL's PL/Python (the database server's own Python, where gearsql is
not installed) and, unchanged, in the plpython3u-compatible shim that gives SQLite the same
functions. It is loaded by ``udf/loader.py`` as a submodule of a private package next to the
gearsql codec (``protocol``) and the sans-IO client connection (``_clientconn``), so it speaks
Gearman through the very code the job server and the client library use.

Every function takes ``plpy`` and ``GD`` (the session's global dictionary) from the calling body.
Per-session state lives in ``GD``: the chosen servers and one cached connection per job server.
Settings come from the database on every call (``<schema>._gman_settings()`` in PostgreSQL, a
function only the installing role can change), so an administrator's change applies at once;
so do the servers chosen per function with ``gman_servers_set(servers, function)`` (the table
``gman_function_servers``, read in the same query).
Errors are ``plpy.error`` with a message that names the cause.
"""

from __future__ import annotations

import _socket
import select
import time

from . import _clientconn as cc
from . import protocol

#: Defaults of the settings (the ``gman_settings`` table in PostgreSQL, ``register()`` keywords
#: in SQLite). ``servers`` are the job servers this database may reach.
DEFAULTS = {
    "servers": "127.0.0.1:4730",
    "background_mode": "transactional",
    "connect_timeout": "5",
    "timeout": "60",
    "poll_interval": "0.1",
    # The job server's default maximum packet (64 MiB) less room for the function name, the
    # unique and the header.
    "max_workload": "67107840",
    # TLS to the job servers (docs/security.md): on when 'ssl' is on or any of the files is set.
    # The paths are the database server's; its operating-system user must be able to read them.
    "ssl": "off",
    "ssl_ca_file": "",
    "ssl_certificate": "",
    "ssl_key": "",
}
_SSL_ON = ("on", "true", "yes", "1")
_SSL_OFF = ("off", "false", "no", "0", "")
BACKGROUND_MODES = ("transactional", "immediate")
DEFAULT_PORT = 4730

_STATE = "gearsql.state"
_STATIC_SETTINGS = "gearsql.static_settings"
_DIALECT = "gearsql.dialect"

#: The dead letters of an SQLite outbox: rows no job server will take, moved here by the relay
#: with the reason (PostgreSQL's ``gman_outbox_dead`` is made by the install).
SQLITE_DEAD_TABLE = (
    "CREATE TABLE IF NOT EXISTS gman_outbox_dead ("
    " id INTEGER PRIMARY KEY, created_at TEXT NOT NULL,"
    " function BLOB NOT NULL, unique_key BLOB, workload BLOB NOT NULL, priority TEXT NOT NULL,"
    " reason TEXT NOT NULL,"
    " dead_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
)

#: The job servers of a function chosen with ``gman_servers_set(servers, function)`` in an
#: SQLite database (PostgreSQL's and MariaDB's ``gman_function_servers`` are made by the
#: install): the function's name as the outbox keeps it, its normalised server list.
SQLITE_FUNCTION_SERVERS_TABLE = (
    "CREATE TABLE IF NOT EXISTS gman_function_servers ("
    " function BLOB PRIMARY KEY, servers TEXT NOT NULL,"
    " set_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
)

# SQL the library runs through plpy, per database. {schema} is the quoted schema name.
_SQL = {
    "postgres": {
        # The settings, and a row 'function:<name>' per function with servers of its own
        # (setting names cannot start so): one query per call.
        "settings": (
            "SELECT name, value FROM {schema}._gman_settings()"
            " UNION ALL SELECT 'function:' || function, servers"
            " FROM {schema}.gman_function_servers"
        ),
        "function_servers_set": (
            "INSERT INTO {schema}.gman_function_servers (function, servers) VALUES ($1, $2)"
            " ON CONFLICT (function) DO UPDATE SET servers = excluded.servers, set_at = now()"
        ),
        "function_servers_unset": "DELETE FROM {schema}.gman_function_servers WHERE function = $1",
        "function_servers_types": ["text", "text"],
        "interrupts": "SELECT 1",
        "statement": "SELECT statement_timestamp()::text AS mark",
        "outbox_state": "SELECT state, detail FROM {schema}._gman_outbox_state($1)",
        "outbox_state_types": ["bigint"],
    },
    "sqlite": {
        "interrupts": "SELECT 1",
        "function_servers_table": SQLITE_FUNCTION_SERVERS_TABLE,
        "function_servers": "SELECT function, servers FROM gman_function_servers",
        "function_servers_set": (
            "INSERT INTO gman_function_servers (function, servers) VALUES (?, ?)"
            " ON CONFLICT (function) DO UPDATE SET servers = excluded.servers,"
            " set_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
        ),
        "function_servers_unset": "DELETE FROM gman_function_servers WHERE function = ?",
        "function_servers_types": [],
        "outbox_table": (
            "CREATE TABLE IF NOT EXISTS gman_outbox ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),"
            " function BLOB NOT NULL, unique_key BLOB, workload BLOB NOT NULL,"
            " priority TEXT NOT NULL CHECK (priority IN ('high', 'normal', 'low')))"
        ),
        "outbox": (
            "INSERT INTO gman_outbox (function, unique_key, workload, priority)"
            " VALUES (?, ?, ?, ?) RETURNING id"
        ),
        "outbox_types": [],
        "outbox_state": (
            "SELECT 'pending' AS state, 'in the outbox since ' || created_at AS detail"
            " FROM gman_outbox WHERE id = ?"
        ),
        "dead_state": (
            "SELECT 'dead' AS state,"
            " reason || ' (moved to gman_outbox_dead at ' || dead_at || ')' AS detail"
            " FROM gman_outbox_dead WHERE id = ?"
        ),
        "sent_state": (
            "SELECT 'submitted' AS state,"
            " handle || ' (submitted to ' || server || ' by the relay at ' || sent_at || ')'"
            " AS detail FROM gman_outbox_sent WHERE id = ?"
        ),
        "tables": (
            "SELECT name FROM sqlite_master WHERE type = 'table'"
            " AND name IN ('gman_outbox', 'gman_outbox_dead', 'gman_outbox_sent')"
        ),
        "outbox_state_types": [],
    },
}


class _Lost(Exception):
    """The connection to a job server broke (or was found dead)."""


class _Timeout(Exception):
    pass


# ------------------------------------------------------------------------------ arguments


#: The SQLSTATE of each kind of failure (docs/design.md has the table). GM... is gearsql's own
#: class; the others are PostgreSQL's standard codes that mean the same.
UNREACHABLE = "GM001"  # no job server could be reached, or the connection was lost
TIMEOUT = "GM002"  # no answer or result within the 'timeout' setting
WORK_FAIL = "GM003"  # the worker failed the job (WORK_FAIL)
WORK_EXCEPTION = "GM004"  # the worker raised an exception (WORK_EXCEPTION)
REFUSED = "GM005"  # the job server refused the job (too large, bad name)
BAD_SETTING = "GM006"  # a setting an administrator must fix
BAD_ARGUMENT = "22023"  # invalid_parameter_value: a bad argument, or a workload too large
BAD_RESULT = "22021"  # character_not_in_repertoire: a result text cannot hold
NOT_AN_INTEGER = "22P02"  # invalid_text_representation: gman_sum got a result not a number
NOT_ALLOWED = "42501"  # insufficient_privilege: a job server outside the allowed ones


def _fail(plpy, message, detail=None, hint=None, sqlstate=BAD_ARGUMENT):
    fields = {"sqlstate": sqlstate}
    if detail is not None:
        fields["detail"] = detail
    if hint is not None:
        fields["hint"] = hint
    plpy.error(message, **fields)
    raise AssertionError("plpy.error returned")  # plpy.error always raises


def _as_bytes(value):
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (int, float)):  # SQLite passes numbers as they are stored
        return str(value).encode("ascii")
    return bytes(value)


def _function(plpy, name, function):
    if function is None:
        _fail(plpy, f"{name}: the function name is NULL")
    raw = _as_bytes(function)
    problem = protocol.check_function_name(raw)
    if problem is protocol.ArgumentProblem.FUNCTION_TOO_LARGE:
        _fail(
            plpy,
            f"{name}: the function name is longer than "
            f"{protocol.MAX_FUNCTION_NAME} bytes ({len(raw)} bytes)",
        )
    if problem is protocol.ArgumentProblem.FUNCTION_HAS_NUL:
        _fail(plpy, f"{name}: the function name contains a NUL byte, the protocol's separator")
    if problem is protocol.ArgumentProblem.FUNCTION_EMPTY:
        _fail(plpy, f"{name}: the function name is empty")
    return raw


def _unique(plpy, name, unique):
    if unique is None:
        return b""
    raw = _as_bytes(unique)
    problem = protocol.check_unique(raw)
    if problem is protocol.ArgumentProblem.UNIQUE_TOO_LARGE:
        _fail(
            plpy,
            f"{name}: the unique id is longer than {protocol.MAX_UNIQUE} bytes ({len(raw)} bytes)",
        )
    if problem is protocol.ArgumentProblem.UNIQUE_HAS_NUL:
        _fail(plpy, f"{name}: the unique id contains a NUL byte, the protocol's separator")
    return raw


def _workload(plpy, name, workload):
    if workload is None:
        _fail(plpy, f"{name}: the workload is NULL")
    return _as_bytes(workload)


def _check_size(plpy, GD, schema, name, data, settings):
    """Refuse a workload above the ``max_workload`` setting before it goes anywhere: a job
    server would refuse its packet (and close the connection), or the relay could never
    submit its outbox row."""
    limit = settings["max_workload"]
    if limit and len(data) > limit:
        _fail(
            plpy,
            f"{name}: the workload is {len(data)} bytes, more than the max_workload "
            f"setting ({limit} bytes)",
            hint="a job server refuses a packet above its maximum size; pass a reference to "
            "the data (a key, a path) instead, or an administrator raises max_workload"
            + _where(GD, schema)
            + " and the job server's limit together",
        )


def _result(plpy, name, data, binary):
    """A worker's result as the SQL function returns it: NULL when empty, bytes for a binary
    workload, text (UTF-8) for a text one."""
    if not data:
        return None
    if binary:
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        _fail(
            plpy,
            f"{name}: the worker's result is not UTF-8 text",
            hint="pass the workload as bytea/BLOB to get the result as bytes",
            sqlstate=BAD_RESULT,
        )
    if "\0" in text:
        _fail(
            plpy,
            f"{name}: the worker's result contains a NUL byte, which text cannot hold",
            hint="pass the workload as bytea/BLOB to get the result as bytes",
            sqlstate=BAD_RESULT,
        )
    return text


# ------------------------------------------------------------------------------- settings


def _quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def _dialect(GD):
    return GD.get(_DIALECT, "postgres")


def _sql(GD, key, schema):
    return _SQL[_dialect(GD)][key].replace("{schema}", _quote_ident(schema))


def _where(GD, schema):
    if _dialect(GD) == "postgres":
        return f" (table {schema}.gman_settings)"
    return " (gearsql.sqlite.register(..., servers=...))"


def _settings(plpy, GD, schema):
    """The settings, read on every call, with ``functions``: {function name (bytes): its
    server list as gman_servers_set(servers, function) recorded it} (SQLite: None until
    :func:`_functions` reads them, since a background call into the outbox needs none)."""
    static = GD.get(_STATIC_SETTINGS)
    functions = {}
    if static is not None:
        values = dict(static)
        functions = None
    else:
        values = dict(DEFAULTS)
        key = "gearsql.plan.settings." + schema
        plan = GD.get(key)
        if plan is None:
            plan = GD[key] = plpy.prepare(_sql(GD, "settings", schema))
        for row in plpy.execute(plan):
            if row["name"].startswith("function:"):
                functions[row["name"][9:].encode("utf-8")] = row["value"]
            else:
                values[row["name"]] = row["value"]
    try:
        settings = {
            "servers": parse_servers(values["servers"]),
            "background_mode": values["background_mode"],
            "connect_timeout": float(values["connect_timeout"]),
            "timeout": float(values["timeout"]),
            "poll_interval": float(values["poll_interval"]),
            "max_workload": _max_workload(values.get("max_workload")),
            "tls": _tls_context(GD, values),
            "functions": functions,
        }
    except (ValueError, OSError) as exc:
        _fail(
            plpy,
            f"gearsql: bad setting: {exc}",
            hint="an administrator fixes it" + _where(GD, schema),
            sqlstate=BAD_SETTING,
        )
    if settings["background_mode"] not in BACKGROUND_MODES:
        _fail(
            plpy,
            f"gearsql: bad setting background_mode={settings['background_mode']!r}",
            hint="it is 'transactional' or 'immediate'",
            sqlstate=BAD_SETTING,
        )
    return settings


def _max_workload(text):
    """The ``max_workload`` setting in bytes (0: no limit), read as PostgreSQL's background
    functions read it (up to 18 digits, spaces around them; empty is 0), so that a bad value is
    the same error in every mode: ValueError naming the value."""
    digits = str(text if text is not None else "").strip(" ") or "0"
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 18):
        raise ValueError(f"max_workload={digits!r}")
    return int(digits)


def _tls_context(GD, values):
    """The SSLContext the settings ask for (None: plaintext), made once per session and
    settings; ValueError or OSError when a file cannot be used."""
    switch = str(values.get("ssl") or "").strip().lower()
    files = tuple(
        str(values.get(name) or "") for name in ("ssl_ca_file", "ssl_certificate", "ssl_key")
    )
    if switch not in _SSL_ON + _SSL_OFF:
        raise ValueError(f"ssl={switch!r} (it is on or off)")
    if switch not in _SSL_ON and not any(files):
        return None
    import ssl  # here, not at the top: importing ssl costs a new backend's first call ~25 ms

    cache = GD.setdefault("gearsql.tls", {})
    context = cache.get(files)
    if context is None:
        ca_file, certificate, key = files
        if key and not certificate:
            raise ValueError("ssl_key is set but ssl_certificate is not")
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            if ca_file:
                context.load_verify_locations(cafile=ca_file)
            if certificate:
                context.load_cert_chain(certificate, key or None)
        except ssl.SSLError as exc:
            raise ValueError(f"ssl_ca_file/ssl_certificate/ssl_key: {exc.reason or exc}") from None
        except OSError as exc:
            raise OSError(f"cannot read {exc.filename}: {exc.strerror or exc}") from None
        cache.clear()
        cache[files] = context
    return context


def parse_servers(text):
    """``[(host, port)]`` from ``"host[:port],..."``; ValueError names a bad entry."""
    servers = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        host, port = item, DEFAULT_PORT
        if item.startswith("["):
            end = item.find("]")
            if end < 0:
                raise ValueError(f"bad job server address {item!r}")
            host, rest = item[1:end], item[end + 1 :]
            if rest:
                if not rest.startswith(":") or not rest[1:].isdigit():
                    raise ValueError(f"bad job server address {item!r}")
                port = int(rest[1:])
        elif item.count(":") == 1:
            host, _, port_text = item.partition(":")
            if not port_text.isdigit():
                raise ValueError(f"bad job server address {item!r}")
            port = int(port_text)
        if not host or not 0 < port < 65536:
            raise ValueError(f"bad job server address {item!r}")
        if (host, port) not in servers:
            servers.append((host, port))
    if not servers:
        raise ValueError("the job server list is empty")
    return servers


def _format(address):
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Session:
    """What one database session keeps between calls, per schema: the servers it chose and its
    connections."""

    def __init__(self):
        self.chosen = None
        self.links = {}
        self.next_server = 0
        self.sums = {}
        self.sum_counter = 0


def _session(GD, schema):
    sessions = GD.setdefault(_STATE, {})
    session = sessions.get(schema)
    if session is None:
        session = sessions[schema] = _Session()
    return session


def _functions(plpy, settings):
    """``settings["functions"]``, read from SQLite's table at the first need of a call."""
    functions = settings["functions"]
    if functions is None:
        functions = settings["functions"] = {}
        try:
            rows = plpy.execute(_SQL["sqlite"]["function_servers"])
        except plpy.SPIError as exc:
            # The first gman_servers_set(servers, function) makes the table: none chosen yet.
            if "no such table" not in str(exc):
                raise
            rows = []
        for row in rows:
            functions[_as_bytes(row["function"])] = row["servers"]
    return functions


def _targets(plpy, GD, schema, settings, name, function=None):
    """The job servers to use for a job of ``function``: those gman_servers_set(servers,
    function) chose for it that are still allowed; else those this session chose with
    gman_servers_set(servers) that are still allowed; else every allowed one."""
    allowed = settings["servers"]
    entry = _functions(plpy, settings).get(function) if function is not None else None
    if entry is not None:
        try:
            chosen = parse_servers(entry)
        except ValueError as exc:
            _fail(
                plpy,
                f"gearsql: bad job server list for function {_shown(function)} in "
                f"gman_function_servers: {exc}",
                hint="set it again with gman_servers_set(servers, function)",
                sqlstate=BAD_SETTING,
            )
        targets = [address for address in chosen if address in allowed]
        if not targets:
            _fail(
                plpy,
                f"{name}: none of the job servers chosen for function {_shown(function)} with "
                "gman_servers_set is allowed any more",
                detail="chosen: "
                + ", ".join(map(_format, chosen))
                + "; allowed: "
                + ", ".join(map(_format, allowed)),
                hint="choose again with gman_servers_set(servers, function), or remove the "
                "choice with gman_servers_set(NULL, function)",
                sqlstate=NOT_ALLOWED,
            )
        return targets
    chosen = _session(GD, schema).chosen
    if chosen:
        targets = [address for address in chosen if address in allowed]
        if not targets:
            _fail(
                plpy,
                f"{name}: none of the job servers chosen with gman_servers_set is allowed any more",
                detail="allowed: " + ", ".join(map(_format, allowed)),
                sqlstate=NOT_ALLOWED,
            )
        return targets
    return allowed


def _shown(function):
    return repr(function.decode("utf-8", "replace"))


def _wanted(plpy, GD, schema, name, servers, settings):
    """``servers`` parsed, each of them checked against the allowed ones."""
    try:
        wanted = parse_servers(servers)
    except ValueError as exc:
        _fail(plpy, f"{name}: {exc}")
    allowed = settings["servers"]
    refused = [address for address in wanted if address not in allowed]
    if refused:
        _fail(
            plpy,
            f"{name}: job server {_format(refused[0])} is not allowed",
            detail="allowed: " + ", ".join(map(_format, allowed)),
            hint="an administrator lists the job servers this database may reach in the "
            "'servers' setting" + _where(GD, schema),
            sqlstate=NOT_ALLOWED,
        )
    return wanted


def servers_set(plpy, GD, schema, servers):
    """gman_servers_set(servers): choose, for this session, among the job servers the settings
    allow."""
    name = "gman_servers_set"
    if servers is None:
        _fail(plpy, f"{name}: the server list is NULL")
    settings = _settings(plpy, GD, schema)
    wanted = _wanted(plpy, GD, schema, name, servers, settings)
    session = _session(GD, schema)
    for address in list(session.links):
        if address not in wanted:
            session.links.pop(address).close()
    session.chosen = wanted
    return True


def function_servers_set(plpy, GD, schema, servers, function):
    """gman_servers_set(servers, function): record, for the whole database, that jobs of
    ``function`` go to ``servers`` (checked against the allowed ones), in direct calls and
    through the relay; NULL ``servers`` removes the record. Returns the normalised list (NULL
    after a removal). The record is a row of ``gman_function_servers``, written in the
    caller's transaction."""
    name = "gman_servers_set"
    fn = _function(plpy, name, function)
    settings = _settings(plpy, GD, schema)
    text = None
    if servers is not None:
        text = ",".join(map(_format, _wanted(plpy, GD, schema, name, servers, settings)))
    sqlite = _dialect(GD) == "sqlite"
    if sqlite:
        # Every time: a table created inside a transaction that rolled back is gone again.
        plpy.execute(_SQL["sqlite"]["function_servers_table"])
    query = "function_servers_set" if text is not None else "function_servers_unset"
    key = f"gearsql.plan.{query}.{schema}"
    plan = GD.get(key)
    if plan is None:
        types = _SQL[_dialect(GD)]["function_servers_types"]
        plan = GD[key] = plpy.prepare(
            _sql(GD, query, schema), types if text is not None else types[:1]
        )
    stored = fn if sqlite else fn.decode("utf-8")
    plpy.execute(plan, [stored, text] if text is not None else [stored])
    return text


# ---------------------------------------------------------------------------- connections


def _open(address, timeout):
    """A TCP connection to ``address`` (host, port), made as ``socket.create_connection`` makes
    it (each address of the name in turn; the first error if none answers) but with the C
    ``_socket`` module: importing ``socket`` cost a new backend's first call 2.6 ms (with
    ``selectors``; 4.5 ms more for ``enum``, which the library no longer needs otherwise). An
    ASCII host name goes to getaddrinfo as bytes, since a str is encoded with the ``idna``
    codec, whose import (with ``re``) cost 3.1 ms more."""
    host, port = address
    if host.isascii():
        host = host.encode("ascii")
    errors = []
    for family, kind, proto, _name, target in _socket.getaddrinfo(
        host, port, 0, _socket.SOCK_STREAM
    ):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(target)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        return sock
    if errors:
        raise errors[0]
    raise OSError(f"getaddrinfo returned no address for {address[0]!r}")


class _Link:
    """One connection to one job server: a socket driving a sans-IO ClientConnection."""

    def __init__(self, address, connect_timeout, tls=None):
        self.address = address
        self.name = _format(address)
        self.core = cc.ClientConnection()
        self.timeout = connect_timeout
        self.sock = _open(address, connect_timeout)
        self.sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        self.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1)
        self.sock.settimeout(connect_timeout)
        #: With TLS, the socket is an SSLSocket: the handshake happens here, within the timeout.
        self.tls = tls is not None
        if tls is not None:
            try:
                self.sock = tls.wrap_socket(self.sock, server_hostname=address[0])
            except BaseException:
                self.sock.close()
                raise
        self.fresh = True
        # Events that arrived together with an awaited one (a fast worker's WORK_COMPLETE in the
        # same read as JOB_CREATED) and belong to the next wait.
        self.backlog = []

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def looks_alive(self):
        """False when the server closed this (cached) connection, e.g. because it restarted."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable:
                return True
            if self.tls:
                # A TLS record without application data (a session ticket) is not a sign.
                return self._recv_nowait() is None
            # Nothing is expected while idle: EOF, a reset, or stray bytes all mean "start over".
            return False
        except (OSError, ValueError):
            return False

    def _recv_nowait(self):
        """TLS only: the application data that can be read now, or None when the records that
        arrived held none."""
        import ssl  # loaded already: a TLS link exists

        self.sock.setblocking(False)
        try:
            return self.sock.recv(262144)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        finally:
            self.sock.settimeout(self.timeout)

    def send(self):
        data = self.core.data_to_send()
        if data:
            try:
                self.sock.sendall(data)
            except OSError as exc:
                raise _Lost(str(exc)) from None

    def receive(self, timeout):
        """Events from whatever arrives within ``timeout`` seconds ([] when nothing did)."""
        if not (self.tls and self.sock.pending()):
            readable, _, _ = select.select([self.sock], [], [], timeout)
            if not readable:
                return []
        try:
            data = self._recv_nowait() if self.tls else self.sock.recv(262144)
        except OSError as exc:
            raise _Lost(str(exc)) from None
        if data is None:
            return []
        if not data:
            raise _Lost("the job server closed the connection")
        events = self.core.receive_data(data)
        for event in events:
            if isinstance(event, cc.ProtocolBroken):
                raise _Lost(event.reason)
        return events


class _Waiter:
    """Waits in short slices so that a query cancel or statement timeout stops the wait: between
    slices a cheap statement runs, and the database raises its cancel error there."""

    def __init__(self, plpy, GD, schema, settings, name):
        self.plpy = plpy
        self.GD = GD
        self.schema = schema
        self.name = name
        self.poll = max(0.01, settings["poll_interval"])
        self.timeout = settings["timeout"]
        # A call that waits more than once (gman_map) sets one deadline for all its waits.
        self.deadline = settings.get("deadline") or time.monotonic() + self.timeout
        self.checked = time.monotonic()

    def check_interrupts(self):
        key = "gearsql.plan.interrupts"
        plan = self.GD.get(key)
        if plan is None:
            plan = self.GD[key] = self.plpy.prepare(_sql(self.GD, "interrupts", self.schema))
        self.plpy.execute(plan)
        self.checked = time.monotonic()

    def events(self, link):
        now = time.monotonic()
        if now >= self.deadline:
            raise _Timeout()
        if now - self.checked >= self.poll:
            self.check_interrupts()
        return link.receive(min(self.poll, self.deadline - now))


def _connect(plpy, GD, schema, settings, address):
    session = _session(GD, schema)
    link = session.links.get(address)
    if link is not None:
        if link.looks_alive() and link.core.waiting == 0 and not link.backlog:
            link.fresh = False
            return link
        session.links.pop(address, None)
        link.close()
    link = _Link(address, settings["connect_timeout"], settings["tls"])
    try:
        # Ask for WORK_EXCEPTION so a worker's exception text reaches SQL; a server that refuses
        # the option still works (the exception then arrives as WORK_FAIL).
        link.core.option("exceptions", b"exceptions")
        link.send()
        waiter = _Waiter(plpy, GD, schema, settings, "connect")
        waiter.deadline = time.monotonic() + settings["connect_timeout"]
        answered = False
        while not answered:
            for event in waiter.events(link):
                if isinstance(event, (cc.Answer, cc.ErrorReply)) and event.token == "exceptions":
                    answered = True
    except BaseException:
        link.close()
        raise
    session.links[address] = link
    return link


def _drop(GD, schema, link):
    session = _session(GD, schema)
    if session.links.get(link.address) is link:
        del session.links[link.address]
    link.close()


def _order(GD, schema, targets, unique):
    """Servers to try, in order: a unique picks its server by hash so that the same unique always
    reaches the same server and coalesces; without one, spread round-robin."""
    if len(targets) == 1:
        return list(targets)
    if unique:
        import zlib  # here: importing it cost every new backend's first call 0.1 ms

        start = zlib.crc32(unique) % len(targets)
    else:
        session = _session(GD, schema)
        start = session.next_server % len(targets)
        session.next_server += 1
    return targets[start:] + targets[:start]


def _submit(plpy, GD, schema, settings, name, requests, unique=b""):
    """Send ``requests`` (a list of (token, function, unique, data, Priority, background)) on one
    connection and wait for every JOB_CREATED. Returns (link, {token: handle}).

    A cached connection found dead (the job server restarted) is replaced once; a server that
    cannot be reached makes the next allowed one be tried. Errors are plpy.error. The servers
    are those of the first request's function: the caller passes requests that share them
    (see :func:`_foreground`).
    """
    targets = _targets(plpy, GD, schema, settings, name, requests[0][1])
    errors = []
    for address in _order(GD, schema, targets, unique):
        for attempt in (0, 1):
            try:
                link = _connect(plpy, GD, schema, settings, address)
            except _Timeout:
                errors.append(
                    f"{_format(address)}: no answer within {settings['connect_timeout']:g} s"
                )
                _session(GD, schema).links.pop(address, None)
                break
            except (OSError, _Lost) as exc:
                errors.append(f"{_format(address)}: {_reason(exc)}")
                _session(GD, schema).links.pop(address, None)
                break
            try:
                return link, _send_and_confirm(plpy, GD, schema, settings, name, link, requests)
            except _Lost as exc:
                _drop(GD, schema, link)
                if link.fresh or attempt == 1:
                    if _reachable(address, settings):
                        _refused_on_size(plpy, name, link, requests, exc)
                    errors.append(f"{link.name}: {exc}")
                    break
                # A cached connection that broke before JOB_CREATED: reconnect once.
            except BaseException:
                _drop(GD, schema, link)
                raise
    _fail(
        plpy,
        f"{name}: cannot reach a job server",
        detail="; ".join(errors),
        hint="check that the job server runs and is listed in the 'servers' setting",
        sqlstate=UNREACHABLE,
    )


def _packet_bytes(requests):
    """The size of the largest submission packet of ``requests``."""
    return max(
        12 + len(function) + len(unique) + len(data) + 2
        for _token, function, unique, data, _priority, _background in requests
    )


def _reachable(address, settings):
    """Whether the job server accepts a new connection (it closed ours for another reason
    than being down)."""
    try:
        probe = _open(address, settings["connect_timeout"])
    except OSError:
        return False
    try:
        if settings["tls"] is not None:
            # A TLS server would log a plaintext probe as a refused client.
            probe = settings["tls"].wrap_socket(probe, server_hostname=address[0])
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _refused_on_size(plpy, name, link, requests, exc):
    """A job server that is up and closed the connection while taking a job did so because of
    the job: gearsql's and gearmand's servers close it after a packet above their maximum size
    (the ERROR before the close is lost when the reset overtakes it). Say so; the caller's
    generic error follows for small packets, where the size cannot be the cause."""
    size = _packet_bytes(requests)
    if size > 1024 * 1024:
        _fail(
            plpy,
            f"{name}: the job server {link.name} closed the connection while taking a "
            f"job of {size} bytes ({exc}); it is up, so the job is most likely larger than "
            "its maximum packet size",
            hint="set the max_workload setting to the job server's limit (gearsql server "
            "--max-packet-size) to be told before anything is sent; pass a reference to the "
            "data instead of the data",
            sqlstate=REFUSED,
        )


def _reason(exc):
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):  # what socket.timeout is since Python 3.10
        return "connect timed out"
    return str(exc) or type(exc).__name__


def _send_and_confirm(plpy, GD, schema, settings, name, link, requests):
    for token, function, unique, data, priority, background in requests:
        link.core.submit(token, function, unique, data, priority, background)
    link.send()
    handles = {}
    waiter = _Waiter(plpy, GD, schema, settings, name)
    try:
        while len(handles) < len(requests):
            for event in waiter.events(link):
                if isinstance(event, cc.JobCreated):
                    handles[event.token] = event.handle
                elif not isinstance(event, cc.ErrorReply):
                    link.backlog.append(event)
                else:
                    _drop(GD, schema, link)
                    why = ""
                    if event.code == "ARGUMENT_TOO_LARGE":
                        why = (
                            f" (a packet of {_packet_bytes(requests)} bytes: more than the "
                            "server's maximum packet size)"
                        )
                    _fail(
                        plpy,
                        f"{name}: the job server {link.name} refused the job: "
                        f"{event.code} {event.text}".rstrip()
                        + why,
                        sqlstate=REFUSED,
                    )
    except _Timeout:
        _drop(GD, schema, link)
        _fail(
            plpy,
            f"{name}: the job server {link.name} did not confirm the job within "
            f"{settings['timeout']:g} s",
            sqlstate=TIMEOUT,
        )
    return handles


def _foreground(plpy, GD, schema, settings, name, requests):
    """Run the foreground ``requests`` (of one or more functions) and return {token: result}.
    Requests whose functions share their job servers go together on one connection; groups
    bound for different servers (functions with servers of their own) run one after the
    other, within one 'timeout' for the whole call."""
    groups = {}
    keys = {}
    for request in requests:
        key = keys.get(request[1])
        if key is None:
            key = keys[request[1]] = tuple(_targets(plpy, GD, schema, settings, name, request[1]))
        groups.setdefault(key, []).append(request)
    if len(groups) > 1 and not settings.get("deadline"):
        settings["deadline"] = time.monotonic() + settings["timeout"]
    results = {}
    for group in groups.values():
        link, handles = _submit(plpy, GD, schema, settings, name, group)
        results.update(_results(plpy, GD, schema, settings, name, link, handles))
    return results


def _results(plpy, GD, schema, settings, name, link, handles):
    """Wait for every foreground job of ``handles`` to end; {token: result bytes}.

    On any error (including a query cancel) the connection is closed, which tells the job server
    the client left: jobs not yet started are dropped, and no stale result can reach a later call.
    """
    results = {}
    pieces = {token: [] for token in handles}
    waiter = _Waiter(plpy, GD, schema, settings, name)
    try:
        while len(results) < len(handles):
            if link.backlog:
                events, link.backlog = link.backlog, []
            else:
                events = waiter.events(link)
            for event in events:
                if isinstance(event, cc.JobUpdate):
                    if event.packet.type == protocol.PacketType.WORK_DATA:
                        pieces[event.token].append(event.packet.args[1])
                elif isinstance(event, cc.JobDone):
                    packet = event.packet
                    handle = handles[event.token].decode("utf-8", "replace")
                    if packet.type == protocol.PacketType.WORK_COMPLETE:
                        pieces[event.token].append(packet.args[1])
                        results[event.token] = b"".join(pieces[event.token])
                    elif packet.type == protocol.PacketType.WORK_EXCEPTION:
                        text = packet.args[1].decode("utf-8", "replace")
                        _fail(
                            plpy,
                            f"{name}: the worker raised an exception in job {handle}: {text}",
                            sqlstate=WORK_EXCEPTION,
                        )
                    else:
                        _fail(
                            plpy,
                            f"{name}: the worker failed job {handle} (WORK_FAIL)",
                            sqlstate=WORK_FAIL,
                        )
    except _Timeout:
        _drop(GD, schema, link)
        _fail(
            plpy,
            f"{name}: no result within {settings['timeout']:g} s (the 'timeout' "
            f"setting) from {link.name}",
            hint="is a worker registered for the function?",
            sqlstate=TIMEOUT,
        )
    except _Lost as exc:
        _drop(GD, schema, link)
        _fail(
            plpy,
            f"{name}: lost the connection to {link.name} while waiting: {exc}",
            sqlstate=UNREACHABLE,
        )
    except BaseException:
        _drop(GD, schema, link)
        raise
    return results


# ------------------------------------------------------------------------------ functions


def do(plpy, GD, schema, name, priority, function, workload, unique=None):
    """gman_do, gman_do_high, gman_do_low: run a job and return its result (NULL if empty).
    ``priority`` is the word (``high``, ``normal``, ``low``)."""
    level = protocol.Priority.from_word(priority)
    fn = _function(plpy, name, function)
    uq = _unique(plpy, name, unique)
    data = _workload(plpy, name, workload)
    settings = _settings(plpy, GD, schema)
    _check_size(plpy, GD, schema, name, data, settings)
    link, handles = _submit(plpy, GD, schema, settings, name, [(0, fn, uq, data, level, False)], uq)
    results = _results(plpy, GD, schema, settings, name, link, handles)
    return _result(plpy, name, results[0], not isinstance(workload, str))


def do_background(plpy, GD, schema, name, priority, function, workload, unique=None):
    """gman_do*_background: start a job; immediate mode returns its handle, transactional mode
    writes an outbox row in the caller's transaction and returns ``outbox:<id>``. (PostgreSQL
    runs the transactional mode in PL/pgSQL, see gearsql/bridges/postgres.py, and calls
    :func:`submit_background` for the immediate one.)"""
    return _background(plpy, GD, schema, name, priority, function, workload, unique, True)


def submit_background(plpy, GD, schema, name, priority, function, workload, unique=None):
    """Submit a background job now, whatever the mode, and return its handle."""
    return _background(plpy, GD, schema, name, priority, function, workload, unique, False)


def _background(plpy, GD, schema, name, priority, function, workload, unique, outbox):
    level = protocol.Priority.from_word(priority)
    fn = _function(plpy, name, function)
    uq = _unique(plpy, name, unique)
    data = _workload(plpy, name, workload)
    settings = _settings(plpy, GD, schema)
    _check_size(plpy, GD, schema, name, data, settings)
    if outbox and settings["background_mode"] == "transactional":
        return _outbox(plpy, GD, schema, fn, uq, data, level)
    _link, handles = _submit(plpy, GD, schema, settings, name, [(0, fn, uq, data, level, True)], uq)
    return handles[0].decode("utf-8", "replace")


def _outbox(plpy, GD, schema, function, unique, data, priority):
    if _dialect(GD) == "sqlite":
        # Every time: a table created inside a transaction that rolled back is gone again.
        plpy.execute(_sql(GD, "outbox_table", schema))
    key = "gearsql.plan.outbox." + schema
    plan = GD.get(key)
    if plan is None:
        plan = GD[key] = plpy.prepare(
            _sql(GD, "outbox", schema), _SQL[_dialect(GD)]["outbox_types"]
        )
    rows = plpy.execute(plan, [function, unique or None, data, priority.word])
    return f"outbox:{rows[0]['id']}"


def _outbox_status(plpy, GD, schema, name, outbox_id):
    """The status of ``outbox:<id>``, from the database alone: pending (still in the outbox),
    dead (in gman_outbox_dead, with the reason), submitted (in gman_outbox_sent: ``detail``
    is the job server's handle, then where and when), else submitted without a record (the
    record was pruned, the install predates it, or the transaction never committed)."""
    status = {
        "known": False,
        "running": False,
        "numerator": None,
        "denominator": None,
        "state": "submitted",
        "detail": "no longer in the outbox: the relay submitted it (or the transaction "
        "that wrote it never committed)",
    }
    queries = ["outbox_state"]
    if _dialect(GD) == "sqlite":
        tables = {row["name"] for row in plpy.execute(_SQL["sqlite"]["tables"])}
        queries = [
            query
            for query, table in (
                ("outbox_state", "gman_outbox"),
                ("dead_state", "gman_outbox_dead"),
                ("sent_state", "gman_outbox_sent"),
            )
            if table in tables
        ]
    for query in queries:
        key = f"gearsql.plan.{query}.{schema}"
        plan = GD.get(key)
        if plan is None:
            plan = GD[key] = plpy.prepare(
                _sql(GD, query, schema), _SQL[_dialect(GD)]["outbox_state_types"]
            )
        for row in plpy.execute(plan, [outbox_id]):
            status["state"] = row["state"]
            status["detail"] = row["detail"]
            status["known"] = row["state"] == "pending"
            return status
    return status


def job_status(plpy, GD, schema, handle):
    """gman_job_status: (known, running, numerator, denominator, state, detail) of a job
    handle, asked of each job server in turn until one knows it; ``state`` is ``running``,
    ``queued`` or ``unknown``. For ``outbox:<id>`` (a transactional background call) the
    database answers: ``pending``, ``dead`` (``detail``: why) or ``submitted``."""
    name = "gman_job_status"
    if handle is None:
        _fail(plpy, f"{name}: the job handle is NULL")
    raw = _as_bytes(handle)
    if not raw or b"\0" in raw or len(raw) > protocol.MAX_HANDLE:
        _fail(plpy, f"{name}: {handle!r} is not a job handle")
    if raw.startswith(b"outbox:") and raw[7:].isdigit():
        return _outbox_status(plpy, GD, schema, name, int(raw[7:]))
    settings = _settings(plpy, GD, schema)
    status = {
        "known": False,
        "running": False,
        "numerator": None,
        "denominator": None,
        "state": "unknown",
        "detail": None,
    }
    errors = []
    # The handle names no function: ask the session's servers, then those chosen for
    # functions (still allowed) that are not among them.
    targets = list(_targets(plpy, GD, schema, settings, name))
    for text in _functions(plpy, settings).values():
        try:
            chosen = parse_servers(text)
        except ValueError:
            continue  # a call of that function says what is wrong
        for address in chosen:
            if address in settings["servers"] and address not in targets:
                targets.append(address)
    for address in targets:
        try:
            link = _connect(plpy, GD, schema, settings, address)
        except (OSError, _Lost, _Timeout) as exc:
            errors.append(f"{_format(address)}: {_reason(exc)}")
            continue
        link.core.get_status("status", raw)
        waiter = _Waiter(plpy, GD, schema, settings, name)
        try:
            link.send()
            answer = None
            while answer is None:
                for event in waiter.events(link):
                    if isinstance(event, (cc.Answer, cc.ErrorReply)):
                        answer = event
        except (_Lost, _Timeout) as exc:
            _drop(GD, schema, link)
            errors.append(f"{link.name}: {_reason(exc)}")
            continue
        except BaseException:
            _drop(GD, schema, link)
            raise
        if isinstance(answer, cc.ErrorReply):
            errors.append(f"{link.name}: {answer.code} {answer.text}")
            continue
        _, known, running, numerator, denominator = answer.packet.args
        if known == b"1":
            return {
                "known": True,
                "running": running == b"1",
                "numerator": _int_or_none(numerator),
                "denominator": _int_or_none(denominator),
                "state": "running" if running == b"1" else "queued",
                "detail": link.name,
            }
    if errors and len(errors) == len(targets):
        _fail(
            plpy,
            f"{name}: cannot reach a job server",
            detail="; ".join(errors),
            sqlstate=UNREACHABLE,
        )
    return status


def _int_or_none(raw):
    try:
        return int(raw)
    except ValueError:
        return None


# ------------------------------------------------------------------------------- gman_sum


def sum_step(plpy, GD, schema, state, function, workload):
    """gman_sum's transition: remember one task per row (all are submitted at the final step).

    The tasks are kept in GD under a number that is the aggregate's state, because a list passed
    through SQL as the state would be copied on every row.
    """
    name = "gman_sum"
    fn = _function(plpy, name, function)
    data = _workload(plpy, name, workload)
    session = _session(GD, schema)
    if state is None or state not in session.sums:
        mark = _statement_mark(plpy, GD)
        # Tasks of aggregates that never reached their final step (the statement failed) are
        # dropped when a later statement starts a new one.
        for key in [key for key, (m, _) in session.sums.items() if m != mark]:
            del session.sums[key]
        session.sum_counter += 1
        state = session.sum_counter
        session.sums[state] = (mark, [])
    session.sums[state][1].append((fn, data))
    return state


def _statement_mark(plpy, GD):
    if _dialect(GD) != "postgres":
        return None
    return plpy.execute(_SQL["postgres"]["statement"])[0]["mark"]


def sum_final(plpy, GD, schema, state):
    """gman_sum's final step: submit every task at once, wait for all, add the integer results.
    NULL over no rows, like sum()."""
    name = "gman_sum"
    if state is None:
        return None
    entry = _session(GD, schema).sums.pop(state, None)
    if entry is None:
        _fail(plpy, f"{name}: the tasks of this aggregate were lost", sqlstate=UNREACHABLE)
    tasks = entry[1]
    if not tasks:
        return None
    settings = _settings(plpy, GD, schema)
    for _fn, data in tasks:
        _check_size(plpy, GD, schema, name, data, settings)
    normal = protocol.Priority.NORMAL
    requests = [(index, fn, b"", data, normal, False) for index, (fn, data) in enumerate(tasks)]
    results = _foreground(plpy, GD, schema, settings, name, requests)
    total = 0
    for index in range(len(tasks)):
        raw = results[index].strip()
        if not raw:
            continue
        try:
            total += int(raw)
        except ValueError:
            _fail(
                plpy,
                f"{name}: a worker's result is not an integer: "
                f"{raw[:40].decode('utf-8', 'replace')!r}",
                sqlstate=NOT_AN_INTEGER,
            )
    return total


# ------------------------------------------------------------------------------- gman_map


def map_jobs(plpy, GD, schema, name, function, workloads):
    """gman_map: one foreground job per workload, all submitted at once on the session's
    connection and run concurrently; their results in the order of the workloads (NULL for an
    empty one). PostgreSQL passes an array (text or bytea: the results follow) and gets the
    rows of a set-returning function; SQLite passes a JSON array of text and gets one back. A
    failed job fails the call; the 'timeout' setting bounds the whole call."""
    fn = _function(plpy, name, function)
    sqlite = _dialect(GD) == "sqlite"
    if workloads is None:
        _fail(plpy, f"{name}: the workloads are NULL")
    items = _json_workloads(plpy, name, workloads) if sqlite else workloads
    datas = []
    for position, item in enumerate(items, 1):
        if item is None:
            _fail(plpy, f"{name}: workload {position} is NULL")
        if isinstance(item, (list, dict, bool)):
            what = "an array of workloads of one dimension" if not sqlite else "a JSON array"
            _fail(plpy, f"{name}: workload {position} is not text: pass {what}")
        datas.append(_as_bytes(item))
    if not datas:
        return "[]" if sqlite else []
    settings = _settings(plpy, GD, schema)
    for position, data in enumerate(datas, 1):
        _check_size(plpy, GD, schema, f"{name} (workload {position})", data, settings)
    settings["deadline"] = time.monotonic() + settings["timeout"]
    normal = protocol.Priority.NORMAL
    requests = [(index, fn, b"", data, normal, False) for index, data in enumerate(datas)]
    link, handles = _submit(plpy, GD, schema, settings, name, requests)
    results = _results(plpy, GD, schema, settings, name, link, handles)
    if not sqlite:
        binary = not isinstance(items[0], str)
        return [_result(plpy, name, results[index], binary) for index in range(len(datas))]
    import json

    texts = []
    for index in range(len(datas)):
        try:
            texts.append(results[index].decode("utf-8") if results[index] else None)
        except UnicodeDecodeError:
            _fail(
                plpy,
                f"{name}: the worker's result {index + 1} is not UTF-8 text",
                hint="gman_map returns text in SQLite; call gman_do with a BLOB workload on "
                "each row for bytes",
                sqlstate=BAD_RESULT,
            )
    return json.dumps(texts, ensure_ascii=False)


def _json_workloads(plpy, name, workloads):
    """The workloads of an SQLite gman_map: a JSON array (text)."""
    import json

    items = None
    if isinstance(workloads, str):
        try:
            items = json.loads(workloads)
        except ValueError:
            pass
    if not isinstance(items, list):
        _fail(
            plpy,
            f"{name}: the workloads are not a JSON array",
            hint="pass json_array(...) or (SELECT json_group_array(x) FROM t)",
        )
    return items


def status_json(status):
    """The status as JSON text, for databases whose functions return one value (SQLite)."""
    import json  # here: a PostgreSQL backend's first call should not pay for it

    return json.dumps(status, sort_keys=True)


def close_all(GD):
    """Close every cached job server connection of this session (the host database's session
    ends; PostgreSQL needs no call, its backend exits)."""
    for session in GD.get(_STATE, {}).values():
        for link in session.links.values():
            link.close()
        session.links.clear()
