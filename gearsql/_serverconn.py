"""One accepted Gearman connection of the job server (:class:`_Connection`, an asyncio protocol).

It feeds what it reads to its :class:`~gearsql.protocol.Parser` and hands the events to the core,
and does what is the connection's own: TLS over memory buffers (``_tls_*``, sans-IO, so that a
failed handshake is seen and logged), the ACL's checks of submissions, CAN_DO and admin commands
(``_grants``, ``_denied``, ``_admin``), and the accounting of what its parser holds against the
server's ``max_buffer`` budget, which pauses and resumes its reading (``_account``,
``_update_reading``). The limits themselves are described in gearsql.server, which runs these
connections; :class:`ConnectionHost` is what a connection uses of it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any, Protocol

from gearsql._serverconfig import is_loopback
from gearsql._tls import HANDSHAKE_TIMEOUT, peer_identities
from gearsql.acl import Acl, Grants, permission_for
from gearsql.admin import ERR_PERMISSION
from gearsql.protocol import AdminLine, Packet, PacketType, Parser, Violation, pack_response

if TYPE_CHECKING:
    from gearsql._serverconfig import ServerConfig
    from gearsql.core import JobServerCore, Session

__all__ = ["ConnectionHost"]


class ConnectionHost(Protocol):
    """What a connection uses of the job server (:class:`gearsql.server.JobServer`): named here
    so that this module does not import gearsql.server, which imports it."""

    core: JobServerCore
    config: ServerConfig
    loop: asyncio.AbstractEventLoop | None
    ssl_context: ssl.SSLContext | None
    acl: Acl | None
    connections: dict[int, _Connection]
    bytes_in: int
    #: Bytes of incomplete messages held by all connections' parsers.
    buffered: int
    #: Connections holding an incomplete message: the monotonic time it must be complete by.
    incomplete: dict[_Connection, float]
    #: Connections not read because ``buffered`` passed ``max_buffer``, oldest first.
    budget_paused: dict[_Connection, None]

    def configure_socket(self, sock: socket.socket) -> None: ...

    def flush(self) -> None: ...

    def rate_limited_log(
        self, level: int, key: str, message: str, *args: Any, exc_info: BaseException | None = None
    ) -> None: ...

    def rate_limited_warning(self, key: str, message: str, *args: Any) -> None: ...

    def unexpected(self, conn: _Connection, exc: BaseException) -> None: ...

    def packet_deadline(self, refusing: bool = False) -> float: ...

    def oldest_incomplete(self) -> _Connection | None: ...

    def budget_freed(self) -> None: ...


class _Connection(asyncio.Protocol):
    """One accepted socket."""

    __slots__ = (
        "acl_seen",
        "budget_paused",
        "core",
        "discarding",
        "grants",
        "handshake_timer",
        "held",
        "id",
        "identities",
        "last_read",
        "parser",
        "paused",
        "reading",
        "server",
        "session",
        "tls",
        "tls_in",
        "tls_out",
        "transport",
    )

    def __init__(self, server: ConnectionHost):
        self.server = server
        self.core = server.core
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.id = 0
        self.parser = Parser(server.config.max_packet_size)
        #: The peer does not read its output (asyncio's pause_writing).
        self.paused = False
        #: Not read because incomplete messages hold ``max_buffer`` bytes.
        self.budget_paused = False
        #: Whether the transport is being read (it is paused for either reason above).
        self.reading = True
        #: Bytes of an incomplete message held by the parser, as counted in ``server.buffered``.
        self.held = 0
        #: Bytes of a refused over-size packet still to read and drop; -1 when not refusing.
        self.discarding = -1
        self.last_read = time.monotonic()
        #: The certificate's names (empty without one), for the ACL.
        self.identities: tuple[str, ...] = ()
        #: What the ACL grants this connection, and the ACL that was computed from.
        self.grants: Grants | None = None
        self.acl_seen: Acl | None = None
        #: TLS state (``--ssl``): the connection, its incoming and outgoing records, and the
        #: handshake's deadline. The session starts when the handshake is done.
        self.tls: ssl.SSLObject | None = None
        self.tls_in = ssl.MemoryBIO()
        self.tls_out = ssl.MemoryBIO()
        self.handshake_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        limit = server.config.max_connections
        if limit and len(server.connections) >= limit:
            server.rate_limited_warning(
                "max-connections", "connection limit (%d) reached; closing new connections", limit
            )
            transport.abort()  # type: ignore[attr-defined]
            return
        if server.ssl_context is not None:
            # TLS runs here over memory buffers (sans-IO) rather than in create_server, so that
            # a failed handshake (a plaintext client, a certificate the CA did not sign) is
            # seen, logged and answered by closing the connection.
            self.tls = server.ssl_context.wrap_bio(self.tls_in, self.tls_out, server_side=True)
            assert server.loop is not None
            self.handshake_timer = server.loop.call_later(
                HANDSHAKE_TIMEOUT, self._tls_refuse, f"not done within {HANDSHAKE_TIMEOUT:g} s"
            )
            return
        self._open(transport)

    # ---------------------------------------------------------------- TLS (sans-IO)

    def _tls_refuse(self, reason: str) -> None:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        host = peer[0] if isinstance(peer, tuple) else "-"
        self.server.rate_limited_warning(
            "tls-handshake", "Refused connection from %s: TLS handshake failed: %s", host, reason
        )
        self._tls_end()
        if self.transport is not None:
            self._tls_send()  # the alert, if any
            self.transport.close()

    def _tls_end(self) -> None:
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
            self.handshake_timer = None
        self.tls = None

    def _tls_send(self) -> None:
        pending = self.tls_out.pending
        if pending and self.transport is not None:
            self.transport.write(self.tls_out.read())

    def _tls_receive(self, data: bytes) -> bytes | None:
        """The plaintext in ``data`` (TLS records); None when the connection is done for."""
        tls = self.tls
        assert tls is not None
        self.tls_in.write(data)
        if self.session is None:
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                self._tls_send()
                return b""
            except (ssl.SSLError, OSError) as exc:
                reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
                self._tls_refuse(str(reason))
                return None
            if self.handshake_timer is not None:
                self.handshake_timer.cancel()
                self.handshake_timer = None
            self._tls_send()
            self.identities = peer_identities(tls.getpeercert())
            assert self.transport is not None
            self._open(self.transport)
            if self.session is None:  # refused (the connection limit)
                return None
        chunks = []
        while True:
            try:
                chunk = tls.read(262144)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                chunk = b""
            except (ssl.SSLError, OSError) as exc:
                self.drop("tls", "TLS error: %s", getattr(exc, "reason", None) or exc)
                return None
            if not chunk:  # close_notify: the peer is done; answer it and close
                try:
                    tls.unwrap()
                except (ssl.SSLError, OSError):
                    pass
                self._tls_send()
                if self.transport is not None:
                    self.transport.close()
                break
            chunks.append(chunk)
        self._tls_send()
        return b"".join(chunks)

    def write(self, data: bytes) -> None:
        """Send ``data`` (through TLS when it is on)."""
        assert self.transport is not None
        if self.tls is None:
            self.transport.write(data)
            return
        try:
            self.tls.write(data)
        except (ssl.SSLError, OSError) as exc:
            self.drop("tls", "TLS error: %s", getattr(exc, "reason", None) or exc)
            return
        self._tls_send()

    def _open(self, transport: asyncio.BaseTransport) -> None:
        """Start the session of a connection (after its TLS handshake, with TLS)."""
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        sock = transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else "-"
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            server.configure_socket(sock)
        trusted = server.config.remote_admin or host == "-" or is_loopback(host)
        self.session = self.core.connect(host, fd, trusted)
        self.id = self.session.id
        server.connections[self.id] = self
        if server.acl is not None:
            self._grants()  # the ACL decides who may run mutating admin commands
        server.rate_limited_log(
            logging.INFO,
            "connections",
            "Accepted connection %d from %s%s",
            self.id,
            host,
            f" ({', '.join(self.identities)})" if self.identities else "",
        )

    def _grants(self) -> Grants:
        """What the ACL lets this connection do (worked out again after a reload)."""
        acl = self.server.acl
        assert acl is not None and self.session is not None
        if self.grants is None or self.acl_seen is not acl:
            self.grants = acl.grants(self.identities)
            self.acl_seen = acl
            self.session.trusted = self.grants.admin
        return self.grants

    def _denied(self, packet: Packet) -> bool:
        """Whether the ACL refuses ``packet`` (a submission or CAN_DO); if so the peer got an
        ERROR PERMISSION_DENIED and the refusal is logged."""
        permission = permission_for(packet.type)
        if permission is None:
            return False
        function = packet.args[0] if packet.args else b""
        if self._grants().allows(permission, function):
            return False
        assert self.session is not None
        who = ", ".join(self.identities) or "no certificate"
        name = function.decode("utf-8", "replace")
        self.server.rate_limited_warning(
            "acl",
            "ACL: refused %s of %r to connection %d from %s (%s)",
            packet.type.name,
            name,
            self.id,
            self.peer,
            who,
        )
        verb = "submit to" if permission == "submit" else "work on"
        self.core.send(
            self.session,
            pack_response(
                PacketType.ERROR,
                b"PERMISSION_DENIED",
                f"the ACL does not let {who} {verb} {name}".encode(),
            ),
        )
        return True

    def _admin(self, session: Session, line: AdminLine) -> None:
        """An admin line under an ACL: a refused mutating command says why, and is logged."""
        self._grants()
        before = len(session.out)
        self.core.handle_admin(session, line)
        if session.trusted or len(session.out) != before + 1 or session.out[-1] != ERR_PERMISSION:
            return
        who = ", ".join(self.identities) or "no certificate"
        session.out[-1] = (
            b"ERR PERMISSION_DENIED the+ACL+does+not+allow+mutating+admin+commands+for+"
            + who.replace(" ", "+").encode("utf-8", "replace")
            + b"\r\n"
        )
        self.server.rate_limited_warning(
            "acl",
            "ACL: refused admin command %r to connection %d from %s (%s)",
            line.line.split(b" ", 1)[0].decode("utf-8", "replace"),
            self.id,
            self.peer,
            who,
        )

    def data_received(self, data: bytes) -> None:
        if self.discarding >= 0:
            self._discard(len(data))
            return
        if self.tls is not None:
            self.server.bytes_in += len(data)
            plain = self._tls_receive(data)
            if not plain:
                return
            data = plain
        else:
            self.server.bytes_in += len(data)
        session = self.session
        if session is None:
            return
        self.last_read = time.monotonic()
        core = self.core
        acl = self.server.acl
        try:
            events = self.parser.feed(data)
            if acl is None:
                # The packets go to the core in as few calls as it likes; the connection
                # takes the admin lines and the violation in between.
                index = 0
                end = len(events)
                while index < end:
                    index = core.handle_packets(session, events, index)
                    if index == end:
                        break
                    event = events[index]
                    index += 1
                    if type(event) is AdminLine:
                        core.handle_admin(session, event)
                    else:
                        self._violation(event)  # type: ignore[arg-type]
                        break
            else:
                for event in events:
                    kind = type(event)
                    if kind is Packet:
                        if not self._denied(event):  # type: ignore[arg-type]
                            core.handle_packet(session, event)  # type: ignore[arg-type]
                    elif kind is AdminLine:
                        self._admin(session, event)  # type: ignore[arg-type]
                    else:
                        self._violation(event)  # type: ignore[arg-type]
                        break
            self._account(bool(events))
            self.server.flush()
        except Exception as exc:  # a bug must cost this connection only, and a bounded log
            self.server.unexpected(self, exc)

    def _account(self, progressed: bool) -> None:
        """Count what the parser holds in the global budget; start or end its deadline."""
        held = self.parser.buffered if self.session is not None else 0
        old = self.held
        if held == old and not (held and progressed):
            return
        server = self.server
        self.held = held
        server.buffered += held - old
        if held:
            if progressed or not old:
                # A new incomplete message: its deadline starts with its first byte, and it
                # goes to the end of the line (``incomplete`` is ordered by start).
                server.incomplete.pop(self, None)
                server.incomplete[self] = server.packet_deadline()
            if (
                server.buffered > server.config.max_buffer
                and not self.budget_paused
                and server.oldest_incomplete() is not self
            ):
                self.budget_paused = True
                server.budget_paused[self] = None
                self._update_reading()
                server.rate_limited_warning(
                    "max-buffer",
                    "incomplete packets hold %d bytes, over --max-buffer (%d): connection %d"
                    " from %s is not read until they fall under it",
                    server.buffered,
                    server.config.max_buffer,
                    self.id,
                    self.peer,
                )
        else:
            server.incomplete.pop(self, None)
        if held < old:
            server.budget_freed()

    @property
    def peer(self) -> str:
        return self.session.peer if self.session is not None else "-"

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        want = not (self.paused or self.budget_paused)
        if want != self.reading:
            self.reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def _violation(self, event: Violation) -> None:
        session = self.session
        assert session is not None and self.transport is not None
        server = self.server
        server.rate_limited_warning(
            "violation", "Closing connection %d from %s: %s", session.id, session.peer, event.text
        )
        discard = 0
        if event.code:
            self.core.send(
                session, pack_response(PacketType.ERROR, event.code, event.text.encode())
            )
            server.flush()
            discard = self.parser.discard
        # Nothing more is queued for the session once it is forgotten.
        self._forget_session()
        transport = self.transport
        if discard and transport.can_write_eof():
            # The ERROR, then FIN; the rest of the refused packet is read and dropped, so that
            # the peer, once it has sent it, reads the ERROR rather than a reset.
            transport.write_eof()
            self.discarding = discard
            server.incomplete[self] = server.packet_deadline(refusing=True)
            self.paused = self.budget_paused = False
            server.budget_paused.pop(self, None)
            self._update_reading()
        else:
            # close() sends what is buffered (the ERROR) first.
            transport.close()

    def _discard(self, size: int) -> None:
        self.discarding -= size
        if self.discarding <= 0 and self.transport is not None:
            self.server.incomplete.pop(self, None)
            self.transport.close()

    def _forget_session(self) -> None:
        """Tell the core the connection is gone and give back its share of the budget."""
        session = self.session
        if session is None:
            return
        self.session = None
        server = self.server
        server.incomplete.pop(self, None)
        server.budget_paused.pop(self, None)
        self.budget_paused = False
        if self.held:
            server.buffered -= self.held
            self.held = 0
            server.budget_freed()
        self.core.disconnect(session)

    def drop(self, key: str, reason: str, *args: Any) -> None:
        """Close the connection at once (a timeout, a limit), with a rate-limited warning of
        kind ``key`` (none when ``key`` is empty: the caller has logged why)."""
        if key:
            self.server.rate_limited_warning(
                key, "Closing connection %d from %s: " + reason, self.id, self.peer, *args
            )
        self._forget_session()
        self.server.incomplete.pop(self, None)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
            self.handshake_timer = None
        server.connections.pop(self.id, None)
        server.incomplete.pop(self, None)
        server.budget_paused.pop(self, None)
        session = self.session
        if session is None:
            return
        try:
            self._forget_session()
        except Exception as error:  # a core bug: logged (rate-limited), the server goes on
            server.unexpected(self, error)
            return
        server.rate_limited_log(
            logging.INFO, "connections", "Connection %d from %s closed", session.id, session.peer
        )
        server.flush()

    def pause_writing(self) -> None:
        # The peer does not read what we send: stop reading its requests until it catches up,
        # so one slow client cannot make the server buffer without bound.
        if not self.paused:
            self.paused = True
            self._update_reading()

    def resume_writing(self) -> None:
        if self.paused:
            self.paused = False
            self._update_reading()
