"""The worker side of one Gearman connection as a sans-IO state machine (no sockets, no loop).

A worker connection is in one of three states. Transitions live in :data:`TRANSITIONS`, a table
from (state, received packet) to the next state and the packet the worker answers with::

    IDLE --grab()--> GRABBING --NO_JOB (send PRE_SLEEP)--> SLEEPING --NOOP--> IDLE
                         \\--JOB_ASSIGN_UNIQ--> IDLE (the job is the caller's to run)

The driver decides *when* to grab (only with a free job slot); this module decides what each
packet means and what to send back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Union

from gearsql.protocol import RES, LocalProtocolError, Packet, PacketType, Parser, Violation
from gearsql.protocol import pack_request as _pack

__all__ = [
    "Assigned",
    "NoJob",
    "ProtocolBroken",
    "ServerErrorReply",
    "WakeUp",
    "WorkerConnection",
    "WorkerEvent",
    "WorkerState",
]

P = PacketType


class WorkerState(enum.Enum):
    IDLE = "idle"
    GRABBING = "grabbing"
    SLEEPING = "sleeping"


S = WorkerState

#: (state, packet received) -> (next state, packet to send or None).
TRANSITIONS: dict[tuple[WorkerState, PacketType], tuple[WorkerState, PacketType | None]] = {
    (S.GRABBING, P.NO_JOB): (S.SLEEPING, P.PRE_SLEEP),
    (S.GRABBING, P.JOB_ASSIGN_UNIQ): (S.IDLE, None),
    (S.GRABBING, P.JOB_ASSIGN): (S.IDLE, None),
    (S.GRABBING, P.JOB_ASSIGN_ALL): (S.IDLE, None),
    (S.SLEEPING, P.NOOP): (S.IDLE, None),
    # A NOOP while awake is a wake-up we no longer need (gearmand sends one per sleep).
    (S.IDLE, P.NOOP): (S.IDLE, None),
    (S.GRABBING, P.NOOP): (S.GRABBING, None),
}


@dataclass(frozen=True)
class Assigned:
    """The server gave this worker a job."""

    handle: bytes
    function: bytes
    unique: bytes
    data: bytes


@dataclass(frozen=True)
class NoJob:
    """GRAB found nothing; PRE_SLEEP was queued and the connection now sleeps."""


@dataclass(frozen=True)
class WakeUp:
    """NOOP woke a sleeping connection: grab again when a job slot is free."""


@dataclass(frozen=True)
class ServerErrorReply:
    """The server answered with an ERROR packet."""

    code: str
    text: str


@dataclass(frozen=True)
class ProtocolBroken:
    """The server broke the protocol; the connection must be closed."""

    reason: str


WorkerEvent = Union[Assigned, NoJob, WakeUp, ServerErrorReply, ProtocolBroken]  # noqa: UP007


class WorkerConnection:
    """Packets of one worker connection to one job server."""

    def __init__(self) -> None:
        self._parser = Parser(expect_magic=RES)
        self._out: list[bytes] = []
        self.state = S.IDLE
        self._broken = False

    # -- what the worker says ---------------------------------------------------------------

    def can_do(self, function: bytes, timeout: float | None = None) -> None:
        """Register a function; with ``timeout`` (seconds) as CAN_DO_TIMEOUT, which gearmand
        reads as milliseconds and raises to at least one second."""
        if timeout is None:
            self._out.append(_pack(P.CAN_DO, function))
        else:
            millis = max(1, round(timeout * 1000))
            self._out.append(_pack(P.CAN_DO_TIMEOUT, function, str(millis).encode()))

    def set_client_id(self, client_id: bytes) -> None:
        self._out.append(_pack(P.SET_CLIENT_ID, client_id))

    def grab(self) -> None:
        """Ask for a job (GRAB_JOB_UNIQ). Only allowed while IDLE."""
        if self.state is not S.IDLE:
            raise LocalProtocolError(f"cannot grab a job while {self.state.value}")
        self._out.append(_pack(P.GRAB_JOB_UNIQ))
        self.state = S.GRABBING

    def work_status(self, handle: bytes, numerator: int, denominator: int) -> None:
        self._out.append(
            _pack(P.WORK_STATUS, handle, str(numerator).encode(), str(denominator).encode())
        )

    def work_data(self, handle: bytes, data: bytes) -> None:
        self._out.append(_pack(P.WORK_DATA, handle, data))

    def work_warning(self, handle: bytes, data: bytes) -> None:
        self._out.append(_pack(P.WORK_WARNING, handle, data))

    def work_complete(self, handle: bytes, data: bytes) -> None:
        self._out.append(_pack(P.WORK_COMPLETE, handle, data))

    def work_fail(self, handle: bytes) -> None:
        self._out.append(_pack(P.WORK_FAIL, handle))

    def work_exception(self, handle: bytes, data: bytes) -> None:
        self._out.append(_pack(P.WORK_EXCEPTION, handle, data))

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        return data

    # -- what the server says ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[WorkerEvent]:
        """Feed received bytes; return the events they complete. May queue bytes to send."""
        if self._broken:
            return []
        events: list[WorkerEvent] = []
        for event in self._parser.feed(data):
            if not isinstance(event, Packet):
                why = event.text if isinstance(event, Violation) else "a text line"
                events.append(self._break(f"bad data from the server: {why}"))
                break
            if event.type == P.ERROR:
                events.append(
                    ServerErrorReply(
                        event.args[0].decode("utf-8", "replace"),
                        event.args[1].decode("utf-8", "replace"),
                    )
                )
                # The grab was refused: try again later. PERMISSION_DENIED answers a CAN_DO
                # an ACL refused (docs/security.md), never a grab.
                if self.state is S.GRABBING and event.args[0] != b"PERMISSION_DENIED":
                    self.state = S.IDLE
                continue
            step = TRANSITIONS.get((self.state, event.type))
            if step is None:
                events.append(self._break(f"unexpected {event.type.name} while {self.state.value}"))
                break
            self.state, reply = step
            if reply is not None:
                self._out.append(_pack(reply))
            events.append(self._event(event))
        return events

    def _event(self, packet: Packet) -> WorkerEvent:
        args = packet.args
        if packet.type == P.JOB_ASSIGN_UNIQ:
            return Assigned(args[0], args[1], args[2], args[3])
        if packet.type == P.JOB_ASSIGN:
            return Assigned(args[0], args[1], b"", args[2])
        if packet.type == P.JOB_ASSIGN_ALL:
            return Assigned(args[0], args[1], args[2], args[4])
        if packet.type == P.NO_JOB:
            return NoJob()
        return WakeUp()

    def _break(self, reason: str) -> ProtocolBroken:
        self._broken = True
        return ProtocolBroken(reason)
