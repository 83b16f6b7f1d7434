"""The in-memory store: keeps nothing, so a restart forgets every queued job."""

from __future__ import annotations

from collections.abc import Sequence

from gearsql.stores.base import (
    DeadLetter,
    RememberedUnique,
    Store,
    StoredJob,
    StoredPolicy,
    StoredSchedule,
    StoredWindow,
)

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """No durability: ``--store memory``. The server does not call it for each job."""

    durable = False
    description = "memory (jobs are lost when the server stops)"

    async def load(self) -> list[StoredJob]:
        return []

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
        return None
