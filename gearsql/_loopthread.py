"""A private asyncio event loop on a daemon thread, for the blocking facades of async classes."""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar, overload

__all__ = ["EventLoopThread", "ReadThrough", "new_event_loop"]

T = TypeVar("T")


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
    wakes its thread for a call from another thread several times more cheaply (an eventfd
    handled in C against the stdlib loop's self-pipe and Python-level selector), and that
    wake-up is most of what a blocking call adds (bench/sync_overhead.py)."""
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - uvloop is the optional 'fast' extra
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class EventLoopThread:
    """Runs an event loop forever on its own thread; :meth:`run` waits for a coroutine on it."""

    def __init__(self, name: str) -> None:
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop thread and return its result (or raise its exception)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "a blocking gearsql call was made on its own event-loop thread "
                "(from a callback?); use the async API there"
            )
        if self.loop.is_closed():
            coro.close()
            raise RuntimeError("this client is closed")
        # One lock the caller blocks on and the task's done-callback releases: cheaper than
        # run_coroutine_threadsafe's concurrent.futures.Future (a Condition, its waiter locks,
        # a chaining callback) for the same two thread handoffs.
        done = _thread.allocate_lock()
        done.acquire()
        finished: list[asyncio.Task[T]] = []

        def release(task: asyncio.Task[T]) -> None:
            finished.append(task)
            done.release()

        def start() -> None:
            self.loop.create_task(coro).add_done_callback(release)

        self.loop.call_soon_threadsafe(start)
        done.acquire()
        task = finished[0]
        if task.cancelled():
            # What run_coroutine_threadsafe(...).result() raised for a cancelled coroutine.
            raise concurrent.futures.CancelledError()
        return task.result()

    def close(self) -> None:
        """Stop the loop and join its thread (idempotent)."""
        if self.loop.is_closed():
            return
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            if threading.current_thread() is not self._thread:
                self._thread.join()
        if not self._thread.is_alive():
            self.loop.close()
