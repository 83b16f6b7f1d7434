"""A blocking client for the job server's text admin protocol (``status``, ``workers``, ...).

It speaks to gearsql and to C gearmand alike; reply formats are those of docs/protocol.md §2:
list replies end with a ``.\\n`` line, single-line replies start with ``OK`` or ``ERR`` and end
with ``\\r\\n`` or ``\\n``. Framing and parsing are plain functions on bytes (no I/O), and
:class:`AdminClient` is the thin socket loop around them.

Names (functions, uniques, client ids) are returned as the ``bytes`` the server listed. gearsql
writes control bytes, spaces and non-UTF-8 bytes in names as ``\\xNN`` (and ``\\`` as ``\\\\``);
gearmand writes them raw. Arguments given as ``str`` are encoded as UTF-8. Server addresses are
parsed by :func:`gearsql._servers.parse_server` and ``parse_servers``, shared with the client,
the worker and the CLI (re-exported here).
"""

from __future__ import annotations

import re
import socket
import time
from types import TracebackType
from typing import NamedTuple

from gearsql._servers import DEFAULT_PORT, format_address, parse_server, parse_servers
from gearsql._tls import SslArg, client_context
from gearsql.errors import (
    AdminConnectionError,
    AdminError,
    AdminProtocolError,
    AdminTimeoutError,
    GearmanError,
    InvalidArgument,
)
from gearsql.stores.base import as_bytes

__all__ = [
    "DEFAULT_PORT",
    "AdminClient",
    "DeadLetterInfo",
    "FunctionCounters",
    "FunctionStatus",
    "JobInfo",
    "PriorityStatus",
    "RetrySettings",
    "ScheduleInfo",
    "WorkerInfo",
    "find_reply_end",
    "format_address",
    "parse_dead",
    "parse_error_line",
    "parse_server",
    "parse_servers",
]

DEFAULT_TIMEOUT = 10.0

# A reply longer than this is not an admin reply we can use; stop reading rather than grow
# without bound (a gearmand with a million queued jobs sends ~40 MB for `show jobs`).
MAX_REPLY = 256 * 1024 * 1024


# ---------------------------------------------------------------------------- parsed replies


class FunctionStatus(NamedTuple):
    """One line of ``status``: jobs of a function and the workers registered for it."""

    name: bytes
    total: int  # queued + running
    running: int
    workers: int  # registered workers, idle or not

    @property
    def queued(self) -> int:
        """Jobs waiting for a worker."""
        return self.total - self.running


class FunctionCounters(NamedTuple):
    """One line of gearsql's ``counters``: events since the server created the function, and
    the number and total seconds of jobs' waits (runnable until taken) and runs."""

    name: bytes
    submitted: int
    completed: int
    failed: int
    exceptions: int
    retried: int
    dead: int
    waits: int
    wait_seconds: float
    runs: int
    run_seconds: float


class PriorityStatus(NamedTuple):
    """One line of ``prioritystatus``: queued (not running) jobs per priority."""

    name: bytes
    high: int
    normal: int
    low: int
    workers: int


class WorkerInfo(NamedTuple):
    """One line of ``workers``: a connection (worker, client or admin) to the server.

    ``client_id`` is None when the connection set none (the server lists ``-``).
    """

    fd: int
    ip: str
    client_id: bytes | None
    functions: tuple[bytes, ...]


class JobInfo(NamedTuple):
    """One line of ``show jobs``.

    ``ignore`` is True for a cancelled job the server has not dropped yet; ``queued`` is
    gearmand's ``job_queued`` flag (a background job held by the queue). gearsql adds
    ``attempts`` (runs so far, the one under way included), ``state`` (``queued``,
    ``running``, ``retrying``...) and ``error`` (the last failed run's, None for none); they are
    None from C gearmand.
    """

    handle: bytes
    retries: int
    ignore: bool
    queued: bool
    attempts: int | None = None
    state: str | None = None
    error: bytes | None = None


class ScheduleInfo(NamedTuple):
    """One line of ``schedule list`` (gearsql only): a recurring job. ``spec`` is the cron
    expression (UTC), followed by ``catch-up=none`` or ``catch-up=all`` unless the schedule
    catches up the default way (``one``); ``due`` its next tick in epoch seconds (0: none),
    ``size`` the payload's length; ``name`` and ``function`` as the server escapes them in lists."""

    name: bytes
    function: bytes
    spec: str
    due: int
    size: int


