"""Durable job stores behind one small interface, and the factory that picks one from a URL.

A store keeps background and epoch jobs so that a restarted server replays them. The server calls
it from the event loop; a store that talks to a database does its blocking work elsewhere (a
thread) so the loop never waits on disk or network.
"""

from __future__ import annotations

from gearsql.stores.base import Store, StoredJob, StoreError
from gearsql.stores.memory import MemoryStore

__all__ = ["MemoryStore", "Store", "StoreError", "StoredJob", "open_store"]


def open_store(url: str) -> Store:
    """The store a ``--store`` value names.

    ``memory`` keeps nothing across restarts. Raises :class:`ValueError` for a URL of a kind
    this build does not have.
    """
    if url in ("memory", "memory://", "none"):
        return MemoryStore()
    raise ValueError(f"unknown store {url!r}: this version supports 'memory'")
