"""One connection of a Gearman client (gearsql.client): :class:`_Link` drives a sans-IO
:class:`~gearsql._clientconn.ClientConnection` over an asyncio transport and hands each reply to
what waits for it (a :class:`_Waiter`: a job's submission, in gearsql._clienttask, or a single
request, :class:`_Reply`); :class:`_Server` is one job server of the client's list, with its live
link and its reconnect backoff; :func:`admin_line` is one admin command's exchange with a server
on a connection of its own. Choosing a server, failover and retries are the client's.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from gearsql._clientconn import (
    Answer,
    ClientConnection,
    ErrorReply,
    JobCreated,
    JobDone,
    JobUpdate,
    ProtocolBroken,
)
from gearsql._log import reason as _reason
from gearsql._servers import Backoff, ServerAddress, format_address
from gearsql._tls import tls_arguments
from gearsql.adminclient import find_reply_end
from gearsql.errors import ConnectionLost, GearmanError, ServerError, ServerUnavailable
from gearsql.protocol import Packet

log = logging.getLogger("gearsql.client")


# -- what waits on a connection --------------------------------------------------------------


class _Waiter:
    """Something a connection delivers replies to: a job or a single request."""

    __slots__ = ()

    def on_created(self, handle: bytes) -> None:
        raise NotImplementedError

    def on_update(self, packet: Packet) -> None:
        raise NotImplementedError

    def on_done(self, packet: Packet) -> None:
        raise NotImplementedError

    def on_answer(self, packet: Packet) -> None:
        raise NotImplementedError

    def on_error(self, error: GearmanError) -> None:
        raise NotImplementedError


class _Reply(_Waiter):
    """One request (GET_STATUS, OPTION_REQ, ...) waiting for its single answer."""

    __slots__ = ("future",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.future: asyncio.Future[Packet] = loop.create_future()

    def on_answer(self, packet: Packet) -> None:
        if not self.future.done():
            self.future.set_result(packet)

    def on_error(self, error: GearmanError) -> None:
        if not self.future.done():
            self.future.set_exception(error)


# -- one connection --------------------------------------------------------------------------


class _Server:
    """One job server of the list: its live connection, if any, and its reconnect backoff."""

    def __init__(self, address: ServerAddress, backoff: tuple[float, float]) -> None:
        self.address = address
        self.name = format_address(address)
        self.link: _Link | None = None
        self.lock = asyncio.Lock()
        self.backoff = Backoff(*backoff)
        self.retry_at = 0.0

    def failed(self, now: float) -> None:
        self.retry_at = now + self.backoff.next_delay()


class _Link(asyncio.Protocol):
    """The asyncio driver of one :class:`ClientConnection`."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.core: ClientConnection[_Waiter] = ClientConnection()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.closing_on_purpose = False
        self.reason = ""
        # A write is scheduled for the end of this event-loop iteration.
        self._flush_scheduled = False

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it, so no
        # isinstance check here.
        self.transport = transport  # type: ignore[assignment]

    def flush(self) -> None:
        """Send what the requests queued, at the end of this event-loop iteration: a burst of
        submissions (say, many tasks woken by one read) then costs one send() and one TCP
        segment instead of one per job, for the price of one loop iteration of latency."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._write()

    def _write(self) -> None:
        data = self.core.data_to_send()
        if data and self.usable:
            assert self.transport is not None
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        for event in self.core.receive_data(data):
            if isinstance(event, JobDone):
                event.token.on_done(event.packet)
            elif isinstance(event, JobCreated):
                event.token.on_created(event.handle)
            elif isinstance(event, JobUpdate):
                event.token.on_update(event.packet)
            elif isinstance(event, Answer):
                event.token.on_answer(event.packet)
            elif isinstance(event, ErrorReply):
                if event.token is None:
                    log.warning("ERROR from %s: %s %s", self.server.name, event.code, event.text)
                else:
                    event.token.on_error(ServerError(event.code, event.text))
            elif isinstance(event, ProtocolBroken):
                log.error("closing the connection to %s: %s", self.server.name, event.reason)
                self.reason = event.reason
                if self.transport is not None:
                    self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.server.link is self:
            self.server.link = None
        if not self.closing_on_purpose:
            self.server.failed(asyncio.get_running_loop().time())
        reason = self.reason or (str(exc) if exc else "closed by the server")
        for token in self.core.connection_lost():
            token.on_error(ConnectionLost(f"connection to {self.server.name} lost: {reason}"))

    def close(self) -> None:
        self.closing_on_purpose = True
        self._write()  # requests still gathered for the end of this iteration
        if self.transport is not None:
            self.transport.close()


async def admin_line(
    server: _Server, command: bytes, context: ssl.SSLContext | None, connect_timeout: float
) -> bytes:
    """One single-line admin exchange with ``server`` on a connection of its own (a client's
    connection speaks the binary protocol): the reply line without its ending."""
    host, port = server.address
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, **tls_arguments(context, host)),
            connect_timeout,
        )
    except (OSError, asyncio.TimeoutError) as exc:
        reason = _reason(exc)
        raise ServerUnavailable(reason, {server.name: reason}) from exc
    try:
        writer.write(command + b"\n")
        buffer = b""
        while (end := find_reply_end(buffer, list_reply=False)) is None:
            chunk = await reader.read(4096)
            if not chunk:
                raise ServerUnavailable(
                    "the server closed the admin connection",
                    {server.name: "closed the admin connection"},
                )
            buffer += chunk
        return buffer[:end].rstrip(b"\r\n")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