class DeadLetterInfo(NamedTuple):
    """One line of ``show dead`` (gearsql only): a background job that used all its attempts.

    ``died`` is epoch seconds, ``size`` the payload's length; ``function``, ``unique`` and
    ``error`` are as the server escapes them in lists (see :func:`gearsql.admin.escape_name`).
    """

    id: int
    handle: bytes
    function: bytes
    unique: bytes
    attempts: int
    died: int
    size: int
    error: bytes | None


class RetrySettings(NamedTuple):
    """A function's retry policy as ``retries FUNCTION`` reports it (gearsql only): runs in all
    (0: no retries), backoff base and maximum in seconds, and whether it is the server's
    default rather than the function's own."""

    attempts: int
    base: float
    limit: float
    default: bool


# ---------------------------------------------------------------------------- sans-IO framing

_CODE = re.compile(rb"[A-Z][A-Z0-9_]*")


def find_reply_end(buffer: bytes, list_reply: bool) -> int | None:
    """Length of the complete reply at the start of ``buffer``, or None if more bytes are needed.

    A list reply ends with a ``.`` line; a single-line reply (and an ``ERR`` line sent instead
    of a list) ends at its first ``\\n``. An ``ERR`` in place of a list is told from a listed
    name starting with ``ERR `` by its ``\\r\\n`` ending, which no list line has.
    """
    first = buffer.find(b"\n")
    if first < 0:
        return None
    if not list_reply:
        return first + 1
    if buffer.startswith(b"ERR ") and buffer[first - 1 : first] == b"\r":
        return first + 1
    if buffer.startswith(b".\n"):
        return 2
    end = buffer.find(b"\n.\n")
    return None if end < 0 else end + 3


def parse_error_line(line: bytes) -> AdminError:
    """The :class:`AdminError` for an ``ERR ...`` line (without its line ending)."""
    rest = line[4:] if line.startswith(b"ERR ") else line[3:]
    word, _, tail = rest.partition(b" ")
    if _CODE.fullmatch(word):
        code = word.decode("ascii")
        text = tail.replace(b"+", b" ").decode("utf-8", "replace")
    else:
        code, text = "", rest.decode("utf-8", "replace")
    return AdminError(code, text, line)


def _strip_line(line: bytes) -> bytes:
    line = line[:-1] if line.endswith(b"\n") else line
    return line[:-1] if line.endswith(b"\r") else line


def _list_lines(reply: bytes) -> list[bytes]:
    """The lines of a complete list reply, without the terminator; raises AdminError on ERR."""
    if reply.startswith(b"ERR ") and reply.endswith(b"\r\n"):
        raise parse_error_line(_strip_line(reply))
    body = reply[: -len(b".\n")]
    return [] if not body else body[:-1].split(b"\n")


def _ok_value(reply: bytes) -> bytes:
    """The value after ``OK`` in a single-line reply; raises AdminError on ERR."""
    line = _strip_line(reply)
    if line.startswith(b"ERR"):
        raise parse_error_line(line)
    if line == b"OK" or line.startswith(b"OK "):
        return line[3:]
    raise AdminProtocolError(f"expected OK or ERR, got {line[:200]!r}")


def _int(field: bytes, line: bytes) -> int:
    try:
        return int(field)
    except ValueError:
        raise AdminProtocolError(f"not a number in admin reply line {line[:200]!r}") from None


def _name_and_fields(line: bytes, count: int, what: str) -> tuple[bytes, list[bytes]]:
    """A function's line of a ``what`` reply: its name (which may hold tabs) and the ``count``
    tab-separated fields after it."""
    fields = line.rsplit(b"\t", count)
    if len(fields) != count + 1:
        raise AdminProtocolError(f"bad {what} line {line[:200]!r}")
    return fields[0], fields[1:]


def parse_status(lines: list[bytes]) -> list[FunctionStatus]:
    """``status`` lines: ``NAME\\tTOTAL\\tRUNNING\\tWORKERS``."""
    result = []
    for line in lines:
        name, numbers = _name_and_fields(line, 3, "status")
        total, running, workers = (_int(number, line) for number in numbers)
        result.append(FunctionStatus(name, total, running, workers))
    return result


