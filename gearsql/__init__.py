"""gearsql: a Gearman job server, client library and SQL bridge.

The package exports the client and worker library, but the job server needs none of it (the
client and worker modules are close to 1 MiB of an idle server's memory): each public name is
imported from its module on first use, by the module ``__getattr__`` below, so ``from gearsql
import Client`` works as before and ``import gearsql`` alone loads nothing else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the type checkers and IDEs see: the names, as if imported eagerly
    from gearsql.client import (
        AsyncClient,
        Client,
        JobHandle,
        JobStatus,
        Priority,
        SyncTask,
        Task,
        Update,
        WorkData,
        WorkStatus,
        WorkWarning,
    )
    from gearsql.errors import (
        ConnectionLost,
        GearmanError,
        InvalidArgument,
        InvalidPayload,
        JobException,
        JobFailed,
        JobTimeout,
        ServerError,
        ServerUnavailable,
    )
    from gearsql.protocol import (
        AdminLine,
        LocalProtocolError,
        Packet,
        PacketType,
        Parser,
        Violation,
        pack,
    )
    from gearsql.worker import AsyncWorker, Handler, Worker, WorkerJob

__version__ = "0.1.0"

#: The module each public name comes from (``__all__`` lists them again, as type checkers
#: want a literal list; tests/test_startup_imports.py checks that the two agree).
_EXPORTS = {
    **dict.fromkeys(
        [
            "AsyncClient",
            "Client",
            "JobHandle",
            "JobStatus",
            "Priority",
            "SyncTask",
            "Task",
            "Update",
            "WorkData",
            "WorkStatus",
            "WorkWarning",
        ],
        "gearsql.client",
    ),
    **dict.fromkeys(
        [
            "ConnectionLost",
            "GearmanError",
            "InvalidArgument",
            "InvalidPayload",
            "JobException",
            "JobFailed",
            "JobTimeout",
            "ServerError",
            "ServerUnavailable",
        ],
        "gearsql.errors",
    ),
    **dict.fromkeys(
        ["AdminLine", "LocalProtocolError", "Packet", "PacketType", "Parser", "Violation", "pack"],
        "gearsql.protocol",
    ),
    **dict.fromkeys(["AsyncWorker", "Handler", "Worker", "WorkerJob"], "gearsql.worker"),
}

__all__ = [
    "AdminLine",
    "AsyncClient",
    "AsyncWorker",
    "Client",
    "ConnectionLost",
    "GearmanError",
    "Handler",
    "InvalidArgument",
    "InvalidPayload",
    "JobException",
    "JobFailed",
    "JobHandle",
    "JobStatus",
    "JobTimeout",
    "LocalProtocolError",
    "Packet",
    "PacketType",
    "Parser",
    "Priority",
    "ServerError",
    "ServerUnavailable",
    "SyncTask",
    "Task",
    "Update",
    "Violation",
    "WorkData",
    "WorkStatus",
    "WorkWarning",
    "Worker",
    "WorkerJob",
    "__version__",
    "pack",
]


if not TYPE_CHECKING:  # hidden from type checkers, which would take any name through it

    def __getattr__(name: str) -> Any:
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # the next lookup does not come here
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_EXPORTS})
