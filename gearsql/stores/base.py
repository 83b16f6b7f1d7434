"""The store interface every durable queue implements, and the row it stores."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["Store", "StoreError", "StoredJob"]


class StoreError(Exception):
    """The store could not do what was asked (connection lost, disk full, bad schema)."""


class StoredJob(NamedTuple):
    """One durable job, as gearmand's queue tables key it: (unique, function)."""

    unique: bytes
    function: bytes
    priority: int
    data: bytes
    when: int


class Store(abc.ABC):
    """Where background jobs live until they finish.

    Life cycle: :meth:`open` once (raises :class:`StoreError` when the store cannot be reached:
    the server then refuses to start), :meth:`load` to replay, then any number of :meth:`add`
    and :meth:`remove` calls, and :meth:`close`. ``add`` returns only after the rows are
    committed; the server acknowledges a job (JOB_CREATED) only after that.
    """

    #: False for a store that keeps nothing (the server then skips it entirely).
    durable: bool = True

    #: Shown at start-up: where the jobs are kept.
    description: str = ""

    async def open(self) -> None:  # noqa: B027 (optional hook)
        """Connect, create or migrate the table. Raises StoreError."""

    @abc.abstractmethod
    async def load(self) -> list[StoredJob]:
        """Every stored job, oldest first, for replay at start-up."""

    @abc.abstractmethod
    async def add(self, jobs: Sequence[StoredJob]) -> None:
        """Store ``jobs`` in one transaction; return once it is committed. Raises StoreError."""

    @abc.abstractmethod
    async def remove(self, jobs: Sequence[StoredJob]) -> None:
        """Delete these jobs (by unique and function). Raises StoreError."""

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Release connections and files."""
