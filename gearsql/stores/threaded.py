"""What the SQLite, PostgreSQL and MySQL stores share: one thread of the store's own for every
driver call, the open/close life cycle, and running an operation again once on a new connection.

The drivers block, so nothing of theirs may run on the event loop. Each store owns a
single-thread executor: every driver call happens there, one at a time and in order, so the
connection is never shared between threads and needs no lock. The ``async`` methods only hand
work to that thread and wait for the result.

**Reconnect once.** :meth:`ReconnectingStore._operate` runs an operation on the store's
connection (connecting first if an earlier failure left none). When the operation fails and the
backend says that running it again may succeed (the connection was lost, or the server rolled
back a deadlock), it runs it once more, on a new connection if the old one is gone. A second
failure raises :class:`StoreError`, and so does losing a connection that was made for this very
operation: there is never a loop, and the next operation starts over with one reconnect. Every
store makes running a commit twice harmless (upserts and deletions by key), which matters when
the connection broke during COMMIT and nobody can know whether the first one took effect.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from gearsql.stores.base import (
    DEAD,
    POLICIES,
    REMEMBERED,
    SCHEDULES,
    WINDOWS,
    Changes,
    DeadLetter,
    RememberedUnique,
    SideTable,
    Store,
    StoredJob,
    StoredPolicy,
    StoredSchedule,
    StoredWindow,
    StoreError,
)

__all__ = ["ReconnectingStore", "ThreadedStore"]

T = TypeVar("T")
#: What the backend's operations run on: a connection, or a cursor bound to one.
C = TypeVar("C")


class ThreadedStore(Store, Generic[C]):
    """A store whose driver work runs on one thread of its own.

    Subclasses set :attr:`kind` and implement :meth:`_open`, :meth:`_close`,
    :meth:`_operate`, :meth:`_load`, :meth:`_select` and :meth:`_commit`, which
    run on the store's thread, as should everything that touches the driver; this class gives
    them the store's ``async`` methods.
    """

    #: The database's name in messages ("SQLite", "PostgreSQL", "MySQL").
    kind: str = ""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"gearsql-{self.kind.lower()}"
        )
        #: What operations run on while connected (None while disconnected).
        self._handle: C | None = None
        self._opened = False
        self._closed = False

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)`` on the store's thread. Raises StoreError once the store is closed."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, func, *args)
        except RuntimeError as exc:  # the executor was shut down by close()
            raise StoreError(f"the {self.kind} store is closed") from exc

    async def open(self) -> None:
        """Connect (or open the file), take the store's lock and bring the table to this
        gearsql's schema. Opening an open store does nothing. Raises StoreError."""
        if self._closed:
            raise StoreError(f"the {self.kind} store is closed")
        if not self._opened:
            await self._run(self._open)
            self._opened = True

    async def close(self) -> None:
        """Release the connection (and with it the store's lock) and stop the thread. A closed
        store raises StoreError on every later call."""
        if not self._closed:
            self._closed = True
            await self._run(self._close)
        self._executor.shutdown(wait=True)

    async def load(self) -> list[StoredJob]:
        return await self._run(self._operate, "load", self._load)

    async def load_dead(self) -> list[DeadLetter]:
        return await self._load_side(DEAD)

    async def load_policies(self) -> list[StoredPolicy]:
        return await self._load_side(POLICIES)

    async def load_remembered(self) -> list[RememberedUnique]:
        return await self._load_side(REMEMBERED)

    async def load_windows(self) -> list[StoredWindow]:
        return await self._load_side(WINDOWS)

    async def load_schedules(self) -> list[StoredSchedule]:
        return await self._load_side(SCHEDULES)

    async def _load_side(self, table: SideTable) -> list[Any]:
        return await self._run(
            self._operate, "load", lambda handle: table.load(self._select(handle, table))
        )

    async def write(self, changes: Changes) -> None:
        await self._run(self._write, changes)

    # -- everything below runs on the store's own thread

    def _write(self, changes: Changes) -> None:
        self._check_usable()
        if changes:
            self._operate("commit", lambda handle: self._commit(handle, changes))

    @abc.abstractmethod
    def _operate(self, what: str, operation: Callable[[C], T]) -> T:
        """``operation`` on the store's connection; raises StoreError (named after ``what``:
        "load", "commit") for the driver's errors."""

    @abc.abstractmethod
    def _commit(self, handle: C, changes: Changes) -> None:
        """Write ``changes`` (never empty) in one transaction."""

    @abc.abstractmethod
    def _load(self, handle: C) -> list[StoredJob]:
        """Every stored job, oldest first."""

    @abc.abstractmethod
    def _select(self, handle: C, table: SideTable) -> Sequence[Sequence[Any]]:
        """The queue table's rows of the side table ``table``: its :attr:`~SideTable.columns`
        ordered by its :attr:`~SideTable.order`."""

    @abc.abstractmethod
    def _open(self) -> None:
        """Open the store (see :meth:`open`). Raises StoreError, leaving nothing open."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release everything :meth:`_open` took; never raises."""

    def _check_usable(self) -> None:
        if self._closed or not self._opened:
            state = "closed" if self._closed else "not open"
            raise StoreError(f"the {self.kind} store is {state}")


class ReconnectingStore(ThreadedStore[C]):
    """A threaded store on a database server, whose connection can be lost at any moment.

    Subclasses set :attr:`driver_error` and implement :meth:`_connect`, :meth:`_recover` and
    :meth:`_failure`; every operation runs through :meth:`_operate`, which reconnects once.
    """

    #: The driver's error class: what :meth:`_operate` catches.
    driver_error: type[Exception] = Exception

    @abc.abstractmethod
    def _connect(self) -> C:
        """A new connection holding the store's lock; sets :attr:`_handle`. Raises StoreError."""

    @abc.abstractmethod
    def _recover(self, exc: Exception, reused: bool) -> bool:
        """After ``exc`` from an operation: roll back, or forget a connection that is no longer
        usable (set :attr:`_handle` to None). Return whether running the operation once more
        may succeed; ``reused`` says whether the connection served earlier operations (one
        made for this operation that fails is not retried)."""

    @abc.abstractmethod
    def _failure(self, what: str, exc: Exception, attempt: int, reused: bool) -> StoreError:
        """The StoreError that reports ``exc`` ending ``what`` at ``attempt`` (1 or 2), after
        :meth:`_recover` has seen it."""

    def _reconnect(self, what: str, exc: Exception) -> C:
        """What the second attempt runs on: the connection if :meth:`_recover` kept it, else
        a new one. Raises StoreError."""
        return self._handle if self._handle is not None else self._connect()

    def _operate(self, what: str, operation: Callable[[C], T]) -> T:
        """Run ``operation`` on the connection; should :meth:`_recover` say it may succeed
        when run again (the connection was lost, say), run it once more, reconnecting if
        needed. Raises StoreError (named after ``what``: "load", "commit")."""
        self._check_usable()
        reused = self._handle is not None
        handle = self._handle if self._handle is not None else self._connect()
        try:
            return operation(handle)
        except self.driver_error as exc:
            if not self._recover(exc, reused):
                raise self._failure(what, exc, 1, reused) from exc
            first = exc
        handle = self._reconnect(what, first)
        try:
            return operation(handle)
        except self.driver_error as exc:
            self._recover(exc, True)
            raise self._failure(what, exc, 2, reused) from exc
