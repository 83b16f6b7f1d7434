"""The job server's settings (:class:`ServerConfig`, what ``gearsql server`` can be told) and
:func:`is_loopback`, which decides from a listen address or a peer's host whether it is this
machine. gearsql.server re-exports ``ServerConfig``; the connections (gearsql._serverconn,
gearsql.http) and the server read it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from gearsql._limits import (
    DEFAULT_MAX_BUFFER,
    DEFAULT_MAX_FUNCTIONS,
    DEFAULT_MAX_OUTPUT,
    DEFAULT_PACKET_TIMEOUT,
)
from gearsql.protocol import DEFAULT_MAX_PACKET_SIZE
from gearsql.stores import default_store_url

__all__ = ["ServerConfig", "is_loopback"]


@dataclass
class ServerConfig:
    """Everything ``gearsql server`` can be told; the CLI fills it from options.

    ``store`` is a store URL as :func:`gearsql.stores.open_store` takes it. Its default is the
    CLI's: the SQLite file of :func:`gearsql.stores.default_store_url`
    (``$XDG_STATE_HOME/gearsql/queue.sqlite3``), read when the config is made, so that a server
    started from Python keeps its background jobs across restarts as ``gearsql server`` does.
    Pass ``store="memory"`` for a server that keeps nothing.

    ``retries`` is how many runs a failed background job gets in all (0: none, Gearman's
    meaning), ``retry_backoff`` the (base, max) seconds of the backoff between them;
    ``job_retries`` is gearmand's option: runs of a job whose worker was lost (0 or -1:
    unlimited).
    """

    listen: Sequence[str] = ("127.0.0.1",)
    port: int = 4730
    job_retries: int = -1
    retries: int = 0
    retry_backoff: tuple[float, float] = (1.0, 300.0)
    #: Seconds a completed background job's unique is remembered (a new submission of it is
    #: acknowledged and not run); 0: off. ``keep_results`` keeps their WORK_COMPLETE data for
    #: foreground submissions of the same unique.
    unique_window: float = 0.0
    keep_results: bool = False
    worker_wakeup: int = 0
    exceptions: bool = False
    job_handle_prefix: str = ""
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
    max_connections: int = 0
    #: Bytes of incomplete messages all connections together may hold; at least
    #: ``max_packet_size``.
    max_buffer: int = DEFAULT_MAX_BUFFER
    #: Seconds an incomplete message may take from its first byte to its last; 0: no limit.
    packet_timeout: float = DEFAULT_PACKET_TIMEOUT
    #: Seconds a connection with nothing under way (no job it waits for or runs, no function it
    #: works on) may send nothing before it is closed; 0: never.
    idle_timeout: float = 0.0
    #: Unread output (bytes) past which a connection is closed; more than ``max_packet_size``.
    max_output: int = DEFAULT_MAX_OUTPUT
    #: Most functions at once; 0: no limit.
    max_functions: int = DEFAULT_MAX_FUNCTIONS
    backlog: int = 1024
    #: Runs of stored jobs a worker may end before the first end is committed (its next job
    #: waits past that): the most finished jobs per worker a crash can run again.
    unconfirmed_runs: int = 1
    keepalive: bool = False
    keepalive_idle: int = -1
    keepalive_interval: int = -1
    keepalive_count: int = -1
    store: str = field(default_factory=default_store_url)
    allow_insecure_remote: bool = False
    remote_admin: bool = False
    verbose: str = "NOTICE"
    #: Databases whose outbox a relay inside this process drains into this server.
    relay: Sequence[str] = ()
    #: Port of gearmand's HTTP protocol (gearsql.http), on the ``listen`` addresses; None: off.
    http_port: int | None = None
    #: TLS on every listener (gearmand's ``--ssl``): the server's certificate and key, and the
    #: CA that client certificates are checked against (docs/security.md).
    ssl: bool = False
    ssl_certificate: str | None = None
    ssl_key: str | None = None
    ssl_ca_file: str | None = None
    #: Refuse clients without a certificate signed by ``ssl_ca_file`` in the handshake.
    ssl_verify_client: bool = False
    #: Who may submit to, work on and administer what, by certificate identity (gearsql.acl);
    #: read again on SIGHUP.
    acl_file: str | None = None
    #: Schedules of the config file: ``NAME M H DOM MON DOW [catch-up=MODE] FUNCTION [DATA]``
    #: each (gearsql._cron.parse_schedule), reconciled with the stored ones at start-up.
    schedules: Sequence[str] = ()


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``localhost`` or an address, with or without a ``%zone``) is loopback."""
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False
