"""Gearman workers: :class:`AsyncWorker` (asyncio) and :class:`Worker` (blocking).

How the two relate: each server connection is the sans-IO
:class:`gearsql._workerconn.WorkerConnection` (a table of states: grab, sleep, wake), driven by
:class:`AsyncWorker`, which also owns job slots, reconnect backoff and the graceful stop.
:class:`Worker` is that same :class:`AsyncWorker` run to completion on the calling thread with
:func:`asyncio.run`; a blocking worker blocks anyway, so it needs no extra thread for the loop.

Handlers take a :class:`WorkerJob` and return the result: ``bytes``, ``str`` (sent UTF-8) or None
(empty). ``async def`` handlers run on the event loop; plain functions run in a thread pool of
``concurrency`` threads so that they never block the connections. A handler that raises sends
WORK_EXCEPTION with the exception text (or WORK_FAIL when the worker has ``exceptions=False``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import signal
import ssl
import threading
import traceback
from collections.abc import Awaitable, Callable
from typing import TypeVar, Union, cast

from gearsql._loopthread import ReadThrough
from gearsql._servers import (
    Backoff,
    ServerAddress,
    ServersArg,
    encode_payload,
    format_address,
    function_bytes,
    parse_servers,
)
from gearsql._tls import SslArg, client_context, settle, tls_arguments
from gearsql._workerconn import (
    Assigned,
    NoJob,
    ProtocolBroken,
    ServerErrorReply,
    WakeUp,
    WorkerConnection,
    WorkerEvent,
)
from gearsql.errors import InvalidArgument, InvalidPayload

__all__ = ["AsyncWorker", "Handler", "Worker", "WorkerJob"]

log = logging.getLogger("gearsql.worker")

T = TypeVar("T")

Result = Union[bytes, bytearray, memoryview, str, None]  # noqa: UP007
#: A job handler: a plain or ``async`` function of a :class:`WorkerJob` returning the result.
Handler = Callable[["WorkerJob"], Union[Result, Awaitable[Result]]]  # noqa: UP007


class _Link(asyncio.Protocol):
    """The asyncio driver of one :class:`WorkerConnection`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.core = WorkerConnection()
        self.transport: asyncio.Transport | None = None
        self.events: asyncio.Queue[WorkerEvent | None] = asyncio.Queue()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not a subclass of asyncio.Transport: no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        for event in self.core.receive_data(data):
            if isinstance(event, ProtocolBroken):
                log.error("closing the connection to %s: %s", self.name, event.reason)
                assert self.transport is not None
                self.transport.abort()
                return
            self.events.put_nowait(event)
        self.flush()  # PRE_SLEEP after NO_JOB

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.events.put_nowait(None)

    def flush(self) -> None:
        data = self.core.data_to_send()
        if data and not self.closed and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _refused_can_do(event: object, server: str) -> bool:
    """Whether ``event`` is the server's refusal of a CAN_DO (an ACL's PERMISSION_DENIED),
    which is logged; the worker goes on with the functions it may work on."""
    if isinstance(event, ServerErrorReply) and event.code == "PERMISSION_DENIED":
        log.error("%s refused: %s", server, event.text)
        return True
    return False


