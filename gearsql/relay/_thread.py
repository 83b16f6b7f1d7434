"""Runs a blocking watcher (the binlog reader, SQLite's change counter) in a thread of its own
for :meth:`gearsql.relay.source.Source.watch`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

__all__ = ["watch_in_thread"]

#: ``follow(wake, stopping)``: call ``wake()`` (safe from any thread) when rows may have come;
#: return soon after ``stopping`` is set; raise when it cannot follow any more.
Follower = Callable[[Callable[[], None], threading.Event], None]


async def watch_in_thread(follow: Follower, wake: Callable[[], None], name: str) -> None:
    """Run ``follow`` in a new thread until it returns or raises (re-raised here), or until
    cancelled (then ``stopping`` is set and the thread waited for)."""
    loop = asyncio.get_running_loop()
    stopping = threading.Event()
    finished: asyncio.Future[None] = loop.create_future()

    def wake_threadsafe() -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(wake)

    def settle(exc: BaseException | None) -> None:
        if not finished.done():
            if exc is None:
                finished.set_result(None)
            else:
                finished.set_exception(exc)

    def run() -> None:
        error: BaseException | None = None
        try:
            follow(wake_threadsafe, stopping)
        except BaseException as exc:
            error = exc
        if not loop.is_closed():
            loop.call_soon_threadsafe(settle, error)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        await finished  # cancelling this cancels the future: settle() then leaves it alone
    finally:
        stopping.set()
        if thread.is_alive():
            await asyncio.to_thread(thread.join)
