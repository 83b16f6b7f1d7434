"""Where the relay sends the jobs of one function: the servers chosen for it in the database with
``gman_servers_set(servers, function)`` (the table ``gman_function_servers``), as far as the
relay's own servers allow, each list through an :class:`~gearsql.client.AsyncClient` of its
own; every other function through the relay's default client.

When a function's own servers do not take jobs, its rows wait in the outbox and the relay
claims the others without them (``skip``) until a retry is due, with a backoff per server list:
an outage of one function's servers never holds up the rows of other functions."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from gearsql._log import NOTICE
from gearsql._servers import Backoff, format_address, parse_servers
from gearsql.client import AsyncClient
from gearsql.relay.batch import Outage, as_bytes

__all__ = ["FunctionRoutes"]

log = logging.getLogger("gearsql.relay")


def _servers(text: str) -> list[str] | None:
    try:
        return [format_address(address) for address in parse_servers(text)]
    except ValueError:
        return None


class FunctionRoutes:
    """The functions with servers of their own, resolved against the servers the relay submits
    to (its default client's: the database's ``servers`` setting, or the servers it was given).

    An entry naming a server outside those (the installer narrowed ``servers``, or the relay was
    given other servers) keeps only the servers inside; an entry left with none is ignored (its
    jobs go to the default servers). Each such entry is logged once as a warning, each change of
    a function's route as a notice. Clients are made on first use, one per distinct list, and
    kept until :meth:`close` (a foreground call may still run on one whose route changed)."""

    def __init__(self, where: str) -> None:
        self.where = where
        #: The entries as last read from the database: function -> server list.
        self.entries: dict[bytes, str] = {}
        self._allowed: list[str] = []
        self._routes: dict[bytes, tuple[str, ...]] = {}
        self._clients: dict[tuple[str, ...], AsyncClient] = {}
        self._warned: set[tuple[bytes, str, tuple[str, ...]]] = set()
        #: Server lists of functions that do not take jobs: the outage, its backoff, and when to
        #: try them again.
        self._down: dict[tuple[str, ...], tuple[Outage, Backoff, float]] = {}

    def update(self, entries: Mapping[bytes, str], default: AsyncClient) -> None:
        """Follow ``entries`` (as read from the database) within ``default``'s servers."""
        allowed = default.servers
        if dict(entries) == self.entries and allowed == self._allowed:
            return
        routes: dict[bytes, tuple[str, ...]] = {}
        for function, text in sorted(entries.items()):
            servers = _servers(text)
            inside = tuple(server for server in servers or () if server in allowed)
            if servers is None or len(inside) < len(servers):
                warned = (function, text, tuple(allowed))
                if warned not in self._warned:
                    self._warned.add(warned)
                    log.warning(
                        "%s: gman_servers_set chose %r for function %r, but this relay submits "
                        "only to %s; %s",
                        self.where,
                        text,
                        function.decode("utf-8", "replace"),
                        ",".join(allowed),
                        f"its jobs go to {','.join(inside)}"
                        if inside
                        else "the choice is ignored: its jobs go to those",
                    )
            if inside:
                routes[function] = inside
        for function in sorted(set(routes) | set(self._routes)):
            old, new = self._routes.get(function), routes.get(function)
            if old == new:
                continue
            name = function.decode("utf-8", "replace")
            if new is None:
                log.log(
                    NOTICE,
                    "%s: jobs of function %r go to the relay's servers again (%s)",
                    self.where,
                    name,
                    ",".join(allowed),
                )
            else:
                log.log(
                    NOTICE,
                    "%s: jobs of function %r go to %s (gman_servers_set)",
                    self.where,
                    name,
                    ",".join(new),
                )
        self.entries = dict(entries)
        self._allowed = list(allowed)
        self._routes = routes
        kept = set(routes.values())
        self._down = {servers: down for servers, down in self._down.items() if servers in kept}

    def route_of(self, function: str | bytes) -> tuple[str, ...] | None:
        """The servers of ``function``'s own route, None when it goes to the default ones."""
        return self._routes.get(as_bytes(function))

    def failed(self, servers: tuple[str, ...], now: float) -> bool:
        """Record that ``servers`` did not take a job; True when that starts an outage."""
        outage, backoff, _ = self._down.get(servers, (Outage(), Backoff(0.2, 10.0), now))
        self._down[servers] = (outage, backoff, now + backoff.next_delay())
        return outage.failed(now)

    def succeeded(self, servers: tuple[str, ...], now: float) -> float | None:
        """Record that ``servers`` took a job; the outage's length when that ends one."""
        down = self._down.pop(servers, None)
        return None if down is None else down[0].recovered(now)

    def skipped(self, now: float) -> list[bytes]:
        """Functions whose own servers are down with no retry due: claims leave their rows."""
        waiting = {servers for servers, (_, _, retry) in self._down.items() if retry > now}
        return sorted(function for function, servers in self._routes.items() if servers in waiting)

    def next_retry(self) -> float | None:
        """When the first down route is due for another try (None: none is down)."""
        return min((retry for _, _, retry in self._down.values()), default=None)

    def client_for(self, function: str | bytes, default: AsyncClient) -> AsyncClient:
        """The client that submits jobs of ``function``."""
        servers = self._routes.get(as_bytes(function))
        if servers is None or list(servers) == default.servers:
            return default
        client = self._clients.get(servers)
        if client is None:
            client = self._clients[servers] = AsyncClient(
                list(servers),
                exceptions=default.exceptions,
                encoding=default.encoding,
                retry=default.retry,
                connect_timeout=default.connect_timeout,
                ssl=default.ssl_context if default.ssl_context is not None else False,
            )
        return client

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()