class WorkerJob:
    """The job a handler runs: its ``handle``, ``function``, ``unique`` and ``data`` (bytes).

    The ``send_*`` methods and :meth:`fail` may be called from the handler's thread or from the
    event loop; they only queue bytes and never block.
    """

    def __init__(self, worker: AsyncWorker, link: _Link, assigned: Assigned) -> None:
        self.handle = assigned.handle
        self.function = assigned.function
        self.unique = assigned.unique
        self.data = assigned.data
        self._worker = worker
        self._link = link
        #: True once the job's end (complete, fail or exception) was sent.
        self.finished = False

    def __repr__(self) -> str:
        return f"<WorkerJob {self.function.decode('utf-8', 'replace')} {self.handle!r}>"

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self.data.decode("utf-8")

    def _send(self, write: Callable[[WorkerConnection], None], final: bool = False) -> None:
        if self.finished:
            raise InvalidArgument(f"{self!r} has already ended")
        if final:
            self.finished = True
        link = self._link

        def send() -> None:
            if not link.closed:
                write(link.core)
                link.flush()

        self._worker._call_in_loop(send)

    def send_status(self, numerator: int, denominator: int) -> None:
        """WORK_STATUS: progress as numerator/denominator (also what GET_STATUS reports)."""
        self._send(lambda core: core.work_status(self.handle, int(numerator), int(denominator)))

    def send_data(self, data: bytes | str) -> None:
        """WORK_DATA: a piece of output for the waiting clients (``str`` sent UTF-8)."""
        payload = encode_payload(data, "utf-8")
        self._send(lambda core: core.work_data(self.handle, payload))

    def send_warning(self, data: bytes | str) -> None:
        """WORK_WARNING to the waiting clients (``str`` sent UTF-8)."""
        payload = encode_payload(data, "utf-8")
        self._send(lambda core: core.work_warning(self.handle, payload))

    def fail(self) -> None:
        """End the job with WORK_FAIL; what the handler then returns is not sent."""
        self._send(lambda core: core.work_fail(self.handle), final=True)


def _result_bytes(result: object) -> bytes:
    if result is None:
        return b""
    try:
        return encode_payload(result, "utf-8")
    except InvalidPayload:
        raise InvalidPayload(
            f"a handler must return bytes, str or None, not {type(result).__name__}"
        ) from None


