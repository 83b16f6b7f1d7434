"""A Gearman client's jobs (gearsql.client re-exports the public names): :class:`Task`, a
foreground job of :meth:`AsyncClient.submit_task <gearsql.client.AsyncClient.submit_task>` with
its updates (:class:`WorkData`, :class:`WorkWarning`, :class:`WorkStatus`), its blocking view
:class:`SyncTask`, the answers :class:`JobHandle` and :class:`JobStatus`, and
:class:`_Submission`, one attempt at submitting a job on a connection (gearsql._clientlink).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator, Iterator
from typing import Any, NamedTuple, Protocol, TypeVar, Union

from gearsql._clientconn import Priority
from gearsql._clientlink import _Link, _Waiter
from gearsql._loopthread import EventLoopThread, ReadThrough
from gearsql.errors import GearmanError, InvalidArgument, JobException, JobFailed, JobTimeout
from gearsql.protocol import Packet, PacketType

__all__ = [
    "DataCallback",
    "JobHandle",
    "JobStatus",
    "StatusCallback",
    "SyncTask",
    "Task",
    "Update",
    "WorkData",
    "WorkStatus",
    "WorkWarning",
]

log = logging.getLogger("gearsql.client")

T = TypeVar("T")
P = PacketType
_WORK_COMPLETE, _WORK_EXCEPTION = P.WORK_COMPLETE, P.WORK_EXCEPTION

DataCallback = Callable[[bytes], object]
StatusCallback = Callable[[int, int], object]


class JobHandle(NamedTuple):
    """A submitted job: the handle the server gave it and the server (``host:port``) that has
    it."""

    handle: bytes
    server: str


class JobStatus(NamedTuple):
    """Answer of GET_STATUS / GET_STATUS_UNIQUE. An unknown job is all zeros and False.

    ``clients`` (foreground clients waiting) is only known for GET_STATUS_UNIQUE.
    """

    known: bool
    running: bool
    numerator: int
    denominator: int
    clients: int | None = None


class WorkData(NamedTuple):
    """WORK_DATA: a piece of output the worker sent before its result."""

    data: bytes


class WorkWarning(NamedTuple):
    """WORK_WARNING: a warning the worker sent."""

    data: bytes


class WorkStatus(NamedTuple):
    """WORK_STATUS: progress as numerator/denominator."""

    numerator: int
    denominator: int


Update = Union[WorkData, WorkWarning, WorkStatus]  # noqa: UP007 (a runtime alias on 3.10)


def _int(raw: bytes) -> int:
    try:
        return int(raw)
    except ValueError:
        return 0


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not timeout > 0:
        raise InvalidArgument(f"timeout must be a positive number of seconds, not {timeout!r}")


async def _within(awaitable: Awaitable[T], timeout: float | None, what: str) -> T:
    """Await with a deadline; JobTimeout when it passes (the awaitable is cancelled)."""
    if timeout is None:
        return await awaitable
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise JobTimeout(f"{what}: no answer within {timeout:g} s") from None


# -- a job on a connection ---------------------------------------------------------------


class _Submission(_Waiter):
    """One attempt at submitting a job: JOB_CREATED, then (foreground) WORK_* until the end.

    A background submission resolves ``created`` with the handle. A foreground one resolves only
    ``done`` (JOB_CREATED just records the handle): its runner then wakes once per job, not twice.
    """

    __slots__ = ("created", "done", "handle", "job")

    def __init__(self, loop: asyncio.AbstractEventLoop, job: Task | None) -> None:
        self.job = job
        self.handle: bytes | None = None
        self.created: asyncio.Future[bytes] | None = None if job else loop.create_future()
        self.done: asyncio.Future[bytes] | None = loop.create_future() if job else None

    def on_created(self, handle: bytes) -> None:
        if self.job is not None:
            self.handle = self.job.handle = handle
        elif self.created is not None and not self.created.done():
            self.created.set_result(handle)

    def on_update(self, packet: Packet) -> None:
        if self.job is not None:
            self.job._update(packet)

    def on_done(self, packet: Packet) -> None:
        done = self.done
        if done is None or done.done():
            return
        type_, args, _ = packet
        if type_ is _WORK_COMPLETE:
            done.set_result(args[1])
        elif type_ is _WORK_EXCEPTION:
            done.set_exception(JobException(args[0].rstrip(b"\0"), args[1]))
        else:
            done.set_exception(JobFailed(args[0].rstrip(b"\0")))
        # On submit_task's fast path this submission's future is the task's outcome, and the
        # task is told here rather than through a done callback (one loop callback less per job).
        if self.job is not None and self.job._runner is done:
            self.job._finished(done)

    def on_error(self, error: GearmanError) -> None:
        if self.created is not None and not self.created.done():
            self.created.set_exception(error)
        elif self.done is not None and not self.done.done():
            self.done.set_exception(error)
            if self.job is not None and self.job._runner is self.done:  # as in on_done
                self.job._finished(self.done)


class _Background(_Waiter):
    """One background submission that no coroutine waits on
    (:meth:`AsyncClient.start_background <gearsql.client.AsyncClient.start_background>`):
    ``created`` resolves to the :class:`JobHandle` at JOB_CREATED, or to the error."""

    __slots__ = ("created", "server")

    def __init__(self, loop: asyncio.AbstractEventLoop, server: str) -> None:
        self.server = server
        self.created: asyncio.Future[JobHandle] = loop.create_future()

    def on_created(self, handle: bytes) -> None:
        if not self.created.done():
            self.created.set_result(JobHandle(handle, self.server))

    def on_error(self, error: GearmanError) -> None:
        if not self.created.done():
            self.created.set_exception(error)


# -- tasks -----------------------------------------------------------------------------------


class Task:
    """A foreground job started by :meth:`AsyncClient.submit_task`.

    Await it (or :meth:`wait` with a timeout) for the result bytes; iterate it with
    ``async for update in task`` (or :meth:`updates`) to get :class:`WorkData`,
    :class:`WorkWarning` and :class:`WorkStatus` as they arrive, until the job ends. Awaiting
    raises :class:`JobFailed`, :class:`JobException`, :class:`ServerError`,
    :class:`ServerUnavailable` / :class:`ConnectionLost`, or :class:`JobTimeout` from ``wait``.
    """

    # Defaults until they change, on the class: a client makes a Task per job.
    #: The job handle once the server created the job (changes if it is resubmitted).
    handle: bytes | None = None
    #: The server (``host:port``) running the job.
    server: str | None = None
    #: The last WORK_STATUS received.
    numerator = 0
    denominator = 0
    _wakeup: asyncio.Future[None] | None = None
    # Updates not yet read through updates(), from the first one on.
    _updates: deque[Update] | None = None
    # What the job's outcome comes from: a Task running AsyncClient._run, or on the fast path of
    # submit_task the future of its one submission (then _sent names its connection, and the
    # submission calls _finished when it ends the future: it has no done callback).
    _runner: asyncio.Future[bytes] | None = None
    _unfinished: set[Task] | None = None
    _sent: tuple[_Link, _Submission] | None = None

    def __init__(
        self,
        function: bytes,
        data: bytes,
        unique: bytes,
        priority: Priority,
        retry: int,
        on_data: DataCallback | None = None,
        on_warning: DataCallback | None = None,
        on_status: StatusCallback | None = None,
    ) -> None:
        self.function = function
        self.data = data
        self.unique = unique
        self.priority = priority
        self.retry = retry
        self._on_data = on_data
        self._on_warning = on_warning
        self._on_status = on_status
        # Futures of the coroutines awaiting the task, resolved when it ends (see __await__).
        self._waiters: list[asyncio.Future[None]] = []

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        return f"<Task {self.function.decode('utf-8', 'replace')} {self.handle!r} {state}>"

    def _update(self, packet: Packet) -> None:
        update: Update
        callback: Callable[..., object] | None
        if packet.type == P.WORK_STATUS:
            self.numerator, self.denominator = _int(packet.args[1]), _int(packet.args[2])
            update = WorkStatus(self.numerator, self.denominator)
            callback = self._on_status
        elif packet.type == P.WORK_WARNING:
            update = WorkWarning(packet.args[1])
            callback = self._on_warning
        else:
            update = WorkData(packet.args[1])
            callback = self._on_data
        if self._updates is None:
            self._updates = deque()
        self._updates.append(update)
        self._wake()
        if callback is not None:
            try:
                callback(*update)
            except Exception:  # a broken callback must not break the connection
                log.exception("update callback of %r raised", self)

    def _finished(self, runner: asyncio.Future[bytes]) -> None:
        if runner.cancelled():
            if self._sent is not None:  # as _run does when cancelled: stop routing WORK_*
                link, attempt = self._sent
                if attempt.handle is not None:
                    link.core.forget(attempt.handle, attempt)
        else:
            # Mark the exception as retrieved: a job nobody awaited must not log at exit.
            runner.exception()
        self._sent = None
        if self._unfinished is not None:
            self._unfinished.discard(self)
        if self._wakeup is not None:
            self._wake()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def done(self) -> bool:
        """True when the job ended (result, failure or error) or was cancelled."""
        return self._runner is not None and self._runner.done()

    def cancel(self) -> None:
        """Stop waiting for this job. The server may still run it."""
        runner = self._runner
        if runner is not None and runner.cancel() and self._sent is not None:
            self._finished(runner)  # the fast path's runner has no done callback

    def result(self) -> bytes:
        """The result of a finished job; raises the job's error, or InvalidStateError while it
        runs."""
        if self._runner is None:
            raise asyncio.InvalidStateError("the task has not started")
        return self._runner.result()

    async def wait(self, timeout: float | None = None) -> bytes:
        """The result bytes; :class:`JobTimeout` after ``timeout`` seconds (the job goes on)."""
        _check_timeout(timeout)
        assert self._runner is not None
        return await _within(asyncio.shield(self._runner), timeout, "job result")

    def __await__(self) -> Generator[Any, None, bytes]:
        # wait() without a timeout. Shielded, so that cancelling the awaiter leaves the job be,
        # but not with asyncio.shield (a second future and two callbacks per await, a tenth of
        # a foreground job's client time): the awaiter sleeps on a future of its own that the
        # job's end resolves, and cancelling the awaiter cancels that future only.
        runner = self._runner
        assert runner is not None
        if not runner.done():
            waiter: asyncio.Future[None] = runner.get_loop().create_future()
            self._waiters.append(waiter)
            try:
                yield from waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise
        return runner.result()

    async def updates(self, timeout: float | None = None) -> AsyncGenerator[Update, None]:
        """Yield updates as they arrive until the job ends; :class:`JobTimeout` when none comes
        within ``timeout`` seconds."""
        _check_timeout(timeout)
        loop = asyncio.get_running_loop()
        while True:
            if self._updates:
                yield self._updates.popleft()
                continue
            if self.done():
                return
            self._wakeup = loop.create_future()
            await _within(asyncio.shield(self._wakeup), timeout, "job update")

    def __aiter__(self) -> AsyncGenerator[Update, None]:
        return self.updates()


# -- the blocking view ----------------------------------------------------------------------


async def _next(iterator: AsyncGenerator[T, None]) -> T:
    return await iterator.__anext__()


class _Blocking(Protocol):
    """What a :class:`SyncTask` uses of its :class:`gearsql.client.Client` (named here so that
    this module does not import gearsql.client, which imports it)."""

    _thread: EventLoopThread

    def _call(self, coro: Coroutine[Any, Any, T]) -> T: ...


class SyncTask:
    """A foreground job started by :meth:`Client.submit_task`; a blocking view of a
    :class:`Task`."""

    def __init__(self, client: _Blocking, task: Task) -> None:
        self._client = client
        self.task = task

    def __repr__(self) -> str:
        return repr(self.task).replace("<Task", "<SyncTask", 1)

    # The Task's attributes, read through: they change as the job runs.

    function = ReadThrough[bytes]("task")
    data = ReadThrough[bytes]("task")
    unique = ReadThrough[bytes]("task")
    priority = ReadThrough[Priority]("task")
    retry = ReadThrough[int]("task")
    handle = ReadThrough[bytes | None]("task")
    server = ReadThrough[str | None]("task")
    numerator = ReadThrough[int]("task")
    denominator = ReadThrough[int]("task")

    def done(self) -> bool:
        return self.task.done()

    def cancel(self) -> None:
        """Stop waiting for this job. The server may still run it."""
        self._client._thread.call_soon(self.task.cancel)

    def result(self, timeout: float | None = None) -> bytes:
        """Wait for the result; raises as :meth:`Task.wait`."""
        return self._client._call(self.task.wait(timeout))

    def updates(self, timeout: float | None = None) -> Iterator[Update]:
        """Yield updates as they arrive until the job ends (see :meth:`Task.updates`)."""
        iterator = self.task.updates(timeout)
        try:
            while True:
                try:
                    yield self._client._call(_next(iterator))
                except StopAsyncIteration:
                    return
        finally:
            self._client._call(iterator.aclose())
