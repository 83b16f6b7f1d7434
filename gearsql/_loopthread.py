"""A private asyncio event loop for the blocking facades of async classes, run by the threads
that block on it.

Each blocking call runs the loop in its own thread while no other thread does (the leader), so
a call costs no thread switch at all; a call made while another thread leads hands its
coroutine to the leader and sleeps until it is done, or until the leader's own call ends and
hands the loop over to it. Between calls, work left running (jobs started without waiting, a
call given up by Ctrl-C) is advanced by the loop's caretaker thread, which takes the loop only
after it has been left alone for :data:`GRACE` seconds and gives it back as soon as a blocking
call comes. One exception: on uvloop, whose every run in the main thread sets up its signal
wake-up (a socketpair and several system calls, dearer than a thread switch), the main thread's
calls are run by the caretaker, as by a loop thread of its own. Why not a loop thread for all:
waking it and then the caller again cost 55-85 µs per call on a busy 2-core machine, most of
what a blocking call added (bench/README.md, sync_overhead.py).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found,unused-ignore]  # signal without its enum wrappers
import _thread
import asyncio
import concurrent.futures
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar, overload

__all__ = ["GRACE", "EventLoopThread", "ReadThrough", "new_event_loop"]

T = TypeVar("T")

_MAIN = threading.main_thread()

#: Seconds the loop stays without a thread before the caretaker runs pending work: long enough
#: that a caller issuing calls back to back (say, submit_task in a loop) keeps the loop itself,
#: short beside a network round trip.
GRACE = 0.001

# How often the caretaker, while it runs the loop, looks whether pending work is left (and
# lets the loop go when none is). A call that can run the loop itself takes it at once anyway;
# 10 ms here cost the main thread's calls on uvloop 10-20 µs of CPU each (sync_overhead.py).
_CARETAKER_CHECK = 1.0


class ReadThrough(Generic[T]):
    """A read-only attribute of a blocking facade that shows the attribute of the same name of
    the object it wraps (``via``, e.g. ``"_async"``): the value, never a copy, so it stays
    true as the wrapped object changes. ``servers = ReadThrough[list[str]]("_async")``."""

    def __init__(self, via: str, doc: str | None = None) -> None:
        self.via = via
        self.name = ""
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> ReadThrough[T]: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...
    def __get__(self, instance: object, owner: type | None = None) -> T | ReadThrough[T]:
        if instance is None:
            return self
        value: T = getattr(getattr(instance, self.via), self.name)
        return value


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when the optional 'fast' extra is installed, else the stdlib one. uvloop
    handles I/O and wake-ups from other threads more cheaply (an eventfd handled in C against
    the stdlib loop's self-pipe and Python-level selector), though each of its runs in the main
    thread sets up its own signal wake-up (see :class:`EventLoopThread` for what follows)."""
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - uvloop is the optional 'fast' extra
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class _Call:
    """One blocking call: its coroutine until started, then its task, then its outcome (result
    or error) once ``done``; ``wake`` is held while the calling thread sleeps and released to
    wake it (its call is done, or the loop is its to run)."""

    __slots__ = ("can_lead", "coro", "done", "error", "result", "task", "wake")

    def __init__(self, coro: Coroutine[Any, Any, Any] | None, can_lead: bool = True) -> None:
        self.coro = coro
        self.can_lead = can_lead
        self.task: asyncio.Task[None] | None = None
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.wake = _thread.allocate_lock()
        self.wake.acquire()