def parse_counters(lines: list[bytes]) -> list[FunctionCounters]:
    """``counters`` lines: the name, six event counts, then waits, their seconds, runs, theirs."""
    result = []
    for line in lines:
        name, numbers = _name_and_fields(line, 10, "counters")
        submitted, completed, failed, exceptions, retried, dead, waits, _, runs, _ = (
            _int(number, line) if index not in (7, 9) else 0 for index, number in enumerate(numbers)
        )
        try:
            wait_seconds, run_seconds = float(numbers[7]), float(numbers[9])
        except ValueError:
            raise AdminProtocolError(f"not a number in counters line {line[:200]!r}") from None
        result.append(
            FunctionCounters(
                name,
                submitted,
                completed,
                failed,
                exceptions,
                retried,
                dead,
                waits,
                wait_seconds,
                runs,
                run_seconds,
            )
        )
    return result


def parse_priority_status(lines: list[bytes]) -> list[PriorityStatus]:
    """``prioritystatus`` lines: ``NAME\\tHIGH\\tNORMAL\\tLOW\\tWORKERS``."""
    result = []
    for line in lines:
        name, numbers = _name_and_fields(line, 4, "prioritystatus")
        high, normal, low, workers = (_int(number, line) for number in numbers)
        result.append(PriorityStatus(name, high, normal, low, workers))
    return result


def parse_workers(lines: list[bytes]) -> list[WorkerInfo]:
    """``workers`` lines: ``FD IP CLIENT-ID : F1 F2`` (``:`` alone when no functions)."""
    result = []
    for line in lines:
        head, colon, tail = line.partition(b" :")
        fields = head.split(b" ", 2)
        if not colon or len(fields) != 3:
            raise AdminProtocolError(f"bad workers line {line[:200]!r}")
        fd, ip, client_id = fields
        result.append(
            WorkerInfo(
                _int(fd, line),
                ip.decode("ascii", "replace"),
                None if client_id == b"-" else client_id,
                tuple(name for name in tail.split(b" ") if name),
            )
        )
    return result


def parse_jobs(lines: list[bytes]) -> list[JobInfo]:
    """``show jobs`` lines: ``HANDLE\\tRETRIES\\tIGNORE_JOB\\tJOB_QUEUED``, and from gearsql
    ``\\tATTEMPTS\\tSTATE\\tERROR`` after them."""
    result = []
    for line in lines:
        fields = line.split(b"\t")
        if len(fields) not in (4, 7):
            raise AdminProtocolError(f"bad show jobs line {line[:200]!r}")
        handle, retries, ignore, queued = fields[:4]
        info = JobInfo(
            handle, _int(retries, line), _int(ignore, line) != 0, _int(queued, line) != 0
        )
        if len(fields) == 7:
            attempts, state, error = fields[4:]
            info = info._replace(
                attempts=_int(attempts, line),
                state=state.decode("ascii", "replace"),
                error=None if error == b"-" else error,
            )
        result.append(info)
    return result


def parse_dead(lines: list[bytes]) -> list[DeadLetterInfo]:
    """``show dead`` lines: ``ID\\tHANDLE\\tFUNCTION\\tUNIQUE\\tATTEMPTS\\tDIED\\tSIZE\\tERROR``."""
    result = []
    for line in lines:
        fields = line.split(b"\t")
        if len(fields) != 8:
            raise AdminProtocolError(f"bad show dead line {line[:200]!r}")
        id_, handle, function, unique, attempts, died, size, error = fields
        result.append(
            DeadLetterInfo(
                _int(id_, line),
                handle,
                function,
                unique,
                _int(attempts, line),
                _int(died, line),
                _int(size, line),
                None if error == b"-" else error,
            )
        )
    return result


_UNSENDABLE = {b" ": "a space", b"\r": "a carriage return", b"\n": "a line break", b"\0": "a NUL"}


def _word(value: bytes | str, what: str) -> bytes:
    """One argument of an admin command; the text protocol splits on spaces and lines."""
    data = as_bytes(value)
    if not data:
        raise InvalidArgument(f"{what} must not be empty")
    for bad, name in _UNSENDABLE.items():
        if bad in data:
            raise InvalidArgument(
                f"{what} {value!r} contains {name}, which the admin protocol cannot carry"
            )
    return data


# ---------------------------------------------------------------------------- the client


