"""The client side of one Gearman connection as a sans-IO state machine (no sockets, no loop).

Requests go in as method calls with an opaque ``token`` the caller chooses (its own object for the
request), bytes to write come out of :meth:`ClientConnection.data_to_send`, received bytes go in
through :meth:`ClientConnection.receive_data` and come back as events naming the token.

Matching replies to requests: JOB_CREATED, STATUS_RES, STATUS_RES_UNIQUE, OPTION_RES, ECHO_RES and
ERROR carry no request id, but a job server answers the requests of one connection in the order
they were sent (gearmand and gearsql both do), so they are matched first in, first out. WORK_*
packets carry the job handle and are matched through the handles of foreground jobs.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar, Union

from gearsql.protocol import (
    REQ,
    RES,
    SUBMIT_TYPES,
    LocalProtocolError,
    Packet,
    PacketType,
    Parser,
    Priority,
    Violation,
)
from gearsql.protocol import pack_request as _pack

__all__ = [
    "Answer",
    "ClientConnection",
    "ClientEvent",
    "ErrorReply",
    "JobCreated",
    "JobDone",
    "JobUpdate",
    "Priority",
    "ProtocolBroken",
]

T = TypeVar("T")
P = PacketType


#: Which reply answers which request; ERROR may answer any of them.
REPLY_TO: dict[PacketType, PacketType] = {
    **{submit: P.JOB_CREATED for submit in SUBMIT_TYPES.values()},
    P.SUBMIT_JOB_EPOCH: P.JOB_CREATED,
    P.GET_STATUS: P.STATUS_RES,
    P.GET_STATUS_UNIQUE: P.STATUS_RES_UNIQUE,
    P.OPTION_REQ: P.OPTION_RES,
    P.ECHO_REQ: P.ECHO_RES,
}

_REQUEST_HEADER = struct.Struct(">4sII").pack

# Compared by identity: the parser hands out these very members.
_JOB_CREATED, _ERROR, _NOOP = P.JOB_CREATED, P.ERROR, P.NOOP
_WORK_UPDATES = frozenset({P.WORK_DATA, P.WORK_WARNING, P.WORK_STATUS})
_WORK_ENDS = frozenset({P.WORK_COMPLETE, P.WORK_FAIL, P.WORK_EXCEPTION})


@dataclass(frozen=True)
class JobCreated(Generic[T]):
    """JOB_CREATED answered a submission."""

    token: T
    handle: bytes


@dataclass(frozen=True)
class JobUpdate(Generic[T]):
    """WORK_DATA, WORK_WARNING or WORK_STATUS for a foreground job."""

    token: T
    packet: Packet


@dataclass(frozen=True)
class JobDone(Generic[T]):
    """WORK_COMPLETE, WORK_FAIL or WORK_EXCEPTION ended a foreground job."""

    token: T
    packet: Packet


@dataclass(frozen=True)
class Answer(Generic[T]):
    """STATUS_RES, STATUS_RES_UNIQUE, OPTION_RES or ECHO_RES answered a request."""

    token: T
    packet: Packet


@dataclass(frozen=True)
class ErrorReply(Generic[T]):
    """An ERROR packet answered the oldest request (token None when nothing was waiting)."""

    token: T | None
    code: str
    text: str


@dataclass(frozen=True)
class ProtocolBroken:
    """The server broke the protocol; the connection must be closed."""

    reason: str


# The two events of every foreground job (JobCreated, JobDone) are made without the dataclass's
# __init__, which sets each field of a frozen instance through object.__setattr__ and so costs
# twice as much. The events are the same: the fields are the instance's dict entries either way.
_new = object.__new__
_Event = TypeVar("_Event")


def _event(cls: type[_Event], token: object, name: str, value: object) -> _Event:
    """An instance of ``cls`` (a two-field event) with ``token`` and the field ``name``."""
    event = _new(cls)
    fields = event.__dict__
    fields["token"] = token
    fields[name] = value
    return event


ClientEvent = Union[  # noqa: UP007 (a runtime alias on 3.10)
    JobCreated[T], JobUpdate[T], JobDone[T], Answer[T], ErrorReply[T], ProtocolBroken
]


class ClientConnection(Generic[T]):
    """Requests and replies of one client connection to one job server."""

    def __init__(self) -> None:
        self._parser = Parser(expect_magic=RES)
        self._out: list[bytes] = []
        # Requests waiting for their reply, in the order they were sent.
        self._replies: deque[tuple[PacketType, T, bool]] = deque()
        # Foreground jobs by handle. A list: two submissions coalesced by unique on this same
        # connection share one handle.
        self._jobs: dict[bytes, list[T]] = {}
        self._broken = False

    # -- requests ---------------------------------------------------------------------------

    def submit(
        self,
        token: T,
        function: bytes,
        unique: bytes,
        data: bytes,
        priority: Priority = Priority.NORMAL,
        background: bool = False,
        epoch: int | None = None,
    ) -> None:
        """Queue a submission. ``epoch`` (Unix time) makes it a SUBMIT_JOB_EPOCH job, which the
        protocol defines as background and NORMAL priority only."""
        if epoch is not None:
            if not background or priority is not Priority.NORMAL:
                raise LocalProtocolError("epoch jobs are background jobs of NORMAL priority")
            type_ = P.SUBMIT_JOB_EPOCH
            self._out.append(_pack(type_, function, unique, str(int(epoch)).encode(), data))
        else:
            type_ = SUBMIT_TYPES[priority, background]
            # The hot path of every client: framed here rather than by pack_request, with the
            # same check (only the last argument may hold NUL) and the same bytes. ``0 in``
            # looks for the NUL byte directly; ``b"\0" in`` first tries its argument as an
            # integer and pays for the TypeError.
            if 0 in function or 0 in unique:
                raise LocalProtocolError(
                    f"only the last argument of {type_.name} may contain NUL bytes"
                )
            body = b"\0".join((function, unique, data))
            self._out.append(_REQUEST_HEADER(REQ, type_, len(body)) + body)
        self._replies.append((type_, token, background))

    def get_status(self, token: T, handle: bytes) -> None:
        self._request(token, P.GET_STATUS, handle)

    def get_status_unique(self, token: T, unique: bytes) -> None:
        self._request(token, P.GET_STATUS_UNIQUE, unique)

    def option(self, token: T, name: bytes) -> None:
        self._request(token, P.OPTION_REQ, name)

    def echo(self, token: T, data: bytes) -> None:
        self._request(token, P.ECHO_REQ, data)

    def _request(self, token: T, type_: PacketType, arg: bytes) -> None:
        self._out.append(_pack(type_, arg))
        self._replies.append((type_, token, False))

    def forget(self, handle: bytes, token: T) -> None:
        """Stop delivering WORK_* packets for ``handle`` to ``token`` (its caller gave up)."""
        tokens = self._jobs.get(handle)
        if tokens is not None:
            tokens[:] = [t for t in tokens if t is not token]
            if not tokens:
                del self._jobs[handle]

    def data_to_send(self) -> bytes:
        """The bytes queued by requests since the last call."""
        if not self._out:
            return b""
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        return data

    @property
    def waiting(self) -> int:
        """Requests without reply plus foreground jobs without result."""
        return len(self._replies) + sum(len(tokens) for tokens in self._jobs.values())

    # -- replies ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[ClientEvent[T]]:
        """Feed received bytes; return the events they complete, in order."""
        if self._broken:
            return []
        events: list[ClientEvent[T]] = []
        for event in self._parser.feed(data):
            if isinstance(event, Packet):
                # Request magic from the server is a Violation: the parser expects RES only.
                self._packet(event, events)
                if events and isinstance(events[-1], ProtocolBroken):
                    return events
            elif isinstance(event, Violation):
                events.append(self._break(f"bad data from the server: {event.text}"))
                return events
            else:
                events.append(self._break("the server sent a text line on a binary connection"))
                return events
        return events

    def _packet(self, packet: Packet, events: list[ClientEvent[T]]) -> None:
        type_, args, _ = packet
        if type_ in _WORK_ENDS:
            # C gearmand sends WORK_FAIL converted from WORK_EXCEPTION with a stray trailing NUL
            # after the handle (docs/protocol.md, section 11); the bare handle is the key.
            for token in self._jobs.pop(args[0].rstrip(b"\0"), ()):
                events.append(_event(JobDone, token, "packet", packet))
            return
        if type_ in _WORK_UPDATES:
            for token in self._jobs.get(args[0].rstrip(b"\0"), ()):
                events.append(JobUpdate(token, packet))
            return
        if type_ is _ERROR:
            code = args[0].decode("utf-8", "replace")
            text = args[1].decode("utf-8", "replace")
            waiting = self._replies.popleft()[1] if self._replies else None
            events.append(ErrorReply(waiting, code, text))
            return
        if type_ is _NOOP:  # harmless; some servers send it to every connection
            return
        if not self._replies:
            events.append(self._break(f"unexpected {type_.name} from the server"))
            return
        request, token, background = self._replies[0]
        if REPLY_TO.get(request) is not type_:
            events.append(self._break(f"{type_.name} does not answer {request.name}"))
            return
        self._replies.popleft()
        if type_ is _JOB_CREATED:
            handle = args[0]
            if not background:
                self._jobs.setdefault(handle, []).append(token)
            events.append(_event(JobCreated, token, "handle", handle))
        else:
            events.append(Answer(token, packet))

    def _break(self, reason: str) -> ProtocolBroken:
        self._broken = True
        return ProtocolBroken(reason)

    def connection_lost(self) -> list[T]:
        """Every token still waiting (for a reply or a job result), oldest request first."""
        tokens = [token for _, token, _ in self._replies]
        for job_tokens in self._jobs.values():
            tokens.extend(job_tokens)
        self._replies.clear()
        self._jobs.clear()
        self._broken = True
        return tokens
