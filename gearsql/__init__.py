"""gearsql: a Gearman job server, client library and SQL bridge."""

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