class AdminClient:
    """A blocking connection to one job server's admin protocol.

    ``host`` may carry the port (``"gearman.local:4731"``, ``"[::1]:4730"``). The connection is
    opened on first use (or by ``with``/:meth:`connect`) and reopened after a failure.
    ``timeout`` bounds the connect and each whole reply, in seconds.

    Every command raises :class:`~gearsql.errors.AdminError` for an ``ERR`` reply (except where
    noted), :class:`~gearsql.errors.AdminConnectionError` when the server cannot be reached or
    closes the connection, :class:`~gearsql.errors.AdminTimeoutError` (a subclass of it) when
    the reply does not come within ``timeout``, and :class:`~gearsql.errors.AdminProtocolError`
    for a reply it cannot parse. Bad arguments raise :class:`~gearsql.errors.InvalidArgument`
    (a ValueError) before anything is sent.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        ssl: SslArg = None,
        ssl_ca_file: str | None = None,
        ssl_certificate: str | None = None,
        ssl_key: str | None = None,
    ):
        parsed_host, parsed_port = parse_server(host, port or DEFAULT_PORT)
        if port is not None and parsed_port != port:
            raise InvalidArgument(f"two ports given: {host!r} and port={port}")
        self.address: tuple[str, int] = (parsed_host, parsed_port)
        self.timeout = timeout
        #: TLS (None: plaintext), as the client's: arguments, else ``GEARSQL_SSL*``.
        self.ssl_context = client_context(ssl, ssl_ca_file, ssl_certificate, ssl_key)
        self._sock: socket.socket | None = None
        self._buffer = b""

    def __repr__(self) -> str:
        return f"AdminClient({format_address(self.address)!r}, timeout={self.timeout})"

    @property
    def server(self) -> str:
        """The server as ``host:port``."""
        return format_address(self.address)

    # -- connection

    def connect(self) -> None:
        """Open the connection now, if it is not open. Raises AdminConnectionError."""
        if self._sock is not None:
            return
        try:
            sock = socket.create_connection(self.address, timeout=self.timeout)
            if self.ssl_context is not None:
                try:
                    sock = self.ssl_context.wrap_socket(sock, server_hostname=self.address[0])
                except BaseException:
                    sock.close()
                    raise
            self._sock = sock
        except TimeoutError:
            raise AdminTimeoutError(
                f"cannot connect to {self.server}: timed out after {self.timeout:g} s",
                self.address,
            ) from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise AdminConnectionError(
                f"cannot connect to {self.server}: {reason}", self.address
            ) from None
        self._buffer = b""

    def close(self) -> None:
        """Close the connection; the next command opens a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer = b""

    def __enter__(self) -> AdminClient:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _request(self, line: bytes, list_reply: bool) -> bytes:
        """Send one command line and return its complete reply."""
        self.connect()
        sock = self._sock
        assert sock is not None
        deadline = time.monotonic() + self.timeout
        try:
            sock.settimeout(self.timeout)
            sock.sendall(line + b"\r\n")
            while True:
                end = find_reply_end(self._buffer, list_reply)
                if end is not None:
                    reply, self._buffer = self._buffer[:end], self._buffer[end:]
                    return reply
                if len(self._buffer) > MAX_REPLY:
                    raise AdminProtocolError(f"admin reply from {self.server} is too long")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                data = sock.recv(1 << 16)
                if not data:
                    raise AdminConnectionError(
                        f"{self.server} closed the connection before replying to "
                        f"{line.decode('utf-8', 'replace')!r}",
                        self.address,
                    )
                self._buffer += data
        except GearmanError:
            self.close()
            raise
        except TimeoutError:
            self.close()
            raise AdminTimeoutError(
                f"no reply from {self.server} to {line.decode('utf-8', 'replace')!r} "
                f"within {self.timeout:g} s",
                self.address,
            ) from None
        except OSError as exc:
            self.close()
            raise AdminConnectionError(
                f"connection to {self.server} failed: {exc.strerror or exc}", self.address
            ) from None
        except BaseException:
            # A half-read reply (Ctrl-C mid-read) would be taken for the next command's.
            self.close()
            raise

    def _list(self, line: bytes) -> list[bytes]:
        return _list_lines(self._request(line, list_reply=True))

    def _ok(self, line: bytes) -> bytes:
        return _ok_value(self._request(line, list_reply=False))

    # -- commands

    def status(self) -> list[FunctionStatus]:
        """Every function the server knows, with its total and running jobs and workers."""
        return parse_status(self._list(b"status"))

    def priority_status(self) -> list[PriorityStatus]:
        """Queued jobs per priority for every function (gearmand 1.1.15 and later).

        Older servers raise AdminError with code ``UNKNOWN_COMMAND``.
        """
        return parse_priority_status(self._list(b"prioritystatus"))

    def counters(self) -> list[FunctionCounters]:
        """gearsql's event counters per function; C gearmand raises AdminError with code
        ``UNKNOWN_COMMAND``."""
        return parse_counters(self._list(b"counters"))

    def workers(self) -> list[WorkerInfo]:
        """Every connection to the server (clients and this one too) and its functions."""
        return parse_workers(self._list(b"workers"))

    def show_jobs(self) -> list[JobInfo]:
        """Every job the server holds, queued or running."""
        return parse_jobs(self._list(b"show jobs"))

    def show_unique_jobs(self) -> list[bytes]:
        """The unique ids of the jobs that have one."""
        return self._list(b"show unique jobs")

    def cancel_job(self, handle: bytes | str) -> bool:
        """Cancel a queued job: True when cancelled, False when the server knows no such job
        (``ERR UNKNOWN_JOB``). Other errors raise AdminError."""
        try:
            self._ok(b"cancel job " + _word(handle, "job handle"))
        except AdminError as exc:
            if exc.code == "UNKNOWN_JOB":
                return False
            raise
        return True

    def maxqueue(
        self, function: bytes | str, limit: int | tuple[int, int, int] | None = None
    ) -> None:
        """Cap the jobs of ``function``: one limit for all priorities, a ``(high, normal,
        low)`` triple, or None to remove the cap. 0 (or a negative number) means unlimited.

        The server ignores (and still answers ``OK`` for) a function it does not know yet.
        """
        line = b"maxqueue " + _word(function, "function name")
        if isinstance(limit, tuple):
            if len(limit) != 3:
                raise InvalidArgument("maxqueue takes one limit or three (high, normal, low)")
            line += b"".join(b" %d" % int(value) for value in limit)
        elif limit is not None:
            line += b" %d" % int(limit)
        self._ok(line)

    # -- gearsql's own: retries and dead letters (C gearmand answers UNKNOWN_COMMAND)

    def retries(self, function: bytes | str) -> RetrySettings:
        """The retry policy failed background jobs of ``function`` get."""
        value = self._ok(b"retries " + _word(function, "function name"))
        words = value.split()
        try:
            attempts = int(words[0])
            base, _, limit = words[1].partition(b":")
            return RetrySettings(
                attempts, float(base), float(limit), len(words) > 2 and words[2] == b"default"
            )
        except (IndexError, ValueError):
            raise AdminProtocolError(f"bad retries reply {value[:200]!r}") from None

    def set_retries(
        self,
        function: bytes | str,
        attempts: int | None,
        backoff: tuple[float, float] | float | None = None,
    ) -> None:
        """Give ``function`` its own retry policy, kept by the server's store: ``attempts`` runs
        in all (0: no retries), ``backoff`` base seconds or (base, max); None for
        ``attempts`` puts the function back on the server's default."""
        line = b"retries " + _word(function, "function name")
        if attempts is None:
            line += b" default"
        else:
            if attempts < 0:
                raise InvalidArgument("attempts must be 0 or more")
            line += b" %d" % attempts
            if isinstance(backoff, tuple):
                line += f" {float(backoff[0])!r}:{float(backoff[1])!r}".encode()
            elif backoff is not None:
                line += f" {float(backoff)!r}".encode()
        self._ok(line)

    def unique_window(self, function: bytes | str) -> tuple[float, bool]:
        """(seconds, is the server default) of ``function``'s unique window: how long the
        unique of a completed background job is remembered (0: not at all)."""
        value = self._ok(b"uniquewindow " + _word(function, "function name"))
        words = value.split()
        try:
            return float(words[0]), len(words) > 1 and words[1] == b"default"
        except (IndexError, ValueError):
            raise AdminProtocolError(f"bad uniquewindow reply {value[:200]!r}") from None

    def set_unique_window(self, function: bytes | str, seconds: float | None) -> None:
        """Give ``function`` its own unique window, kept by the server's store (None: back to
        the server's ``--unique-window``)."""
        line = b"uniquewindow " + _word(function, "function name")
        if seconds is None:
            line += b" default"
        else:
            if not 0 <= seconds < float("inf"):
                raise InvalidArgument("the unique window is 0 or more seconds")
            line += f" {float(seconds)!r}".encode()
        self._ok(line)

    def schedules(self) -> list[ScheduleInfo]:
        """The server's recurring schedules."""
        found = []
        for line in self._list(b"schedule list"):
            fields = line.split(b"\t")
            try:
                found.append(
                    ScheduleInfo(
                        fields[0],
                        fields[1],
                        fields[2].decode("ascii"),
                        int(fields[3]),
                        int(fields[4]),
                    )
                )
            except (IndexError, ValueError, UnicodeDecodeError):
                raise AdminProtocolError(f"bad schedule line {line[:200]!r}") from None
        return found

    def add_schedule(
        self, name: bytes | str, function: bytes | str, spec: str, data: bytes | str = b""
    ) -> int:
        """Define (or replace) schedule ``name``: a background job of ``function`` with
        ``data`` at each UTC minute the cron expression ``spec`` (minute hour day-of-month
        month weekday) matches, kept in the server's store. Returns its next tick (epoch
        seconds). ``spec`` may end with ``catch-up=one|none|all`` (what the schedule does
        with ticks missed while the server was down; gearsql._cron). Raises AdminError
        (INVALID_ARGUMENTS) for an expression the server refuses."""
        words = spec.split()
        options = [word for word in words if word.startswith("catch-up=")]
        line = b"schedule add %s%s %s %s" % (
            b"".join(_word(option, "catch-up") + b" " for option in options),
            _word(name, "schedule name"),
            _word(function, "function name"),
            b" ".join(_word(part, "cron field") for part in words if part not in options),
        )
        if data:
            line += b" " + b" ".join(_word(part, "data") for part in as_bytes(data).split())
        value = self._ok(line)
        try:
            return int(value)
        except ValueError:
            raise AdminProtocolError(f"bad schedule add reply {value[:200]!r}") from None

    def remove_schedule(self, name: bytes | str) -> None:
        """Remove schedule ``name``. Raises AdminError (UNKNOWN_SCHEDULE) if there is none."""
        self._ok(b"schedule remove " + _word(name, "schedule name"))

    def show_dead(self, function: bytes | str | None = None) -> list[DeadLetterInfo]:
        """The dead letters, oldest first (only those of ``function`` if given)."""
        line = b"show dead"
        if function is not None:
            line += b" " + _word(function, "function name")
        return parse_dead(self._list(line))

    def dead_status(self) -> dict[bytes, int]:
        """How many dead letters each function has (functions without any are left out)."""
        result = {}
        for line in self._list(b"deadstatus"):
            name, _, count = line.rpartition(b"\t")
            result[name] = _int(count, line)
        return result

    def _dead_command(self, verb: bytes, target: int | None, function: bytes | str | None) -> int:
        if target is None:
            line = verb + b" dead all"
            if function is not None:
                line += b" " + _word(function, "function name")
        else:
            if function is not None:
                raise InvalidArgument("give a dead letter number or a function, not both")
            line = verb + b" dead %d" % int(target)
        value = self._ok(line)
        return _int(value, b"OK " + value)

    def retry_dead(self, target: int | None = None, function: bytes | str | None = None) -> int:
        """Submit dead letter number ``target`` again (None: all of them, or all of
        ``function``'s) as new background jobs with all their attempts; returns how many.
        AdminError ``UNKNOWN_JOB`` when there is no such dead letter."""
        return self._dead_command(b"retry", target, function)

    def purge_dead(self, target: int | None = None, function: bytes | str | None = None) -> int:
        """Delete dead letter number ``target`` (None: all, or all of ``function``'s); returns
        how many. AdminError ``UNKNOWN_JOB`` when there is no such dead letter."""
        return self._dead_command(b"purge", target, function)

    def create_function(self, function: bytes | str) -> None:
        """Make the server know ``function`` (listed with no jobs and no workers)."""
        self._ok(b"create function " + _word(function, "function name"))

    def drop_function(self, function: bytes | str) -> None:
        """Forget ``function``. AdminError when it is unknown or workers are still connected."""
        self._ok(b"drop function " + _word(function, "function name"))

    def version(self) -> str:
        """The server's version, e.g. ``1.1.20+ds`` for Debian's gearmand."""
        return self._ok(b"version").decode("utf-8", "replace")

    def getpid(self) -> int:
        """The server's process id."""
        value = self._ok(b"getpid")
        return _int(value, b"OK " + value)

    def verbose(self) -> str:
        """The server's log level name, e.g. ``ERROR`` or ``INFO``."""
        return self._ok(b"verbose").decode("utf-8", "replace")
