"""What the status page (gearsql.web) and the metrics (gearsql.metrics) read from the running job
server, as a :class:`typing.Protocol`.

:class:`gearsql.server.JobServer` has all of it. The readers name this type, not ``JobServer``, so
that they need not import gearsql.server, which imports them (through gearsql.http): there is no
import cycle between the server and what shows it, not even one of type hints
(tests/test_import_cycles.py).
"""

from __future__ import annotations

from collections.abc import Sized
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gearsql._corestate import Histogram
    from gearsql.core import JobServerCore
    from gearsql.relay.watch import RelayWatch
    from gearsql.stores import Store

__all__ = ["ServerView"]


class ServerView(Protocol):
    """The server's state the status page and ``/metrics`` show."""

    @property
    def core(self) -> JobServerCore: ...

    @property
    def store(self) -> Store: ...

    #: Gearman connections and HTTP connections, counted.
    @property
    def connections(self) -> Sized: ...

    @property
    def http_connections(self) -> Sized: ...

    #: Bytes read from and written to connections (both protocols).
    bytes_in: int
    bytes_out: int

    #: Seconds each group commit took.
    @property
    def commit_time(self) -> Histogram: ...

    #: The outbox readings of the relays inside the server (``--relay``), else None.
    @property
    def relay_watch(self) -> RelayWatch | None: ...
