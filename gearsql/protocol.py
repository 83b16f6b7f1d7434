"""The Gearman wire protocol as a sans-IO codec: packet types, framing, limits and admin lines.

Nothing here touches a socket, an event loop or a logger, and only the standard library is used:
the same module runs in the job server, the client library and inside PostgreSQL's PL/Python.

Bytes go in with :meth:`Parser.feed`, events come out (:class:`Packet`, :class:`AdminLine`, or a
final :class:`Violation` when the peer broke the protocol). :func:`pack` turns a packet type and
its arguments back into bytes. The layout follows the Gearman PROTOCOL document: a 12-byte header
(4-byte magic, big-endian u32 type, big-endian u32 length) and NUL-separated arguments where only
the last one may contain NUL bytes.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple, Union

__all__ = [
    "ARGUMENTS",
    "DEFAULT_MAX_PACKET_SIZE",
    "HEADER",
    "MAX_ADMIN_LINE",
    "MAX_FUNCTION_NAME",
    "MAX_HANDLE",
    "MAX_UNIQUE",
    "REQ",
    "RES",
    "SUBMIT_KINDS",
    "SUBMIT_TYPES",
    "AdminLine",
    "ArgumentProblem",
    "LocalProtocolError",
    "Packet",
    "PacketType",
    "Parser",
    "Priority",
    "Violation",
    "check_function_name",
    "check_unique",
    "frame_response",
    "pack",
    "pack_request",
    "pack_response",
    "split_admin_words",
]

REQ = b"\0REQ"
RES = b"\0RES"

#: Size of the binary header: magic, type and data length.
HEADER = 12

#: Largest packet body accepted by default (checked on the header, before any buffering).
DEFAULT_MAX_PACKET_SIZE = 64 * 1024 * 1024
#: An admin line longer than this without a newline closes the connection.
MAX_ADMIN_LINE = 8192
#: gearmand's GEARMAN_MAX_UNIQUE_SIZE: uniques longer than this get ARGUMENT_TOO_LARGE.
MAX_UNIQUE = 64
#: Longest function name accepted (gearmand allows 512 bytes).
MAX_FUNCTION_NAME = 512
#: Job handles are at most 64 bytes including gearmand's terminating NUL.
MAX_HANDLE = 64

_HEADER = struct.Struct(">4sII")


class PacketType(enum.IntEnum):
    """Binary packet types, named exactly as in the Gearman PROTOCOL document."""

    CAN_DO = 1
    CANT_DO = 2
    RESET_ABILITIES = 3
    PRE_SLEEP = 4
    NOOP = 6
    SUBMIT_JOB = 7
    JOB_CREATED = 8
    GRAB_JOB = 9
    NO_JOB = 10
    JOB_ASSIGN = 11
    WORK_STATUS = 12
    WORK_COMPLETE = 13
    WORK_FAIL = 14
    GET_STATUS = 15
    ECHO_REQ = 16
    ECHO_RES = 17
    SUBMIT_JOB_BG = 18
    ERROR = 19
    STATUS_RES = 20
    SUBMIT_JOB_HIGH = 21
    SET_CLIENT_ID = 22
    CAN_DO_TIMEOUT = 23
    ALL_YOURS = 24
    WORK_EXCEPTION = 25
    OPTION_REQ = 26
    OPTION_RES = 27
    WORK_DATA = 28
    WORK_WARNING = 29
    GRAB_JOB_UNIQ = 30
    JOB_ASSIGN_UNIQ = 31
    SUBMIT_JOB_HIGH_BG = 32
    SUBMIT_JOB_LOW = 33
    SUBMIT_JOB_LOW_BG = 34
    SUBMIT_JOB_SCHED = 35
    SUBMIT_JOB_EPOCH = 36
    SUBMIT_REDUCE_JOB = 37
    SUBMIT_REDUCE_JOB_BACKGROUND = 38
    GRAB_JOB_ALL = 39
    JOB_ASSIGN_ALL = 40
    GET_STATUS_UNIQUE = 41
    STATUS_RES_UNIQUE = 42


P = PacketType

#: Argument names of every packet type. One table drives both parsing and packing; the last
#: argument of a packet is its opaque data and may contain NUL bytes.
ARGUMENTS: dict[PacketType, tuple[str, ...]] = {
    P.CAN_DO: ("function",),
    P.CANT_DO: ("function",),
    P.RESET_ABILITIES: (),
    P.PRE_SLEEP: (),
    P.NOOP: (),
    P.SUBMIT_JOB: ("function", "unique", "data"),
    P.JOB_CREATED: ("handle",),
    P.GRAB_JOB: (),
    P.NO_JOB: (),
    P.JOB_ASSIGN: ("handle", "function", "data"),
    P.WORK_STATUS: ("handle", "numerator", "denominator"),
    P.WORK_COMPLETE: ("handle", "data"),
    P.WORK_FAIL: ("handle",),
    P.GET_STATUS: ("handle",),
    P.ECHO_REQ: ("data",),
    P.ECHO_RES: ("data",),
    P.SUBMIT_JOB_BG: ("function", "unique", "data"),
    P.ERROR: ("code", "text"),
    P.STATUS_RES: ("handle", "known", "running", "numerator", "denominator"),
    P.SUBMIT_JOB_HIGH: ("function", "unique", "data"),
    P.SET_CLIENT_ID: ("client_id",),
    P.CAN_DO_TIMEOUT: ("function", "timeout"),
    P.ALL_YOURS: (),
    P.WORK_EXCEPTION: ("handle", "data"),
    P.OPTION_REQ: ("option",),
    P.OPTION_RES: ("option",),
    P.WORK_DATA: ("handle", "data"),
    P.WORK_WARNING: ("handle", "data"),
    P.GRAB_JOB_UNIQ: (),
    P.JOB_ASSIGN_UNIQ: ("handle", "function", "unique", "data"),
    P.SUBMIT_JOB_HIGH_BG: ("function", "unique", "data"),
    P.SUBMIT_JOB_LOW: ("function", "unique", "data"),
    P.SUBMIT_JOB_LOW_BG: ("function", "unique", "data"),
    P.SUBMIT_JOB_SCHED: (
        "function",
        "unique",
        "minute",
        "hour",
        "day_of_month",
        "month",
        "day_of_week",
        "data",
    ),
    P.SUBMIT_JOB_EPOCH: ("function", "unique", "epoch", "data"),
    P.SUBMIT_REDUCE_JOB: ("function", "unique", "reducer", "aggregator", "data"),
    P.SUBMIT_REDUCE_JOB_BACKGROUND: ("function", "unique", "reducer", "aggregator", "data"),
    P.GRAB_JOB_ALL: (),
    P.JOB_ASSIGN_ALL: ("handle", "function", "unique", "reducer", "data"),
    P.GET_STATUS_UNIQUE: ("unique",),
    P.STATUS_RES_UNIQUE: ("unique", "known", "running", "numerator", "denominator", "clients"),
}

# Indexed by type number for the hot path: argument count, or -1 for a number that is no type.
_ARGC = [-1] * 43
for _type, _names in ARGUMENTS.items():
    _ARGC[_type] = len(_names)


class Priority(enum.IntEnum):
    """Job priority: a worker takes HIGH jobs before NORMAL ones, and NORMAL before LOW.

    The value is the rank (0 runs first): the job server's queue index and the number the durable
    store keeps. The word (``high``, ``normal``, ``low``) is how SQL spells it, in the outbox's
    ``priority`` column and in the names of the gman_* functions; ``Priority("high")`` (any case)
    is HIGH.
    """

    HIGH = 0
    NORMAL = 1
    LOW = 2

    @property
    def word(self) -> str:
        """``high``, ``normal`` or ``low``: the outbox's and the SQL functions' spelling."""
        return self.name.lower()

    @classmethod
    def from_word(cls, word: str) -> Priority:
        """The priority spelled ``word`` (``high``, ``normal``, ``low``, any case); ValueError
        for any other word."""
        try:
            return cls.__members__[word.upper()]
        except KeyError:
            raise ValueError(f"{word!r} is not a priority (high, normal or low)") from None

    @classmethod
    def _missing_(cls, value: object) -> Priority | None:
        if isinstance(value, str):
            return cls.__members__.get(value.upper())
        return None


#: The six plain submit packets: type -> (priority, background). SUBMIT_JOB_EPOCH is a background
#: NORMAL job too, and the reduce submits are NORMAL, but they carry more arguments.
SUBMIT_KINDS: dict[PacketType, tuple[Priority, bool]] = {
    P.SUBMIT_JOB_HIGH: (Priority.HIGH, False),
    P.SUBMIT_JOB: (Priority.NORMAL, False),
    P.SUBMIT_JOB_LOW: (Priority.LOW, False),
    P.SUBMIT_JOB_HIGH_BG: (Priority.HIGH, True),
    P.SUBMIT_JOB_BG: (Priority.NORMAL, True),
    P.SUBMIT_JOB_LOW_BG: (Priority.LOW, True),
}
#: (priority, background) -> submit packet type: the inverse of SUBMIT_KINDS.
SUBMIT_TYPES: dict[tuple[Priority, bool], PacketType] = {
    kind: type_ for type_, kind in SUBMIT_KINDS.items()
}


class LocalProtocolError(Exception):
    """This program asked the codec for something the protocol does not allow.

    Raised before anything is sent, for example for a NUL byte inside an argument that is not the
    last one, or a wrong number of arguments.
    """


class Packet(NamedTuple):
    """One binary packet. ``request`` is True for ``\\0REQ`` magic, False for ``\\0RES``."""

    type: PacketType
    args: tuple[bytes, ...]
    request: bool = True


class AdminLine(NamedTuple):
    """One line of the text admin protocol, without its line ending."""

    line: bytes


class Violation(NamedTuple):
    """The peer broke the protocol; the parser accepts nothing more from this stream.

    ``code`` and ``text`` are the ERROR packet gearmand would send before closing, or ``code`` is
    empty when the right answer is to close without a word (bad magic, unknown type: the peer is
    not speaking Gearman at all).
    """

    code: bytes
    text: str


Event = Union[Packet, AdminLine, Violation]  # noqa: UP007 (a runtime alias on 3.10)


def pack(type_: int, args: tuple[bytes, ...] | list[bytes], magic: bytes = RES) -> bytes:
    """Frame one packet. Raises :class:`LocalProtocolError` on a wrong argument count or a NUL
    in any argument but the last."""
    argc = _ARGC[type_] if 0 <= type_ < len(_ARGC) else -1
    if argc < 0:
        raise LocalProtocolError(f"unknown packet type {type_}")
    if len(args) != argc:
        raise LocalProtocolError(
            f"{PacketType(type_).name} takes {argc} arguments, got {len(args)}"
        )
    for arg in args[:-1]:
        if b"\0" in arg:
            raise LocalProtocolError(
                f"only the last argument of {PacketType(type_).name} may contain NUL bytes"
            )
    body = b"\0".join(args)
    return _HEADER.pack(magic, type_, len(body)) + body


def frame_response(type_: int, *args: bytes) -> bytes:
    """Frame a ``\\0RES`` packet without :func:`pack`'s checks.

    Only for arguments that cannot break the framing: every argument but the last came out of
    a parsed packet (so holds no NUL) or was checked when it entered the server.
    """
    body = b"\0".join(args)
    return _HEADER.pack(RES, type_, len(body)) + body


def pack_response(type_: int, *args: bytes) -> bytes:
    """Frame a packet with ``\\0RES`` magic (server to client or worker)."""
    return pack(type_, args, RES)


def pack_request(type_: int, *args: bytes) -> bytes:
    """Frame a packet with ``\\0REQ`` magic (client or worker to server)."""
    return pack(type_, args, REQ)


class ArgumentProblem(enum.Enum):
    """Why a function name or a unique cannot be sent, as the job server would answer it.

    ``code`` and ``text`` are the ERROR packet gearmand sends for it; callers that explain the
    problem in their own words branch on the member, never on the text.
    """

    FUNCTION_EMPTY = (b"INVALID_ARGUMENT", b"Function name is empty")
    FUNCTION_TOO_LARGE = (b"ARGUMENT_TOO_LARGE", b"Function name too large")
    FUNCTION_HAS_NUL = (b"INVALID_ARGUMENT", b"Function name contains a NUL byte")
    UNIQUE_TOO_LARGE = (b"ARGUMENT_TOO_LARGE", b"Unique value too large")
    UNIQUE_HAS_NUL = (b"INVALID_ARGUMENT", b"Unique value contains a NUL byte")

    @property
    def code(self) -> bytes:
        """The return code name of gearmand's ERROR packet."""
        return self.value[0]

    @property
    def text(self) -> str:
        """gearmand's words for the problem (the text of its ERROR packet)."""
        return self.value[1].decode()


