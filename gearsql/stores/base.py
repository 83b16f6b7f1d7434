"""The store interface every durable queue implements, and the row it stores."""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["IDENTIFIER", "Store", "StoreError", "StoredJob", "check_identifier"]

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
    """One durable job, keyed as gearmand's queue tables key it: (unique, function)."""

    unique: bytes
    function: bytes
    priority: int
    data: bytes
    when: int


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
    async def commit(self, add: Sequence[StoredJob], remove: Sequence[StoredJob]) -> None:
        """In one transaction, store ``add`` (replacing a row with the same unique and function)
        and delete ``remove`` (by unique and function; missing rows are no error). Return once
        it is committed. Raises StoreError; then nothing of it is committed."""

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Release connections and files."""
