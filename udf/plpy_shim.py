"""A plpython3u-compatible ``plpy`` for running the udf bodies outside PostgreSQL.

It offers what the bodies use and what PL/Python documents for them: ``error``/``fatal`` (raise),
``warning``/``notice``/``info``/``log``/``debug`` (reported through a callback, by default the
``logging`` module), ``execute`` and ``prepare`` (run SQL through a callback the host database
supplies), ``quote_ident``/``quote_literal``/``quote_nullable``, and :func:`make_procedure`,
which compiles a body into a function the way PL/Python does: its arguments, ``plpy``, ``GD``
(shared by all bodies of a session) and ``SD`` (private to one function) in scope.
"""

import logging

log = logging.getLogger("gearsql.udf")


class Error(Exception):
    """What ``plpy.error`` raises: a SQL error. ``detail``, ``hint`` and ``sqlstate`` as in
    PostgreSQL; the full message ends with a ``SQLSTATE: <code>`` line when there is one."""

    def __init__(self, message, detail=None, hint=None, sqlstate=None):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.hint = hint
        self.sqlstate = sqlstate

    def full_message(self):
        parts = [self.message]
        if self.detail:
            parts.append("DETAIL: " + self.detail)
        if self.hint:
            parts.append("HINT: " + self.hint)
        if self.sqlstate:
            parts.append("SQLSTATE: " + self.sqlstate)
        return "\n".join(parts)


class Fatal(Error):
    pass


class SPIError(Error):
    """A statement run with ``plpy.execute`` failed."""


class Plan:
    def __init__(self, query, types):
        self.query = query
        self.types = list(types or [])


class Plpy:
    """The ``plpy`` module's API. ``run(query, args)`` runs one statement and returns its rows
    as dicts; ``report(level, message)`` receives notices (default: ``logging``)."""

    Error = Error
    Fatal = Fatal
    SPIError = SPIError

    def __init__(self, run, report=None):
        self._run = run
        self._report = report or _log

    def error(self, message, detail=None, hint=None, sqlstate=None, **_fields):
        raise Error(str(message), detail, hint, sqlstate)

    def fatal(self, message, detail=None, hint=None, sqlstate=None, **_fields):
        raise Fatal(str(message), detail, hint, sqlstate)

    def warning(self, message, **_fields):
        self._report("WARNING", str(message))

    def notice(self, message, **_fields):
        self._report("NOTICE", str(message))

    def info(self, message, **_fields):
        self._report("INFO", str(message))

    def log(self, message, **_fields):
        self._report("LOG", str(message))

    def debug(self, message, **_fields):
        self._report("DEBUG", str(message))

    def prepare(self, query, types=None):
        return Plan(query, types)

    def execute(self, query, args=None, limit=None):
        if isinstance(query, Plan):
            query = query.query
        try:
            rows = self._run(query, list(args or []))
        except Error:
            raise
        except Exception as exc:
            raise SPIError(str(exc)) from exc
        return rows if limit is None else rows[:limit]

    @staticmethod
    def quote_ident(name):
        return '"' + str(name).replace('"', '""') + '"'

    @staticmethod
    def quote_literal(value):
        return "'" + str(value).replace("'", "''") + "'"

    def quote_nullable(self, value):
        return "NULL" if value is None else self.quote_literal(value)


_LEVELS = {
    "WARNING": logging.WARNING,
    "NOTICE": logging.INFO,
    "INFO": logging.INFO,
    "LOG": logging.INFO,
    "DEBUG": logging.DEBUG,
}


def _log(level, message):
    log.log(_LEVELS.get(level, logging.INFO), "%s", message)


def make_procedure(name, params, body, plpy, GD, SD=None):
    """Compile ``body`` as PL/Python does: ``def <name>(<params>): <body>`` with ``plpy``,
    ``GD`` and ``SD`` as globals."""
    namespace = {"plpy": plpy, "GD": GD, "SD": {} if SD is None else SD}
    indented = "".join("    " + line + "\n" for line in body.splitlines()) or "    pass\n"
    source = "def __plpython_procedure_" + name + "(" + ", ".join(params) + "):\n" + indented
    exec(compile(source, "<" + name + ">", "exec"), namespace)
    return namespace["__plpython_procedure_" + name]