class EventLoopThread:
    """An event loop that blocking calls run in their own threads (see the module docstring);
    :meth:`run` runs a coroutine on it and returns its outcome. ``busy`` says whether work
    that no call waits for is in progress (the caretaker advances it between calls)."""

    def __init__(self, name: str, busy: Callable[[], bool] = lambda: False) -> None:
        self.loop = new_event_loop()
        # In the main thread each run of a uvloop loop sets up uvloop's signal wake-up (a
        # socketpair and several system calls), which costs more than a thread hop: there the
        # caretaker runs the loop for the call, as a thread of its own did before.
        self._main_leads = isinstance(self.loop, asyncio.BaseEventLoop)
        self._busy = busy
        # Guards the fields below; never held while the loop runs.
        self._mutex = _thread.RLock()  # reentrant: a finalizer may close it from a callback
        self._leader: _Call | None = None  # the call whose thread runs the loop now
        self._waiting: list[_Call] = []  # calls asleep while another thread leads, oldest first
        self._given_up: set[_Call] = set()  # interrupted calls whose coroutines still run
        self._closed = False
        self._caretaker = _Call(None)  # the caretaker's own "call", the leader while it runs
        self._thread = threading.Thread(target=self._care, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and return its result (or raise its exception). Raises
        :class:`RuntimeError` when called from code running on the loop or after :meth:`close`."""
        if self._on_loop():
            coro.close()
            raise RuntimeError(
                "a blocking gearsql call was made from its own event loop "
                "(in a callback?); use the async API there"
            )
        call = _Call(coro, self._main_leads or threading.current_thread() is not _MAIN)
        with self._mutex:
            if self._closed:
                coro.close()
                raise RuntimeError("this client is closed")
            leading = self._leader is None and call.can_lead
            caretaker_leads = self._leader is None and not call.can_lead
            if leading:
                self._leader = call
            else:
                self._waiting.append(call)
                if caretaker_leads:
                    self._leader = self._caretaker
        if leading:
            self._lead(call)
        else:
            # Outside the mutex: the thread that runs the loop wakes at once and takes it.
            self.loop.call_soon_threadsafe(self._start, call)
            if caretaker_leads:
                self._wake_caretaker()
            self._wait(call)
        if call.error is not None:
            if isinstance(call.error, asyncio.CancelledError):
                # What run_coroutine_threadsafe(...).result() raised for a cancelled coroutine.
                raise concurrent.futures.CancelledError()
            raise call.error
        result: T = call.result
        return result

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the loop soon, from any thread, without waiting for it."""
        with self._mutex:
            self.loop.call_soon_threadsafe(callback)
            if self._leader is None:
                self._wake_caretaker()

    def close(self) -> None:
        """Close the loop once no thread runs it and stop the caretaker (idempotent)."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._wake_caretaker()
            closing = self._leader is None
            if self._leader is self._caretaker:
                self.loop.call_soon_threadsafe(self.loop.stop)
        if closing:
            self.loop.close()
        # The caretaker ends once no call is left (calls in flight in other threads finish).
        if threading.current_thread() is not self._thread and not self._on_loop():
            self._thread.join()

    def _on_loop(self) -> bool:
        return asyncio._get_running_loop() is self.loop

    # -- the calling threads

    def _start(self, call: _Call) -> None:
        """On the loop: start the call's coroutine, unless it was started or given up already
        or the caretaker runs the loop and the caller can: then the caretaker hands it over
        (uvloop's stop() takes effect an iteration late, so the caller starts it itself)."""
        with self._mutex:
            coro, call.coro = call.coro, None  # None: started (or given up)
            if coro is None:
                return
            if self._leader is self._caretaker and call.can_lead:
                call.coro = coro
                self.loop.stop()
                return
        call.task = self.loop.create_task(self._drive(call, coro))

    async def _drive(self, call: _Call, coro: Coroutine[Any, Any, Any]) -> None:
        """The call's coroutine, its outcome kept in the call: the loop stops (or the waiting
        thread is woken) in the very step that ends it, without a done-callback's iteration."""
        try:
            call.result = await coro
        except GeneratorExit:  # the loop was closed with the call pending: nobody waits
            call.error = RuntimeError("this client is closed")
            raise
        except BaseException as exc:  # the caller's to raise, KeyboardInterrupt included
            call.error = exc
        finally:
            with self._mutex:
                call.done = True
                self._given_up.discard(call)
                if self._leader is call:
                    self.loop.stop()
                elif call in self._waiting:
                    self._waiting.remove(call)
                    call.wake.release()

    def _wait(self, call: _Call) -> None:
        """Sleep until the call is finished or the loop is handed over to it (then lead)."""
        try:
            call.wake.acquire()
        except BaseException:  # Ctrl-C in the main thread: the job keeps running on the loop
            closing = False
            with self._mutex:
                if call.coro is not None:  # not started: it never will be
                    call.coro.close()
                    call.coro = None
                    call.done = True
                elif not call.done:
                    self._given_up.add(call)
                if call in self._waiting:
                    self._waiting.remove(call)
                elif self._leader is call:  # handed the loop just as it was interrupted
                    closing = self._hand_over()
            if closing:
                self.loop.close()
            raise
        if not call.done:
            self._lead(call)

    def _lead(self, call: _Call) -> None:
        """Run the loop in this thread until the call is finished, then hand it over. A Python
        SIGINT handler is run after the loop stops, never inside the client's code."""
        interrupted: list[tuple[int, Any]] = []
        previous: Any = None
        if threading.current_thread() is threading.main_thread():
            previous = _signal.getsignal(signal.SIGINT)
            if callable(previous):

                def on_sigint(signum: int, frame: Any) -> None:
                    interrupted.append((signum, frame))
                    self.loop.call_soon_threadsafe(self.loop.stop)

                _signal.signal(signal.SIGINT, on_sigint)
            else:
                previous = None
        # A blocking call from code that runs another event loop: that loop waits, as it did
        # when the call went to a thread of its own.
        outer = asyncio._get_running_loop()
        asyncio._set_running_loop(None)
        try:
            if call.coro is not None:
                # Not started yet. Its first step comes an iteration later, after the loop took
                # in what arrived while nobody ran it (a server that closed its connection,
                # say), so that the call does not write to a connection known to be dead.
                self.loop.call_soon(self._start, call)
            while not call.done and not interrupted:
                self.loop.run_forever()
        finally:
            asyncio._set_running_loop(outer)
            if previous is not None:
                _signal.signal(signal.SIGINT, previous)
            with self._mutex:
                if not call.done:
                    if call.coro is None:
                        self._given_up.add(call)
                    else:  # interrupted before it started
                        call.coro.close()
                closing = self._hand_over()
            if closing:
                self.loop.close()
        if interrupted:
            previous(*interrupted[-1])  # the default handler raises KeyboardInterrupt here
            if not call.done:  # a handler that did not raise: wait on
                self._rejoin(call)

    def _rejoin(self, call: _Call) -> None:
        with self._mutex:
            self._given_up.discard(call)
            leading = self._leader is None
            if leading:
                self._leader = call
            else:
                self._waiting.append(call)
        if leading:
            self._lead(call)
        else:
            self._wait(call)

    def _hand_over(self) -> bool:
        """With the mutex held, by the thread leaving the loop: give it to the oldest waiting
        call, else to nobody (the caretaker takes it if work is left). True: the client is
        closed and nobody will run the loop again, so the caller closes it (without the mutex)."""
        for n, call in enumerate(self._waiting):
            if call.can_lead:
                self._leader = self._waiting.pop(n)
                call.wake.release()
                return False
        if self._waiting:  # calls that the caretaker runs for their threads
            self._leader = self._caretaker
            self._wake_caretaker()
            return False
        self._leader = None
        if self._closed:
            self._wake_caretaker()  # to end
            return True
        if self._given_up or self._busy():
            self._wake_caretaker()
        return False

    # -- the caretaker

    def _wake_caretaker(self) -> None:
        """Let the caretaker look at the loop (it may be awake already)."""
        try:
            self._caretaker.wake.release()
        except RuntimeError:  # not held: awake already
            pass

    def _care(self) -> None:
        asyncio.set_event_loop(self.loop)
        me = self._caretaker
        while True:
            me.wake.acquire()
            if self._leader is not me:  # else a call that does not run the loop itself came
                if not self._closed:
                    time.sleep(GRACE)
                with self._mutex:
                    if self._closed:
                        if self._leader is None:  # and so no call waits either
                            return
                        continue  # the leader's hand-over wakes it again
                    if self._leader is not None or not (self._given_up or self._busy()):
                        continue
                    self._leader = me
            try:
                while True:
                    check = self.loop.call_later(_CARETAKER_CHECK, self.loop.stop)
                    self.loop.run_forever()
                    check.cancel()
                    with self._mutex:
                        if self._closed or any(call.can_lead for call in self._waiting):
                            break
                        if not (self._waiting or self._given_up or self._busy()):
                            break
            finally:
                with self._mutex:
                    closing = self._hand_over()
                if closing:
                    self.loop.close()
