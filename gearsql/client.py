"""Gearman clients: :class:`AsyncClient` (asyncio) and :class:`Client` (blocking).

How the two relate: the protocol logic lives once, in the sans-IO
:class:`gearsql._clientconn.ClientConnection` (requests in, bytes out, bytes in, events out), and
:class:`AsyncClient` is its only driver: it owns server selection, failover, reconnect backoff,
retries, timeouts and task gathering. :class:`Client` runs an :class:`AsyncClient` on a private
event loop that each blocking call runs in its own thread until its outcome is in (when another
thread is already running it, the call is handed to that thread and waits its turn); a
caretaker thread of the client's (``gearsql-client``) advances the jobs left running between
calls, and on uvloop runs the main thread's calls (gearsql._loopthread says why). That was
chosen over a second driver of the state machine over blocking sockets because failover,
backoff, timeouts and scatter/gather then exist once and cannot drift apart, and over running
the loop on a thread of its own for every call because waking that thread and then the caller
again was most of what a blocking call cost. Callbacks given to a :class:`Client` run on whichever
thread runs the loop at the time: usually the thread whose blocking call waits for that job,
else another caller's or the caretaker; never two at once. They must not make blocking calls on
the same client (:class:`RuntimeError`).

Servers are given as ``"host[:port],host[:port]"`` (or a list); with none, ``$GEARMAN_SERVERS``
and then ``127.0.0.1:4730`` are used. A job goes to the server picked by hashing its unique id, so
duplicate uniques reach the same server and coalesce; jobs without a unique are spread round
robin, from a server picked at random. When that server is down (or in its reconnect backoff
after a failure) the next one in the list is used. Payloads are bytes; ``str`` is encoded with
the client's ``encoding`` (UTF-8 unless told otherwise). Results are always ``bytes``.

Where the pieces live: :class:`AsyncClient` and :class:`Client` here; one connection
(``_Link``) and the servers of the list (``_Server``) in gearsql._clientlink; the jobs
(:class:`Task`, :class:`SyncTask`) and the answers (:class:`JobHandle`, :class:`JobStatus`,
:class:`WorkData`, ...) in gearsql._clienttask, re-exported here.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import random
import ssl
import weakref
import zlib
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Iterator
from typing import Any, TypeVar

from gearsql._clientconn import Priority
from gearsql._clientlink import _Link, _Reply, _Server, admin_line
from gearsql._clienttask import (
    DataCallback,
    JobHandle,
    JobStatus,
    StatusCallback,
    SyncTask,
    Task,
    Update,
    WorkData,
    WorkStatus,
    WorkWarning,
    _Background,
    _check_timeout,
    _int,
    _next,
    _Submission,
    _within,
)
from gearsql._log import reason as _reason
from gearsql._loopthread import EventLoopThread, ReadThrough
from gearsql._servers import (
    ServersArg,
    encode_payload,
    function_bytes,
    parse_servers,
    unique_bytes,
)
from gearsql._tls import SslArg, client_context, settle, tls_arguments
from gearsql.adminclient import parse_error_line
from gearsql.errors import (
    ConnectionLost,
    InvalidArgument,
    JobTimeout,
    ServerError,
    ServerUnavailable,
)
from gearsql.protocol import Packet

__all__ = [
    "AsyncClient",
    "Client",
    "JobHandle",
    "JobStatus",
    "Priority",
    "SyncTask",
    "Task",
    "Update",
    "WorkData",
    "WorkStatus",
    "WorkWarning",
]

log = logging.getLogger("gearsql.client")

T = TypeVar("T")


def _priority(value: Priority | str) -> Priority:
    if isinstance(value, Priority):
        return value
    try:
        return Priority.from_word(str(value))
    except ValueError:
        raise InvalidArgument(f"priority must be high, normal or low, not {value!r}") from None


def _epoch(run_at: float | datetime.datetime) -> int:
    if isinstance(run_at, datetime.datetime):
        return int(run_at.timestamp())
    if isinstance(run_at, (int, float)) and not isinstance(run_at, bool) and run_at >= 0:
        return int(run_at)
    raise InvalidArgument(f"run_at must be a Unix time or a datetime, not {run_at!r}")


_NAME_TYPES = (str, bytes)


@functools.lru_cache(maxsize=256)
def _function_name(function: str | bytes) -> bytes:
    """:func:`function_bytes`, remembered: a client submits to the same few functions."""
    return function_bytes(function)


# -- the client ------------------------------------------------------------------------------


class AsyncClient:
    """An asyncio Gearman client over one or several job servers.

    ``servers``: ``"host[:port],..."``, a list of those or of ``(host, port)``; None means
    ``$GEARMAN_SERVERS`` or ``127.0.0.1:4730``. ``exceptions``: ask servers for WORK_EXCEPTION
    (OPTION_REQ), so a worker's exception raises :class:`JobException` instead of
    :class:`JobFailed`. ``encoding`` encodes ``str`` payloads (None: only bytes accepted).
    ``retry``: how many times a foreground job whose server died is resubmitted to another server
    (0: raise :class:`ConnectionLost`). ``connect_timeout`` bounds each connection attempt;
    ``backoff`` is (first, longest) delay in seconds before a failed server is tried again.
    ``ssl``, ``ssl_ca_file``, ``ssl_certificate``, ``ssl_key``: TLS (docs/security.md). Any of the
    files, ``ssl=True`` or an :class:`ssl.SSLContext` turns it on; with none of them the
    ``GEARSQL_SSL*`` environment variables decide, and ``ssl=False`` is plaintext whatever they
    say. The server's certificate is checked against ``ssl_ca_file`` (else the system's CAs) and
    the host name; ``ssl_certificate`` and ``ssl_key`` are this side's, for a server that
    verifies its clients.

    Connections are opened on first use, one per server, and shared by every request: many jobs
    run concurrently over each.
    """

    def __init__(
        self,
        servers: ServersArg = None,
        *,
        exceptions: bool = True,
        encoding: str | None = "utf-8",
        retry: int = 0,
        connect_timeout: float = 5.0,
        backoff: tuple[float, float] = (0.1, 10.0),
        ssl: SslArg = None,
        ssl_ca_file: str | None = None,
        ssl_certificate: str | None = None,
        ssl_key: str | None = None,
    ) -> None:
        _check_timeout(connect_timeout)
        if retry < 0:
            raise InvalidArgument("retry must be 0 or more")
        self._servers = [_Server(address, backoff) for address in parse_servers(servers)]
        #: TLS for every connection (None: plaintext).
        self.ssl_context = client_context(ssl, ssl_ca_file, ssl_certificate, ssl_key)
        self.exceptions = exceptions
        self.encoding = encoding
        self.retry = retry
        self.connect_timeout = connect_timeout
        # Jobs without a unique go round robin from a random server, so that many short-lived
        # clients (one `gearsql submit` each) do not all start with the first one.
        self._round_robin = random.randrange(len(self._servers)) if self._servers else 0
        # Unfinished tasks of submit_task, for close() to cancel; each removes itself when done.
        self._unfinished: set[Task] = set()
        self._closed = False

    @property
    def servers(self) -> list[str]:
        """The server list as ``host:port`` strings."""
        return [server.name for server in self._servers]

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Cancel unfinished tasks and close every connection."""
        self._closed = True
        for task in list(self._unfinished):
            task.cancel()
        links = [server.link for server in self._servers if server.link is not None]
        for server in self._servers:
            if server.link is not None:
                server.link.close()
                server.link = None
        await settle(links)  # let the transports deliver connection_lost

    # -- choosing and opening connections ---------------------------------------------------

    def _order(self, unique: bytes) -> list[_Server]:
        servers = self._servers
        count = len(servers)
        if count == 1:
            return servers
        if unique:
            start = zlib.crc32(unique) % count
        else:
            start = self._round_robin
            self._round_robin = (start + 1) % count
        ring = servers[start:] + servers[:start]
        now = asyncio.get_running_loop().time()
        ready = [s for s in ring if s.link is not None or s.retry_at <= now]
        # Servers in their backoff are still tried, last: better late than no server at all.
        return ready + [s for s in ring if s not in ready]

    def _connected_link(self) -> _Link | None:
        """The live connection of a one-server client, if any: the common case, without the
        coroutine of :meth:`_link_for`."""
        if len(self._servers) == 1:
            link = self._servers[0].link
            if link is not None and link.usable:
                return link
        return None

    async def _link_for(self, unique: bytes) -> _Link:
        errors: dict[str, str] = {}
        for server in self._order(unique):
            try:
                return await self._connect(server)
            except ServerUnavailable as exc:
                errors[server.name] = str(exc)
        raise ServerUnavailable(
            "no job server reachable: " + "; ".join(f"{n} ({e})" for n, e in errors.items()),
            errors,
        )

    async def _connect(self, server: _Server) -> _Link:
        link = server.link
        if link is not None and link.usable:
            return link
        if self._closed:
            raise ServerUnavailable("the client is closed")
        async with server.lock:
            link = server.link
            if link is not None and link.usable:
                return link
            loop = asyncio.get_running_loop()
            host, port = server.address
            try:
                _, fresh = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Link(server), host, port, **tls_arguments(self.ssl_context, host)
                    ),
                    self.connect_timeout,
                )
                if self.exceptions:
                    await self._enable_exceptions(fresh)
            except (OSError, asyncio.TimeoutError, ServerUnavailable) as exc:
                server.failed(loop.time())
                reason = _reason(exc)
                if isinstance(exc, asyncio.TimeoutError):
                    reason = f"no connection within {self.connect_timeout:g} s"
                raise ServerUnavailable(reason, {server.name: reason}) from exc
            server.backoff.reset()
            server.link = fresh
            return fresh

    async def _enable_exceptions(self, link: _Link) -> None:
        reply = _Reply(asyncio.get_running_loop())
        link.core.option(reply, b"exceptions")
        link.flush()
        try:
            await asyncio.wait_for(reply.future, self.connect_timeout)
        except ServerError as exc:  # an old server: its clients just get WORK_FAIL instead
            log.warning("%s refused the exceptions option: %s", link.server.name, exc)
        except BaseException:
            link.close()
            raise

    # -- submitting -------------------------------------------------------------------------

    def _job(
        self,
        function: str | bytes,
        data: object,
        unique: str | bytes | None,
        priority: Priority | str,
        retry: int | None,
        on_data: DataCallback | None = None,
        on_warning: DataCallback | None = None,
        on_status: StatusCallback | None = None,
    ) -> Task:
        if retry is not None and retry < 0:
            raise InvalidArgument("retry must be 0 or more")
        # The common arguments (bytes, no unique, a Priority) pass without a call each.
        return Task(
            _function_name(function) if type(function) in _NAME_TYPES else function_bytes(function),
            data if type(data) is bytes else encode_payload(data, self.encoding),
            b"" if unique is None else unique_bytes(unique),
            priority if type(priority) is Priority else _priority(priority),
            self.retry if retry is None else retry,
            on_data,
            on_warning,
            on_status,
        )

    async def _run(self, job: Task) -> bytes:
        """Submit a foreground job and wait for its end, resubmitting after a lost server as
        often as ``job.retry`` allows."""
        loop = asyncio.get_running_loop()
        retries = job.retry
        while True:
            link = self._connected_link() or await self._link_for(job.unique)
            attempt = _Submission(loop, job)
            link.core.submit(attempt, job.function, job.unique, job.data, job.priority)
            link.flush()
            job.server = link.server.name
            assert attempt.done is not None
            try:
                return await attempt.done
            except ConnectionLost as exc:
                if retries <= 0:
                    raise
                retries -= 1
                log.warning("resubmitting %r elsewhere: %s", job, exc)
            except asyncio.CancelledError:
                if attempt.handle is not None:
                    link.core.forget(attempt.handle, attempt)
                raise

    async def submit(
        self,
        function: str | bytes,
        data: object = b"",
        *,
        unique: str | bytes | None = None,
        priority: Priority | str = Priority.NORMAL,
        timeout: float | None = None,
        retry: int | None = None,
        on_data: DataCallback | None = None,
        on_warning: DataCallback | None = None,
        on_status: StatusCallback | None = None,
    ) -> bytes:
        """Run a foreground job and return its result.

        ``on_data``/``on_warning`` get each WORK_DATA/WORK_WARNING payload and ``on_status``
        each (numerator, denominator) as they arrive. Raises :class:`InvalidArgument` /
        :class:`InvalidPayload` before sending, :class:`ServerUnavailable`,
        :class:`ConnectionLost`, :class:`ServerError`, :class:`JobFailed`,
        :class:`JobException`, or :class:`JobTimeout` after ``timeout`` seconds (the client
        stops waiting; the server may still run the job).
        """
        _check_timeout(timeout)
        job = self._job(function, data, unique, priority, retry, on_data, on_warning, on_status)
        return await _within(self._run(job), timeout, f"job {function!r}")

    def submit_task(
        self,
        function: str | bytes,
        data: object = b"",
        *,
        unique: str | bytes | None = None,
        priority: Priority | str = Priority.NORMAL,
        retry: int | None = None,
        on_data: DataCallback | None = None,
        on_warning: DataCallback | None = None,
        on_status: StatusCallback | None = None,
    ) -> Task:
        """Start a foreground job and return its :class:`Task` at once (scatter); collect the
        results with :meth:`gather` or :meth:`as_completed`. Argument errors raise here, before
        anything is sent. Must be called with the event loop running."""
        job = self._job(function, data, unique, priority, retry, on_data, on_warning, on_status)
        loop = asyncio.get_running_loop()
        link = self._connected_link() if job.retry == 0 else None
        if link is not None:
            # Fast path, the same steps as _run without its coroutine and Task: one server,
            # already connected, no retry. The submission's own future is the outcome, and the
            # submission tells the task when it ends it (Task._finished).
            attempt = _Submission(loop, job)
            link.core.submit(attempt, job.function, job.unique, job.data, job.priority)
            link.flush()
            job.server = link.server.name
            assert attempt.done is not None
            job._runner = attempt.done
            job._sent = (link, attempt)
        else:
            job._runner = loop.create_task(self._run(job))
            job._runner.add_done_callback(job._finished)
        self._unfinished.add(job)
        job._unfinished = self._unfinished
        return job

    async def gather(
        self,
        tasks: Iterable[Task],
        *,
        timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Results of ``tasks`` in their order (gather). The first job error is raised, or with
        ``return_exceptions`` put in the list instead. :class:`JobTimeout` after ``timeout``
        seconds; unfinished tasks then keep running (cancel them if they are not wanted)."""
        _check_timeout(timeout)
        runners = [_runner(task) for task in tasks]
        if not runners:
            return []
        gathered = asyncio.gather(
            *(asyncio.shield(r) for r in runners), return_exceptions=return_exceptions
        )
        try:
            return await _within(gathered, timeout, f"{len(runners)} jobs")
        finally:
            if not gathered.done():
                gathered.cancel()
            elif not gathered.cancelled():
                gathered.exception()

    async def as_completed(
        self, tasks: Iterable[Task], *, timeout: float | None = None
    ) -> AsyncGenerator[Task, None]:
        """Yield each task as it finishes (successfully or not; call ``result()``).
        :class:`JobTimeout` when ``timeout`` seconds pass before all finished."""
        _check_timeout(timeout)
        loop = asyncio.get_running_loop()
        by_runner = {_runner(task): task for task in tasks}
        deadline = None if timeout is None else loop.time() + timeout
        pending: set[asyncio.Future[Any]] = set(by_runner)
        while pending:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise JobTimeout(f"{len(pending)} jobs: no answer within {timeout:g} s")
            done, pending = await asyncio.wait(
                pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            for runner in done:
                yield by_runner[runner]

    async def submit_background(
        self,
        function: str | bytes,
        data: object = b"",
        *,
        unique: str | bytes | None = None,
        priority: Priority | str = Priority.NORMAL,
        run_at: float | datetime.datetime | None = None,
        timeout: float | None = None,
    ) -> JobHandle:
        """Queue a background job and return its :class:`JobHandle` once the server took it.

        ``run_at`` (Unix time or datetime) makes it an epoch job (SUBMIT_JOB_EPOCH) that no
        worker gets before then; the protocol gives those NORMAL priority only. Raises as
        :meth:`submit` except for job outcomes. A background job whose server dies before
        JOB_CREATED raises :class:`ConnectionLost` (it may or may not have been queued).
        """
        _check_timeout(timeout)
        name = function_bytes(function)
        payload = encode_payload(data, self.encoding)
        key = unique_bytes(unique)
        level = _priority(priority)
        epoch = None if run_at is None else _epoch(run_at)
        if epoch is not None and level is not Priority.NORMAL:
            raise InvalidArgument("epoch (run_at) jobs have NORMAL priority only")

        async def run() -> JobHandle:
            link = await self._link_for(key)
            attempt = _Submission(asyncio.get_running_loop(), None)
            link.core.submit(attempt, name, key, payload, level, True, epoch)
            link.flush()
            assert attempt.created is not None
            return JobHandle(await attempt.created, link.server.name)

        return await _within(run(), timeout, f"background job {function!r}")

    def start_background(
        self,
        function: str | bytes,
        data: object = b"",
        *,
        unique: str | bytes | None = None,
        priority: Priority | str = Priority.NORMAL,
    ) -> asyncio.Future[JobHandle]:
        """Queue a background job without waiting: the future resolves to its
        :class:`JobHandle` once the server took it, or to the exception
        :meth:`submit_background` would raise. Argument errors raise here, before anything is
        sent. Cancelling the future only stops the wait (the job may still be queued). Many
        started in one go on a connected one-server client cost no Task each and go out in one
        write; otherwise each runs :meth:`submit_background` in a Task. Must be called with the
        event loop running."""
        name = function_bytes(function)
        payload = encode_payload(data, self.encoding)
        key = unique_bytes(unique)
        level = _priority(priority)
        loop = asyncio.get_running_loop()
        link = self._connected_link()
        if link is None:
            return loop.create_task(
                self.submit_background(name, payload, unique=key, priority=level)
            )
        attempt = _Background(loop, link.server.name)
        link.core.submit(attempt, name, key, payload, level, True)
        link.flush()
        return attempt.created

    # -- status -----------------------------------------------------------------------------

    async def _ask(self, link: _Link, send: Callable[[_Reply], None]) -> Packet:
        reply = _Reply(asyncio.get_running_loop())
        send(reply)
        link.flush()
        return await reply.future

    async def get_status(
        self, handle: JobHandle | bytes | str, *, timeout: float | None = None
    ) -> JobStatus:
        """GET_STATUS of a job. A :class:`JobHandle` asks its server; a bare handle asks each
        reachable server until one knows the job. Raises :class:`ServerUnavailable`,
        :class:`ServerError`, :class:`JobTimeout`."""
        _check_timeout(timeout)
        if isinstance(handle, JobHandle):
            raw, servers = handle.handle, [s for s in self._servers if s.name == handle.server]
            if not servers:
                raise InvalidArgument(f"{handle.server} is not one of this client's servers")
        else:
            raw = handle.encode("utf-8") if isinstance(handle, str) else bytes(handle)
            servers = self._servers
        if not raw or b"\0" in raw:
            raise InvalidArgument(f"bad job handle {handle!r}")

        async def run() -> JobStatus:
            status = JobStatus(False, False, 0, 0)
            errors: dict[str, str] = {}
            for server in servers:
                try:
                    link = await self._connect(server)
                except ServerUnavailable as exc:
                    errors[server.name] = str(exc)
                    continue
                packet = await self._ask(link, functools.partial(link.core.get_status, handle=raw))
                _, known, running, num, den = packet.args
                status = JobStatus(known == b"1", running == b"1", _int(num), _int(den))
                if status.known:
                    return status
            if len(errors) == len(servers):
                raise ServerUnavailable("no job server reachable", errors)
            return status

        return await _within(run(), timeout, "GET_STATUS")

    async def get_status_unique(
        self, unique: str | bytes, *, timeout: float | None = None
    ) -> JobStatus:
        """GET_STATUS_UNIQUE, asked of the server the unique hashes to (where a submission with
        that unique went). Raises as :meth:`get_status`."""
        _check_timeout(timeout)
        key = unique_bytes(unique)
        if not key:
            raise InvalidArgument("get_status_unique needs a non-empty unique")

        async def run() -> JobStatus:
            link = await self._link_for(key)
            packet = await self._ask(link, lambda r: link.core.get_status_unique(r, key))
            _, known, running, num, den, clients = packet.args
            return JobStatus(known == b"1", running == b"1", _int(num), _int(den), _int(clients))

        return await _within(run(), timeout, "GET_STATUS_UNIQUE")

    # -- cancel -----------------------------------------------------------------------------

    async def cancel(
        self, handle: JobHandle | bytes | str, *, timeout: float | None = None
    ) -> bool:
        """Cancel a job with the admin command ``cancel job``: a queued job never runs and its
        waiting clients get WORK_FAIL; on gearsql also a background job waiting for its retry
        and a dead letter (by the handle it had). True when a server cancelled it, False when
        no server knows the job (or it already ended). A :class:`JobHandle` asks its server, a
        bare handle each reachable server in turn.

        Servers take mutating admin commands from loopback only unless told otherwise, so this
        raises :class:`AdminError` (code ``PERMISSION_DENIED``) from elsewhere; also
        :class:`ServerUnavailable` when no server can be reached, :class:`JobTimeout`.
        """
        _check_timeout(timeout)
        if isinstance(handle, JobHandle):
            raw, servers = handle.handle, [s for s in self._servers if s.name == handle.server]
            if not servers:
                raise InvalidArgument(f"{handle.server} is not one of this client's servers")
        else:
            raw = handle.encode("utf-8") if isinstance(handle, str) else bytes(handle)
            servers = self._servers
        if not raw or any(byte in raw for byte in b" \r\n\0"):
            raise InvalidArgument(f"bad job handle {handle!r}")

        async def run() -> bool:
            errors: dict[str, str] = {}
            for server in servers:
                try:
                    line = await admin_line(
                        server, b"cancel job " + raw, self.ssl_context, self.connect_timeout
                    )
                except ServerUnavailable as exc:
                    errors[server.name] = str(exc)
                    continue
                if line == b"OK":
                    return True
                error = parse_error_line(line)
                if error.code != "UNKNOWN_JOB":
                    raise error
            if len(errors) == len(servers):
                raise ServerUnavailable("no job server reachable", errors)
            return False

        return await _within(run(), timeout, "cancel job")


def _runner(task: Task) -> asyncio.Future[bytes]:
    if task._runner is None:
        raise InvalidArgument(f"{task!r} was not started by submit_task")
    return task._runner


# -- the blocking client ---------------------------------------------------------------------


class Client:
    """A blocking Gearman client: the same options, methods and exceptions as
    :class:`AsyncClient`, which it runs on a private event loop in the calling threads.

    Safe to share between threads. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        servers: ServersArg = None,
        *,
        exceptions: bool = True,
        encoding: str | None = "utf-8",
        retry: int = 0,
        connect_timeout: float = 5.0,
        backoff: tuple[float, float] = (0.1, 10.0),
        ssl: SslArg = None,
        ssl_ca_file: str | None = None,
        ssl_certificate: str | None = None,
        ssl_key: str | None = None,
    ) -> None:
        self._async = AsyncClient(
            servers,
            exceptions=exceptions,
            encoding=encoding,
            retry=retry,
            connect_timeout=connect_timeout,
            backoff=backoff,
            ssl=ssl,
            ssl_ca_file=ssl_ca_file,
            ssl_certificate=ssl_certificate,
            ssl_key=ssl_key,
        )
        # Jobs of submit_task left running between calls are the caretaker's to advance.
        unfinished = self._async._unfinished
        self._thread = EventLoopThread("gearsql-client", busy=lambda: bool(unfinished))
        self._finalizer = weakref.finalize(self, self._thread.close)

    # The AsyncClient's settings, read through (tests/test_sync_async_api.py keeps them alike).

    servers = ReadThrough[list[str]]("_async")
    exceptions = ReadThrough[bool]("_async")
    encoding = ReadThrough[str | None]("_async")
    retry = ReadThrough[int]("_async")
    connect_timeout = ReadThrough[float]("_async")
    ssl_context = ReadThrough[ssl.SSLContext | None](
        "_async", "The TLS context of every connection (None: plaintext)."
    )

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._thread.run(coro)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection and stop the private event loop (idempotent)."""
        if self._finalizer.alive:
            self._call(self._async.close())
            self._finalizer()

    def submit(
        self,
        function: str | bytes,
        data: object = b"",
        *,
        unique: str | bytes | None = None,
        priority: Priority | str = Priority.NORMAL,
        timeout: float | None = None,
        retry: int | None = None,
        on_data: DataCallback | None = None,
        on_warning: DataCallback | None = None,
        on_status: StatusCallback | None = None,
    ) -> bytes:
        """Run a foreground job and return its result; see :meth:`AsyncClient.submit`.
        Callbacks run in the thread that runs the client's event loop at the time (see the
        module docstring): usually this one."""
        return self._call(
            self._async.submit(
                function,
                data,
                unique=unique,
                priority=priority,
                timeout=timeout,
                retry=retry,
                on_data=on_data,
                on_warning=on_warning,
                on_status=on_status,
            )
        )

    def submit_background(
        self,
        function: str | bytes,
        data: object = b"",
        *,
        unique: str | bytes | None = None,
        priority: Priority | str = Priority.NORMAL,
        run_at: float | datetime.datetime | None = None,
        timeout: float | None = None,
    ) -> JobHandle:
        """Queue a background job; see :meth:`AsyncClient.submit_background`."""
        return self._call(
            self._async.submit_background(
                function,
                data,
                unique=unique,
                priority=priority,
                run_at=run_at,
                timeout=timeout,
            )
        )

    def submit_task(
        self,
        function: str | bytes,
        data: object = b"",
        *,
        unique: str | bytes | None = None,
        priority: Priority | str = Priority.NORMAL,
        retry: int | None = None,
        on_data: DataCallback | None = None,
        on_warning: DataCallback | None = None,
        on_status: StatusCallback | None = None,
    ) -> SyncTask:
        """Start a foreground job without waiting (scatter); see :meth:`AsyncClient.submit_task`."""

        async def start() -> Task:
            return self._async.submit_task(
                function,
                data,
                unique=unique,
                priority=priority,
                retry=retry,
                on_data=on_data,
                on_warning=on_warning,
                on_status=on_status,
            )

        return SyncTask(self, self._call(start()))

    def gather(
        self,
        tasks: Iterable[SyncTask],
        *,
        timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Results of ``tasks`` in order; see :meth:`AsyncClient.gather`."""
        return self._call(
            self._async.gather(
                [t.task for t in tasks], timeout=timeout, return_exceptions=return_exceptions
            )
        )

    def as_completed(
        self, tasks: Iterable[SyncTask], *, timeout: float | None = None
    ) -> Iterator[SyncTask]:
        """Yield each task as it finishes; see :meth:`AsyncClient.as_completed`."""
        by_task = {id(t.task): t for t in tasks}
        iterator = self._async.as_completed([t.task for t in by_task.values()], timeout=timeout)
        try:
            while True:
                try:
                    task = self._call(_next(iterator))
                except StopAsyncIteration:
                    return
                yield by_task[id(task)]
        finally:
            self._call(iterator.aclose())

    def get_status(
        self, handle: JobHandle | bytes | str, *, timeout: float | None = None
    ) -> JobStatus:
        """GET_STATUS; see :meth:`AsyncClient.get_status`."""
        return self._call(self._async.get_status(handle, timeout=timeout))

    def get_status_unique(self, unique: str | bytes, *, timeout: float | None = None) -> JobStatus:
        """GET_STATUS_UNIQUE; see :meth:`AsyncClient.get_status_unique`."""
        return self._call(self._async.get_status_unique(unique, timeout=timeout))

    def cancel(self, handle: JobHandle | bytes | str, *, timeout: float | None = None) -> bool:
        """Cancel a job (admin ``cancel job``); see :meth:`AsyncClient.cancel`."""
        return self._call(self._async.cancel(handle, timeout=timeout))
