"""gearmand's HTTP protocol: ``POST /FUNCTION`` runs a job, as ``gearmand -r http`` serves it.

A request's path names the function and its body is the workload. A foreground job is answered
when it ends; ``X-Gearman-Background: true`` is answered once the job is queued. The answers
carry gearmand's headers (``X-Gearman-Job-Handle``, ``X-Gearman-Command``). Beyond gearmand:
``X-Gearman-Priority`` (high, normal, low), ``X-Gearman-Timeout`` (seconds a foreground request
waits before it is answered 504), WORK_FAIL and WORK_EXCEPTION answered 500 (gearmand answers
200), HTTP/1.1 keep-alive (gearmand answers HTTP/1.0 and closes), and a body limit
(``--max-packet-size``, answered 413). A worker's WORK_DATA comes first in the body, then the
WORK_COMPLETE data (gearmand writes it over the start of its answer). ``GET /metrics`` answers
the server's Prometheus metrics (:mod:`gearsql.metrics`) instead of submitting a job to a
function called ``metrics``, and ``GET /`` the live status page (:mod:`gearsql.web`, with its
``/ui/`` files and ``/api/``).

:class:`RequestParser` (in gearsql._httpparse, re-exported here) is sans-IO (bytes in, requests
out) and holds at most one request head of ``MAX_HEAD`` bytes and one body;
:class:`HttpConnection` submits each request into the core
through a :class:`~gearsql.core.Session` of its own, as a Gearman client connection does, and
reads the core's answers with the protocol's own :class:`~gearsql.protocol.Parser`.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from urllib.parse import unquote_to_bytes

from gearsql._httpparse import MAX_HEAD, REASONS, HttpError, Request, RequestParser, render_response
from gearsql._serverconfig import is_loopback
from gearsql._serverview import ServerView
from gearsql._tls import peer_identities
from gearsql.acl import Acl, Grants
from gearsql.metrics import CONTENT_TYPE, render_metrics
from gearsql.protocol import RES, Packet, PacketType, Parser, Priority
from gearsql.web import route

if TYPE_CHECKING:
    from gearsql._serverconfig import ServerConfig
    from gearsql.core import Session

__all__ = [
    "MAX_HEAD",
    "REASONS",
    "HttpError",
    "HttpServer",
    "Request",
    "RequestParser",
    "render_response",
]

#: Methods that submit a job, as in gearmand.
SUBMIT_METHODS = (b"GET", b"POST", b"PUT")


#: ERROR codes from the core and the HTTP status they are answered with.
_ERROR_STATUS = {b"QUEUE_ERROR": 503, b"SERVER_BUSY": 503}


class HttpServer(ServerView, Protocol):
    """What an HTTP connection uses of the job server (:class:`gearsql.server.JobServer`):
    named here so that this module does not import gearsql.server, which imports it."""

    config: ServerConfig
    loop: asyncio.AbstractEventLoop | None
    http_connections: dict[int, HttpConnection]
    acl: Acl | None

    def configure_socket(self, sock: socket.socket) -> None: ...

    def flush(self) -> None: ...

    def rate_limited_warning(self, key: str, message: str, *args: Any) -> None: ...


class _Pending(NamedTuple):
    request: Request
    background: bool


class HttpConnection(asyncio.Protocol):
    """One accepted HTTP socket: one request at a time, each submitted as a Gearman job."""

    def __init__(self, server: HttpServer):
        self.server = server
        self.core = server.core
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.parser = RequestParser(server.config.max_packet_size)
        #: Reads the core's answers (Gearman response packets) to this connection's session.
        self.replies = Parser(server.config.max_packet_size + 64, expect_magic=RES)
        self.queue: deque[Request] = deque()
        #: The request under way (its job submitted) and whether it is a background one.
        self.current: _Pending | None = None
        self.handle = b""
        #: WORK_DATA of the job under way: the answer's body starts with it.
        self.data = bytearray()
        self.timer: asyncio.TimerHandle | None = None
        #: Ends a request that is not complete within --packet-timeout of its first byte.
        self.deadline: asyncio.TimerHandle | None = None
        #: Bytes of a refused body still to read and drop; -1 when not refusing.
        self.discarding = -1
        #: The client certificate's names (TLS), what the ACL grants them, and from which ACL.
        self.identities: tuple[str, ...] = ()
        self.grants: Grants | None = None
        self.acl_seen: Acl | None = None

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        limit = server.config.max_connections
        if limit and len(server.connections) + len(server.http_connections) >= limit:
            server.rate_limited_warning(
                "max-connections", "connection limit (%d) reached; closing new connections", limit
            )
            transport.abort()  # type: ignore[attr-defined]
            return
        sock = transport.get_extra_info("socket")
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else "-"
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            server.configure_socket(sock)
        # Trusted as the Gearman port trusts its peers: the status page's actions run admin
        # commands (gearsql.web); nothing else on HTTP does.
        trusted = server.config.remote_admin or is_loopback(host)
        session = self.core.connect(host, sock.fileno() if sock is not None else -1, trusted)
        # The reason of a WORK_EXCEPTION is the answer's body.
        session.exceptions = True
        self.session = session
        self.identities = peer_identities(transport.get_extra_info("peercert"))
        server.http_connections[session.id] = self

    def data_received(self, data: bytes) -> None:
        if self.discarding >= 0:
            self.discarding -= len(data)
            if self.discarding <= 0 and self.transport is not None:
                self.transport.close()
            return
        if self.session is None:
            return
        self.server.bytes_in += len(data)
        try:
            for event in self.parser.feed(data):
                if isinstance(event, HttpError):
                    self._refuse(event)
                    return
                self.queue.append(event)
                if self.deadline is not None:  # a request is complete: the next one's clock
                    self.deadline.cancel()
                    self.deadline = None
            self._next()
            self.server.flush()
        except Exception as exc:  # a bug must cost this connection only, and a bounded log
            self.server.rate_limited_warning(
                "http-bug",
                "HTTP connection from %s closed by an unexpected error: %r",
                self.session.peer if self.session else "-",
                exc,
            )
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        self.server.flush()

    # ------------------------------------------------------------ requests

    def _next(self) -> None:
        """Start the next request if none is under way; answer those that submit nothing."""
        while self.current is None and self.queue and self.session is not None:
            request = self.queue.popleft()
            problem = self._submit(request)
            if problem is not None:
                status, text, extra = problem
                self._answer(request, status, extra, text.encode() + b"\n")
        if self.transport is not None and not self.transport.is_closing():
            # Pipelined requests wait in the socket, not here.
            if self.current is None:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()
        self._watch()

    def _watch(self) -> None:
        """Start the clock of a request that is being read (not one waiting in the socket
        behind a job under way), or stop it."""
        limit = self.server.config.packet_timeout
        reading = self.current is None and self.parser.incomplete and self.session is not None
        if reading and self.deadline is None and limit > 0:
            assert self.server.loop is not None
            self.deadline = self.server.loop.call_later(limit, self._too_slow)
        elif not reading and self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _too_slow(self) -> None:
        self.deadline = None
        limit = self.server.config.packet_timeout
        self.server.rate_limited_warning(
            "packet-timeout",
            "Closing HTTP connection from %s: a request was not complete within"
            " --packet-timeout (%g s)",
            self.session.peer if self.session else "-",
            limit,
        )
        if self.transport is not None and not self.transport.is_closing():
            text = f"the request was not complete within --packet-timeout ({limit:g} s)\n"
            self.transport.write(render_response(408, [], text.encode(), False))
        self._close()

    def _submit(self, request: Request) -> tuple[int, str, list[tuple[str, str]]] | None:
        """Submit ``request``'s job, or answer ``GET /metrics``; (status, text, headers) when
        the request is refused."""
        path = request.target.partition(b"?")[0]
        assert self.session is not None
        grants = self._grants()  # under an ACL it, not the peer's address, decides on actions
        page = route(self.server, self.session, request)
        if page is not None:
            self._answer(request, *page)
            return None
        if not path.startswith(b"/") or path == b"/":
            return 404, "the path names the function: /FUNCTION", []
        if path == b"/metrics" and request.method == b"GET":
            self._answer(
                request, 200, [("Content-Type", CONTENT_TYPE)], render_metrics(self.server)
            )
            return None
        if request.method not in SUBMIT_METHODS:
            return 405, "submit a job with POST, PUT or GET", [("Allow", "GET, POST, PUT")]
        headers = request.headers
        try:
            word = headers.get(b"x-gearman-priority", b"normal").decode("ascii")
            priority = Priority.from_word(word)
        except (UnicodeDecodeError, ValueError):
            return 400, "X-Gearman-Priority is high, normal or low", []
        background = headers.get(b"x-gearman-background", b"").lower() == b"true"
        timeout = 0.0
        if b"x-gearman-timeout" in headers:
            try:
                timeout = float(headers[b"x-gearman-timeout"])
            except ValueError:
                timeout = -1.0
            if not timeout > 0 or timeout == float("inf"):
                return 400, "X-Gearman-Timeout is a positive number of seconds", []
        name = unquote_to_bytes(path[1:])
        if grants is not None and not grants.allows("submit", name):
            return self._denied(name)
        unique = headers.get(b"x-gearman-unique", b"")
        self.current = _Pending(request, background)
        self.handle = b""
        self.data.clear()
        if timeout and not background:
            assert self.server.loop is not None
            self.timer = self.server.loop.call_later(timeout, self._timed_out)
        self.core.submit(self.session, name, unique, request.body, priority, background)
        return None

    def _grants(self) -> Grants | None:
        """What the ACL lets this connection do (None: no ACL), worked out again after a
        reload; under an ACL its ``admin`` grant makes the session trusted, as on the Gearman
        port."""
        acl = self.server.acl
        if acl is None or self.session is None:
            return None
        if self.grants is None or self.acl_seen is not acl:
            self.grants = acl.grants(self.identities)
            self.acl_seen = acl
            self.session.trusted = self.grants.admin
        return self.grants

    def _denied(self, function: bytes) -> tuple[int, str, list[tuple[str, str]]]:
        """The 403 answer to a submission the ACL refuses, logged as on the Gearman port."""
        who = ", ".join(self.identities) or "no certificate"
        name = function.decode("utf-8", "replace")
        self.server.rate_limited_warning(
            "acl",
            "ACL: refused HTTP submission of %r from %s (%s)",
            name,
            self.session.peer if self.session else "-",
            who,
        )
        return 403, f"PERMISSION_DENIED the ACL does not let {who} submit to {name}", []

    def deliver(self, data: bytes) -> None:
        """The core's output to this connection's session: Gearman response packets."""
        for event in self.replies.feed(data):
            pending = self.current
            if pending is None or not isinstance(event, Packet):
                continue
            type_, args = event.type, event.args
            if type_ == PacketType.JOB_CREATED:
                self.handle = args[0]
                if pending.background:
                    self._done(200, "JOB_CREATED")
            elif type_ == PacketType.WORK_DATA:
                self._work_data(args[1])
            elif type_ == PacketType.WORK_COMPLETE:
                self._done(200, "WORK_COMPLETE", bytes(self.data) + args[1])
            elif type_ == PacketType.WORK_FAIL:
                self._done(500, "WORK_FAIL", b"the job failed\n")
            elif type_ == PacketType.WORK_EXCEPTION:
                self._done(500, "WORK_EXCEPTION", args[1])
            elif type_ == PacketType.ERROR:
                code, text = args
                self._done(_ERROR_STATUS.get(code, 400), "ERROR", text + b"\n", code)
        self._next()

    def _work_data(self, chunk: bytes) -> None:
        """A chunk of WORK_DATA: kept for the answer's body, before the WORK_COMPLETE data.
        (C gearmand 1.1 writes the chunks over the start of its status line instead.) More than
        --max-output bytes of it end the request with 502, as a Gearman client that does not
        read its work data is closed."""
        self.data += chunk
        limit = self.server.config.max_output
        if len(self.data) <= limit:
            return
        self.data.clear()
        assert self.current is not None
        headers = [("X-Gearman-Command", "WORK_DATA")]
        if self.handle:
            headers.insert(0, ("X-Gearman-Job-Handle", self.handle.decode("latin-1")))
        self.current = None
        if self.transport is not None and not self.transport.is_closing():
            text = f"the job's WORK_DATA passed --max-output ({limit} bytes)\n"
            self.transport.write(render_response(502, headers, text.encode(), False))
        self._close()

    def _done(self, status: int, command: str, body: bytes = b"", code: bytes = b"") -> None:
        pending = self.current
        assert pending is not None
        self.current = None
        self.data.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        headers = []
        if self.handle:
            headers.append(("X-Gearman-Job-Handle", self.handle.decode("latin-1")))
        headers.append(("X-Gearman-Command", command))
        if code:
            headers.append(("X-Gearman-Error", code.decode("latin-1")))
        self._answer(pending.request, status, headers, body)

    def _answer(
        self, request: Request, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        keep = request.keep_alive
        answer = render_response(status, headers, body, keep)
        self.server.bytes_out += len(answer)
        transport.write(answer)
        if not keep:
            self._close()

    def _timed_out(self) -> None:
        """No answer within X-Gearman-Timeout: 504, and the connection closes, which takes the
        request's client away from its job (a job that has not started never runs)."""
        self.timer = None
        pending = self.current
        if pending is None:
            return
        self.current = None
        headers = [("X-Gearman-Command", "TIMEOUT")]
        if self.handle:
            headers.insert(0, ("X-Gearman-Job-Handle", self.handle.decode("latin-1")))
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(
                render_response(504, headers, b"no answer within X-Gearman-Timeout\n", False)
            )
        self._close()
        self.server.flush()

    def _refuse(self, error: HttpError) -> None:
        transport = self.transport
        assert transport is not None
        transport.write(render_response(error.status, [], error.text.encode() + b"\n", False))
        self._forget()
        if error.discard and transport.can_write_eof():
            transport.write_eof()
            self.discarding = error.discard
            limit = self.server.config.packet_timeout
            if limit > 0 and self.server.loop is not None:
                # A peer that never sends the rest is not waited for without end.
                self.deadline = self.server.loop.call_later(limit, transport.abort)
        else:
            transport.close()

    def _close(self) -> None:
        self._forget()
        if self.transport is not None:
            self.transport.close()

    def _forget(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        session = self.session
        if session is None:
            return
        self.session = None
        self.current = None
        self.queue.clear()
        self.server.http_connections.pop(session.id, None)
        self.core.disconnect(session)