def check_function_name(
    name: bytes, limit: int = MAX_FUNCTION_NAME, *, nul_allowed: bool = False
) -> ArgumentProblem | None:
    """Return why ``name`` cannot be a function name, or None when it can.

    ``nul_allowed`` is for a name that arrived as the only argument of a packet (CAN_DO), where a
    NUL byte cannot break the framing: gearmand takes such a name as it is, and so does gearsql.
    """
    if not name:
        return ArgumentProblem.FUNCTION_EMPTY
    if len(name) > limit:
        return ArgumentProblem.FUNCTION_TOO_LARGE
    if not nul_allowed and b"\0" in name:
        return ArgumentProblem.FUNCTION_HAS_NUL
    return None


def check_unique(unique: bytes, limit: int = MAX_UNIQUE) -> ArgumentProblem | None:
    """Return why ``unique`` cannot be a unique id, or None when it can."""
    if len(unique) > limit:
        return ArgumentProblem.UNIQUE_TOO_LARGE
    if b"\0" in unique:
        return ArgumentProblem.UNIQUE_HAS_NUL
    return None


def split_admin_words(line: bytes) -> list[bytes]:
    """Split an admin line into words as gearmand does: on spaces, empty words dropped."""
    return [word for word in line.split(b" ") if word]


_HTTP_METHODS = (b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE")


class Parser:
    """Incremental parser for one byte stream (one connection, one direction).

    Feed it whatever arrived, in pieces of any size; it returns every complete event in order.
    Binary packets and admin lines may be mixed on one stream, as in gearmand: a message that
    starts with a NUL byte is binary, anything else is an admin line.

    The parser buffers at most one incomplete message, and never more than ``max_packet_size``
    plus a header: a declared length above the maximum is refused on the header alone, before
    any of the body is read. An incomplete admin line is held up to ``MAX_ADMIN_LINE`` bytes,
    whatever ``max_packet_size`` is.

    ``expect_magic=RES`` (a client or worker) makes a packet with request magic a
    :class:`Violation`, and ``REQ`` the reverse; the default, None, accepts both and says which
    in ``Packet.request`` (the job server answers a response packet with ERROR INVALID_MAGIC).
    """

    __slots__ = (
        "_broken",
        "_chunks",
        "_have",
        "_need",
        "discard",
        "expect_magic",
        "max_packet_size",
    )

    def __init__(
        self, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE, expect_magic: bytes | None = None
    ):
        # Unparsed bytes are kept as a list of chunks, joined only once enough has arrived to
        # make progress: a 10 MB body read 64 KiB at a time is copied once, not 160 times.
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 0
        self._broken = False
        self.max_packet_size = max_packet_size
        #: The only magic this side accepts (REQ or RES): a packet with the other one is a
        #: Violation. None (a job server's parser) accepts both and reports which through
        #: ``Packet.request``, so that the server can answer a stray RES packet as gearmand does.
        self.expect_magic = expect_magic
        #: After an over-size packet's Violation: how many bytes of that packet are still to
        #: come. A peer still sending them reads nothing until it has sent them all, and a
        #: socket closed with unread bytes is reset, which throws the ERROR away: a server may
        #: read this many bytes and drop them, so that the peer reads why it was refused.
        self.discard = 0

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete message are held."""
        return self._have

    def feed(self, data: bytes) -> list[Event]:
        """Add received bytes; return every event that is now complete.

        After a :class:`Violation` has been returned the stream is dead: further calls raise
        :class:`LocalProtocolError`.
        """
        if self._broken:
            raise LocalProtocolError("the peer already violated the protocol on this stream")
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            buf = b"".join(self._chunks)
            self._chunks = []
        else:
            buf = data
        events: list[Event] = []
        pos = 0
        need = 0
        end = len(buf)
        unpack_header = _KEYED_HEADER.unpack_from
        # A NamedTuple's own constructor is a Python function; tuple.__new__ is the same
        # tuple built in C, three times faster, and the parser builds one per packet.
        new_packet = tuple.__new__
        kinds = _KINDS[self.expect_magic]
        max_size = self.max_packet_size
        while pos < end:
            if buf[pos] != 0:
                newline = buf.find(b"\n", pos)
                if newline < 0:
                    if end - pos > MAX_ADMIN_LINE:
                        events.append(self._violate(b"", "admin line too long"))
                        return events
                    break
                if newline - pos > MAX_ADMIN_LINE:
                    events.append(self._violate(b"", "admin line too long"))
                    return events
                line = buf[pos:newline]
                if line.endswith(b"\r"):
                    line = line[:-1]
                pos = newline + 1
                if _looks_like_http(line):
                    events.append(self._violate(b"", "HTTP request on the Gearman port"))
                    return events
                events.append(AdminLine(line))
                continue
            if end - pos < HEADER:
                if end - pos >= 4 and buf[pos : pos + 4] not in (REQ, RES):
                    events.append(self._violate(b"", "bad magic"))
                    return events
                break
            key, size = unpack_header(buf, pos)
            kind = kinds.get(key)
            if kind is None:
                events.append(self._violate(b"", self._header_problem(key)))
                return events
            if size > max_size:
                events.append(
                    self._violate(
                        b"ARGUMENT_TOO_LARGE",
                        f"packet too large (limit {max_size} bytes)",
                    )
                )
                self.discard = max(0, pos + HEADER + size - end)
                return events
            start = pos + HEADER
            stop = start + size
            if stop > end:
                need = HEADER + size
                break
            type_, argc, request = kind
            if argc > 1:
                parts = buf[start:stop].split(b"\0", argc - 1)
                if len(parts) != argc:
                    events.append(
                        self._violate(b"INVALID_PACKET", f"{type_.name} needs {argc} arguments")
                    )
                    return events
                args: tuple[bytes, ...] = tuple(parts)
            elif argc:
                args = (buf[start:stop],)
            else:
                args = ()
            events.append(new_packet(Packet, (type_, args, request)))
            pos = stop
        if pos < end:
            rest = buf[pos:] if pos else buf
            self._chunks = [rest]
            self._have = len(rest)
            self._need = need
        else:
            self._have = 0
            self._need = 0
        return events

    def _header_problem(self, key: int) -> str:
        """Why a header's magic and type (``key``, see ``_KINDS``) were refused."""
        magic = (key >> 32).to_bytes(4, "big")
        if magic not in _ACCEPTED[self.expect_magic]:
            return _MAGIC_PROBLEMS.get(magic, "bad magic")
        return f"unknown packet type {key & 0xFFFFFFFF}"

    def _violate(self, code: bytes, text: str) -> Violation:
        self._broken = True
        self._chunks = []
        self._have = 0
        return Violation(code, text)


#: The magics a parser takes, by its ``expect_magic``, and whether each is a request's.
_ACCEPTED: dict[bytes | None, dict[bytes, bool]] = {
    None: {REQ: True, RES: False},
    REQ: {REQ: True},
    RES: {RES: False},
}
#: A header read as two numbers: its magic and type as one (the magic's four bytes, then the
#: type's), and the body's size.
_KEYED_HEADER = struct.Struct(">QI")
#: For each ``expect_magic``: every magic and type that side takes, keyed as the first number
#: of ``_KEYED_HEADER``, and the packet's type, number of arguments and whether it is a
#: request. One look-up checks both and finds all three.
_KINDS: dict[bytes | None, dict[int, tuple[PacketType, int, bool]]] = {
    expect: {
        int.from_bytes(magic, "big") << 32 | type_: (type_, len(ARGUMENTS[type_]), request)
        for magic, request in accepted.items()
        for type_ in PacketType
    }
    for expect, accepted in _ACCEPTED.items()
}
#: Why a binary magic that is not accepted was refused, when it is one of the two.
_MAGIC_PROBLEMS = {
    REQ: "request magic where response magic was expected",
    RES: "response magic where request magic was expected",
}


def _looks_like_http(line: bytes) -> bool:
    if not line.startswith(_HTTP_METHODS):
        return False
    return b" HTTP/" in line
