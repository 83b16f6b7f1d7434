"""The pipeline status of the relays a job server runs (``gearsql server --relay DSN``), read
every few seconds for ``/metrics`` and the status page.

Each reading is :func:`gearsql.relay.status.pipeline_status` (``gearsql relay status``: one
short transaction that takes no lock), run in a thread so that the server's event loop never
waits on a database, nor its shutdown on a database that does not answer. A database that
cannot be read keeps its last figures and says why.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gearsql.relay.status import PipelineStatus, pipeline_status

__all__ = ["RelayReading", "RelayWatch", "redact"]

log = logging.getLogger("gearsql.relay")

#: Seconds between two readings of each database.
INTERVAL = 2.0


def redact(dsn: str) -> str:
    """The DSN without its password, to show and to label metrics with."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


@dataclass
class RelayReading:
    """The last reading of one relay's database: ``status`` is the last one that worked (None
    before any), ``error`` why the latest failed (None when it worked), ``at`` when it was
    tried (epoch seconds)."""

    relay: str
    status: PipelineStatus | None = None
    error: str | None = None
    at: float = 0.0


class RelayWatch:
    """Reads the pipeline status of each DSN every ``interval`` seconds until stopped."""

    def __init__(self, dsns: Sequence[str], schema: str = "gearsql", interval: float = INTERVAL):
        self.schema = schema
        self.interval = interval
        self.readings = {dsn: RelayReading(redact(dsn)) for dsn in dsns}

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                for dsn, reading in self.readings.items():
                    future = self._read(dsn)
                    either: set[asyncio.Future[Any]] = {future, stopping}
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                    if stop.is_set():
                        return
                    error = future.exception()
                    if error is None:
                        reading.status, reading.error = future.result(), None
                    else:
                        if reading.error is None:
                            log.warning("cannot read the outbox of %s: %s", reading.relay, error)
                        reading.error = str(error).strip() or type(error).__name__
                    reading.at = time.time()
                await asyncio.wait({stopping}, timeout=self.interval)
        finally:
            stopping.cancel()

    def _read(self, dsn: str) -> asyncio.Future[PipelineStatus]:
        """One reading, in a daemon thread of its own: a database that does not answer never
        holds up the server's shutdown (a thread of the loop's executor would)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PipelineStatus] = loop.create_future()

        def settle(result: PipelineStatus | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                assert result is not None
                future.set_result(result)

        def read() -> None:
            try:
                result, error = pipeline_status(dsn, self.schema), None
            except Exception as exc:
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(settle, result, error)
            except RuntimeError:  # the loop is closed: the server stopped meanwhile
                pass

        threading.Thread(target=read, name="gearsql-relay-watch", daemon=True).start()
        return future

    def report(self) -> list[dict[str, Any]]:
        """The readings as JSON values, for the status page."""
        report = []
        for reading in self.readings.values():
            status = reading.status
            report.append(
                {
                    "relay": reading.relay,
                    "database": status.database if status else None,
                    "backlog": status.backlog if status else None,
                    "lag": (status.oldest_age or 0.0) if status else None,
                    "dead": status.dead if status else None,
                    "last_dead": status.last_dead_reasons if status else [],
                    "error": reading.error,
                    "at": reading.at,
                }
            )
        return report
