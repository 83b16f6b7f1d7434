"""The in-memory store: keeps nothing, so a restart forgets every queued job."""

from __future__ import annotations

from gearsql.stores.base import Changes, Store, StoredJob

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """No durability: ``--store memory``. The server does not call it for each job."""

    durable = False
    description = "memory (jobs are lost when the server stops)"

    async def load(self) -> list[StoredJob]:
        return []

    async def write(self, changes: Changes) -> None:
        return None
