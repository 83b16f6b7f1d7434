"""HTTP/1.1 requests and answers, sans-IO: :class:`RequestParser` turns a connection's bytes into
:class:`Request` events (or an :class:`HttpError`), :func:`render_response` writes an answer.

The parser holds at most one request head of ``MAX_HEAD`` bytes and one body. gearsql.http
serves gearmand's HTTP protocol with it (and re-exports these names); gearsql.web reads the
:class:`Request` it gets.
"""

from __future__ import annotations

from typing import NamedTuple

from gearsql import __version__

__all__ = ["MAX_HEAD", "REASONS", "HttpError", "Request", "RequestParser", "render_response"]

#: Most bytes of a request line and its headers (431 past it).
MAX_HEAD = 16384

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


class Request(NamedTuple):
    """One complete request. Header names are lower case; a repeated header keeps its last value."""

    method: bytes
    target: bytes
    version: bytes
    headers: dict[bytes, bytes]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 keeps the connection unless told ``close``; HTTP/1.0 only if told to."""
        connection = self.headers.get(b"connection", b"").lower()
        if self.version == b"HTTP/1.0":
            return connection == b"keep-alive"
        return connection != b"close"


class HttpError(NamedTuple):
    """The peer sent something this server does not take: answer ``status`` and close.

    ``discard`` is how many more bytes of a refused body the peer declared: they are read and
    dropped before closing, so that the peer reads the answer rather than a reset.
    """

    status: int
    text: str
    discard: int = 0


class RequestParser:
    """Splits one connection's bytes into :class:`Request` events (Content-Length bodies only).

    States: reading a head (up to ``MAX_HEAD`` bytes), reading a body of a known length (up to
    ``max_body``), broken (after an :class:`HttpError`, everything is ignored).
    """

    __slots__ = ("_body_left", "_buffer", "_head", "broken", "max_body")

    def __init__(self, max_body: int):
        self.max_body = max_body
        self._buffer = bytearray()
        #: The parsed head while its body is read, else None.
        self._head: tuple[bytes, bytes, bytes, dict[bytes, bytes]] | None = None
        self._body_left = 0
        self.broken = False

    @property
    def incomplete(self) -> bool:
        """Whether part of a request is held (a head without its end, or a body not all read)."""
        return bool(self._buffer) or self._head is not None

    def feed(self, data: bytes) -> list[Request | HttpError]:
        if self.broken:
            return []
        self._buffer += data
        events: list[Request | HttpError] = []
        while True:
            event = self._next()
            if event is None:
                return events
            events.append(event)
            if isinstance(event, HttpError):
                self.broken = True
                self._buffer.clear()
                return events

    def _next(self) -> Request | HttpError | None:
        buffer = self._buffer
        if self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    return HttpError(431, f"request head larger than {MAX_HEAD} bytes")
                return None
            if end > MAX_HEAD:
                return HttpError(431, f"request head larger than {MAX_HEAD} bytes")
            head = bytes(buffer[:end])
            del buffer[: end + 4]
            parsed = _parse_head(head, self.max_body)
            if isinstance(parsed, HttpError):
                if parsed.discard:
                    parsed = parsed._replace(discard=max(0, parsed.discard - len(buffer)))
                return parsed
            self._head, self._body_left = parsed
        if len(buffer) < self._body_left:
            return None
        method, target, version, headers = self._head
        body = bytes(buffer[: self._body_left])
        del buffer[: self._body_left]
        self._head = None
        return Request(method, target, version, headers, body)


def _parse_head(
    head: bytes, max_body: int
) -> tuple[tuple[bytes, bytes, bytes, dict[bytes, bytes]], int] | HttpError:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
        return HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        return HttpError(505, "only HTTP/1.0 and HTTP/1.1 are served")
    headers: dict[bytes, bytes] = {}
    lengths: set[bytes] = set()
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b" " in name:
            return HttpError(400, "malformed header line")
        name = name.lower()
        value = value.strip(b" \t")
        if name == b"content-length":
            lengths.add(value)
        headers[name] = value
    if b"transfer-encoding" in headers:
        return HttpError(501, "Transfer-Encoding is not supported; send Content-Length")
    length = 0
    if lengths:
        value = lengths.pop()
        if lengths or not value.isdigit():
            return HttpError(400, "bad Content-Length")
        length = int(value)
    if length > max_body:
        return HttpError(
            413, f"the body is larger than --max-packet-size ({max_body} bytes)", length
        )
    return (method, target, version, headers), length


def render_response(
    status: int, headers: list[tuple[str, str]], body: bytes = b"", keep_alive: bool = True
) -> bytes:
    """An HTTP/1.1 answer with Content-Length (and ``Connection: close`` when not kept)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Content-Length: {len(body)}")
    lines.append(f"Server: gearsql/{__version__}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
