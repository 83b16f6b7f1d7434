"""The store interface every durable queue implements, and the row it stores."""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "IDENTIFIER",
    "DeadLetter",
    "RememberedUnique",
    "Store",
    "StoreError",
    "StoredJob",
    "StoredPolicy",
    "StoredSchedule",
    "StoredWindow",
    "check_identifier",
]

#: Table names from configuration must match this before they go anywhere near SQL.
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_identifier(name: str) -> str:
    """Return ``name`` if it is a plain SQL identifier; raise ValueError otherwise."""
    if not IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a valid table name: {name!r} (letters, digits and _ only)")
    return name


class StoreError(Exception):
    """The store could not do what was asked (connection lost, disk full, bad schema)."""


class StoredJob(NamedTuple):
    """One durable job, keyed as gearmand's queue tables key it: (unique, function).

    ``retries`` counts its failed runs so far and ``error`` says why the last one failed; a job
    with failures and a ``when`` still to come is waiting for its retry (gearsql's own columns:
    gearmand neither writes nor reads them).
    """

    unique: bytes
    function: bytes
    priority: int
    data: bytes
    when: int
    retries: int = 0
    error: bytes = b""


class DeadLetter(NamedTuple):
    """A background job that used all its attempts, kept until an operator retries or purges
    it. ``id`` is the server's number for it (unique per queue table), ``died`` epoch seconds."""

    id: int
    function: bytes
    unique: bytes
    priority: int
    data: bytes
    retries: int
    error: bytes
    died: float


class StoredPolicy(NamedTuple):
    """A function's own retry policy (``retries`` admin command): ``attempts`` runs in all,
    backoff from ``base`` seconds doubling up to ``limit``."""

    function: bytes
    attempts: int
    base: float
    limit: float


class RememberedUnique(NamedTuple):
    """A background job with this (function, unique) completed; until ``expires`` (epoch
    seconds) a new submission of it is acknowledged and not run. ``result`` is its
    WORK_COMPLETE data when the server keeps results (``--keep-results``), else empty."""

    function: bytes
    unique: bytes
    expires: float
    result: bytes


class StoredWindow(NamedTuple):
    """A function's own unique window (``uniquewindow`` admin command), in seconds."""

    function: bytes
    seconds: float


class StoredSchedule(NamedTuple):
    """A recurring schedule (``schedule add``): a background job of ``function`` with ``data``
    at each time the cron expression ``spec`` matches; ``due`` is its next tick (epoch
    seconds), rewritten in the commit that holds the job of the tick before it."""

    name: bytes
    function: bytes
    spec: str
    data: bytes
    due: int


class Store(abc.ABC):
    """Where background jobs live until they finish.

    Life cycle: :meth:`open` once (raises :class:`StoreError` when the store cannot be reached:
    the server then refuses to start), :meth:`load` to replay, then any number of :meth:`commit`
    calls, and :meth:`close`. The server never runs two commits of one store at once, and it
    acknowledges a background job (JOB_CREATED) only after the commit that holds it returned.
    """

    #: False for a store that keeps nothing (the server then skips it entirely).
    durable: bool = True

    #: Shown at start-up: where the jobs are kept.
    description: str = ""

    async def open(self) -> None:  # noqa: B027 (optional hook)
        """Connect, create or migrate the table. Raises StoreError."""

    @abc.abstractmethod
    async def load(self) -> list[StoredJob]:
        """Every stored job, oldest first, for replay at start-up. Raises StoreError."""

    @abc.abstractmethod
    async def commit(
        self,
        add: Sequence[StoredJob],
        remove: Sequence[StoredJob],
        *,
        dead_add: Sequence[DeadLetter] = (),
        dead_remove: Sequence[int] = (),
        policies: Sequence[StoredPolicy] = (),
        policies_removed: Sequence[bytes] = (),
        remembered: Sequence[RememberedUnique] = (),
        remembered_expired: float = 0.0,
        windows: Sequence[StoredWindow] = (),
        windows_removed: Sequence[bytes] = (),
        schedules: Sequence[StoredSchedule] = (),
        schedules_removed: Sequence[bytes] = (),
    ) -> None:
        """In one transaction, store ``add`` (replacing a row with the same unique and function)
        and delete ``remove`` (by unique and function; missing rows are no error), in that
        order; add the dead letters ``dead_add`` and delete those numbered ``dead_remove``; set
        the retry policies ``policies`` (replacing a function's earlier one) and delete those
        of the functions ``policies_removed``; remember the uniques ``remembered`` (replacing
        an earlier row of the same function and unique), delete every remembered unique that
        expires at or before ``remembered_expired`` (when not 0), set the unique windows
        ``windows`` and delete those of the functions ``windows_removed``; set the schedules
        ``schedules`` (replacing one of the same name) and delete those named
        ``schedules_removed``. Return once it is committed. Raises StoreError;
        then nothing of it is committed. Running the same commit twice is harmless."""

    async def load_dead(self) -> list[DeadLetter]:
        """Every dead letter, oldest first, for replay at start-up. Raises StoreError."""
        return []

    async def load_policies(self) -> list[StoredPolicy]:
        """Every function's own retry policy. Raises StoreError."""
        return []

    async def load_remembered(self) -> list[RememberedUnique]:
        """Every remembered unique (expired ones included: the server skips them). Raises
        StoreError."""
        return []

    async def load_windows(self) -> list[StoredWindow]:
        """Every function's own unique window. Raises StoreError."""
        return []

    async def load_schedules(self) -> list[StoredSchedule]:
        """Every recurring schedule. Raises StoreError."""
        return []

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Release connections and files."""