class AsyncWorker:
    """An asyncio Gearman worker connected to every server of ``servers``.

    ``servers`` as for the client (``"host[:port],..."``, None: ``$GEARMAN_SERVERS`` or
    ``127.0.0.1:4730``). ``concurrency``: how many jobs run at once over all connections.
    ``client_id``: sent with SET_CLIENT_ID (shown by the ``workers`` admin command).
    ``exceptions``: a handler exception sends WORK_EXCEPTION (True) or WORK_FAIL (False).
    ``backoff``: (first, longest) delay in seconds between reconnect attempts.
    ``ssl``, ``ssl_ca_file``, ``ssl_certificate``, ``ssl_key``: TLS, as
    :class:`~gearsql.client.AsyncClient` takes it (else the ``GEARSQL_SSL*`` variables decide).
    """

    def __init__(
        self,
        servers: ServersArg = None,
        *,
        concurrency: int = 1,
        client_id: str | None = None,
        exceptions: bool = True,
        connect_timeout: float = 5.0,
        backoff: tuple[float, float] = (0.1, 10.0),
        ssl: SslArg = None,
        ssl_ca_file: str | None = None,
        ssl_certificate: str | None = None,
        ssl_key: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise InvalidArgument("concurrency must be at least 1")
        if client_id is not None and (not client_id or "\0" in client_id):
            raise InvalidArgument("client_id must be non-empty text without NUL")
        Backoff(*backoff)  # validates
        self._servers: list[ServerAddress] = parse_servers(servers)
        #: TLS for every connection (None: plaintext).
        self.ssl_context = client_context(ssl, ssl_ca_file, ssl_certificate, ssl_key)
        self.concurrency = concurrency
        self.client_id = client_id
        self.exceptions = exceptions
        self.connect_timeout = connect_timeout
        self._backoff = backoff
        self._functions: dict[bytes, tuple[Handler, float | None]] = {}
        self._links: set[_Link] = set()
        self._jobs: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._slots: asyncio.Semaphore | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def servers(self) -> list[str]:
        return [format_address(address) for address in self._servers]

    def register(
        self, function: str | bytes, handler: Handler, *, timeout: float | None = None
    ) -> Handler:
        """Serve ``function`` with ``handler`` (CAN_DO, or CAN_DO_TIMEOUT with ``timeout``
        seconds, after which the server gives the job to another worker). Returns ``handler``.
        Raises :class:`InvalidArgument` for a bad name or timeout. May be called while running.
        """
        name = function_bytes(function)
        if timeout is not None and not timeout > 0:
            raise InvalidArgument("timeout must be a positive number of seconds")
        if not callable(handler):
            raise InvalidPayload("handler must be callable")
        self._functions[name] = (handler, timeout)
        if self._loop is not None and not self._loop.is_closed():

            def announce() -> None:
                for link in self._links:
                    link.core.can_do(name, timeout)
                    link.flush()

            self._call_in_loop(announce)
        return handler

    def stop(self) -> None:
        """Stop taking jobs, finish the jobs in hand, then make :meth:`run_forever` return.
        Safe to call from any thread and from signal handlers."""
        self._stop_requested = True
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            self._call_in_loop(stopping.set)

    def _call_in_loop(self, function: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            function()
        else:
            loop.call_soon_threadsafe(function)

    async def run_forever(self, *, handle_signals: bool = False) -> None:
        """Serve jobs until :meth:`stop` (or SIGTERM/SIGINT with ``handle_signals``, on the
        main thread). Raises :class:`InvalidArgument` when no function is registered."""
        if not self._functions:
            raise InvalidArgument("register at least one function before running the worker")
        loop = asyncio.get_running_loop()
        self._loop, self._loop_thread = loop, threading.get_ident()
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self.concurrency, thread_name_prefix="gearsql-worker"
        )
        if self._stop_requested:
            self._stopping.set()
        signals: list[signal.Signals] = []
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, self.stop)
                    signals.append(sig)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass
        serving = [loop.create_task(self._serve(address)) for address in self._servers]
        try:
            await self._stopping.wait()
            await asyncio.gather(*serving)
            while self._jobs:  # the jobs in hand finish and send their results
                await asyncio.wait(set(self._jobs))
        finally:
            for task in serving:
                task.cancel()
            for job in list(self._jobs):
                job.cancel()
            links = list(self._links)
            for link in links:
                link.close()
            for sig in signals:
                loop.remove_signal_handler(sig)
            self._executor.shutdown(wait=False)
            await settle(links)
            self._loop = None
            self._stopping = None
            self._stop_requested = False

    async def _until_stop(self, awaitable: Awaitable[T]) -> T | None:
        """The awaitable's result, or None when stop() came first (the awaitable is cancelled)."""
        assert self._stopping is not None
        task = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
        if not task.done():
            await asyncio.wait({task})
        return None if task.cancelled() else task.result()

    async def _serve(self, address: ServerAddress) -> None:
        """Keep one connection to ``address`` alive and take jobs over it until stop()."""
        assert self._stopping is not None
        name = format_address(address)
        backoff = Backoff(*self._backoff)
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                _, link = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Link(name), *address, **tls_arguments(self.ssl_context, address[0])
                    ),
                    self.connect_timeout,
                )
            except (OSError, asyncio.TimeoutError) as exc:
                delay = backoff.next_delay()
                log.warning("cannot reach %s (%s); retrying in %.1f s", name, exc, delay)
                await self._until_stop(asyncio.sleep(delay))
                continue
            backoff.reset()
            self._links.add(link)
            try:
                await self._take_jobs(link)
            finally:
                if link.closed:
                    self._links.discard(link)
            if link.closed and not self._stopping.is_set():
                log.warning("lost the connection to %s; reconnecting", name)
                await self._until_stop(asyncio.sleep(backoff.next_delay()))

    async def _take_jobs(self, link: _Link) -> None:
        assert self._slots is not None and self._stopping is not None
        if self.client_id is not None:
            link.core.set_client_id(self.client_id.encode("utf-8"))
        for name, (_, timeout) in self._functions.items():
            link.core.can_do(name, timeout)
        link.flush()
        while True:
            if await self._until_stop(self._slots.acquire()) is None:
                return
            if self._stopping.is_set() or link.closed:
                self._slots.release()
                return
            link.core.grab()
            link.flush()
            event = await link.events.get()
            # A stale NOOP from an earlier sleep, or an ACL's refusal of a CAN_DO: neither
            # answers the grab.
            while isinstance(event, WakeUp) or _refused_can_do(event, link.name):
                event = await link.events.get()
            if isinstance(event, Assigned):
                job = asyncio.get_running_loop().create_task(self._run_job(link, event))
                self._jobs.add(job)
                job.add_done_callback(self._jobs.discard)
                continue
            self._slots.release()
            if event is None:
                return
            if isinstance(event, ServerErrorReply):
                log.warning("%s refused GRAB_JOB_UNIQ: %s %s", link.name, event.code, event.text)
                await self._until_stop(asyncio.sleep(1.0))
                continue
            assert isinstance(event, NoJob)
            # Asleep on the server (PRE_SLEEP sent): wait for its NOOP.
            while True:
                woken = await self._until_stop(link.events.get())
                if woken is None or isinstance(woken, WakeUp):
                    break
                if isinstance(woken, ServerErrorReply):
                    log.warning("ERROR from %s: %s %s", link.name, woken.code, woken.text)
                    continue
                return  # the connection closed
            if woken is None:
                return

    async def _run_job(self, link: _Link, assigned: Assigned) -> None:
        assert self._slots is not None
        job = WorkerJob(self, link, assigned)
        try:
            entry = self._functions.get(assigned.function)
            if entry is None:
                raise InvalidArgument(f"no handler for {assigned.function!r}")
            handler = entry[0]
            if inspect.iscoroutinefunction(handler):
                result = await handler(job)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._executor, handler, job)
            data = _result_bytes(result)
        except Exception as exc:
            log.exception("%r raised", job)
            if not job.finished:
                if self.exceptions:
                    text = traceback.format_exception_only(type(exc), exc)[-1].strip()
                    job._send(
                        lambda core: core.work_exception(job.handle, text.encode("utf-8")),
                        final=True,
                    )
                else:
                    job._send(lambda core: core.work_fail(job.handle), final=True)
        else:
            if not job.finished:
                job._send(lambda core: core.work_complete(job.handle, data), final=True)
        finally:
            self._slots.release()


class Worker:
    """A blocking Gearman worker: :class:`AsyncWorker` run on the calling thread.

    Same options and :meth:`register`; handlers may be plain or ``async`` functions.
    :meth:`run_forever` blocks until :meth:`stop` (from another thread or a handler) or, on the
    main thread, SIGTERM/SIGINT, and finishes the jobs in hand before returning.
    """

    def __init__(
        self,
        servers: ServersArg = None,
        *,
        concurrency: int = 1,
        client_id: str | None = None,
        exceptions: bool = True,
        connect_timeout: float = 5.0,
        backoff: tuple[float, float] = (0.1, 10.0),
        ssl: SslArg = None,
        ssl_ca_file: str | None = None,
        ssl_certificate: str | None = None,
        ssl_key: str | None = None,
    ) -> None:
        self._async = AsyncWorker(
            servers,
            concurrency=concurrency,
            client_id=client_id,
            exceptions=exceptions,
            connect_timeout=connect_timeout,
            backoff=backoff,
            ssl=ssl,
            ssl_ca_file=ssl_ca_file,
            ssl_certificate=ssl_certificate,
            ssl_key=ssl_key,
        )

    # The AsyncWorker's settings, read through (tests/test_sync_async_api.py keeps them alike).

    servers = ReadThrough[list[str]]("_async")
    concurrency = ReadThrough[int]("_async")
    client_id = ReadThrough[str | None]("_async")
    exceptions = ReadThrough[bool]("_async")
    connect_timeout = ReadThrough[float]("_async")
    ssl_context = ReadThrough[ssl.SSLContext | None](
        "_async", "The TLS context of every connection (None: plaintext)."
    )

    def register(
        self, function: str | bytes, handler: Handler, *, timeout: float | None = None
    ) -> Handler:
        """See :meth:`AsyncWorker.register`."""
        return self._async.register(function, handler, timeout=timeout)

    def run_forever(self, *, handle_signals: bool = True) -> None:
        """Serve jobs until stopped; see :meth:`AsyncWorker.run_forever`."""
        asyncio.run(self._async.run_forever(handle_signals=handle_signals))

    def stop(self) -> None:
        """Stop after the jobs in hand; safe from any thread."""
        self._async.stop()
