"""Drive :class:`~gearsql.core.JobServerCore` as the network layer does, with no sockets.

Packets go in through ``handle_packet`` and admin lines through ``handle_admin``; what each session
was sent is read back from ``Session.out`` and decoded with the real codec, so the tests check the
bytes a peer would receive. Time is a :class:`FakeClock` the test moves by hand.
"""

from __future__ import annotations

from typing import Any

from gearsql.core import JobServerCore, Session
from gearsql.protocol import RES, AdminLine, Packet, PacketType, Parser

Reply = tuple[PacketType, tuple[bytes, ...]]

#: Where the fake clock starts: an ordinary epoch second, so epoch jobs look realistic.
START = 1_700_000_000.0


class FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self, now: float = START):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class CoreDriver:
    """One core, its fake clock, and shorthand to speak to it as clients, workers and admins."""

    def __init__(self, **options: Any):
        self.clock = FakeClock()
        options.setdefault("run_id", b"testrun")
        self.core = JobServerCore(handle_prefix=b"H:test", clock=self.clock, **options)
        self._next_fd = 10

    def connect(self, peer: str = "127.0.0.1", trusted: bool = True) -> Session:
        fd = self._next_fd
        self._next_fd += 1
        return self.core.connect(peer, fd, trusted)

    def send(self, session: Session, type_: PacketType, *args: bytes, request: bool = True) -> None:
        self.core.handle_packet(session, Packet(type_, args, request))

    def raw_output(self, session: Session) -> bytes:
        """Everything ``session`` was sent since the last read, removed from its output, as the
        network layer takes it (up to the first reply still waiting for a store commit)."""
        return session.take_output()

    def received(self, session: Session) -> list[Reply]:
        """The packets ``session`` was sent since the last read, as (type, args), in order."""
        return self.parse(self.raw_output(session))

    @staticmethod
    def parse(data: bytes) -> list[Reply]:
        """The packets in bytes a session was sent, as (type, args), in order."""
        parser = Parser(expect_magic=RES)
        replies: list[Reply] = []
        for event in parser.feed(data):
            assert isinstance(event, Packet), f"not a packet: {event!r}"
            assert not event.request, f"server sent REQ magic: {event!r}"
            replies.append((event.type, event.args))
        assert parser.buffered == 0, "a packet was cut short"
        return replies

    def admin(self, session: Session, line: bytes) -> bytes:
        """Run one admin line and return the exact reply bytes."""
        self.core.handle_admin(session, AdminLine(line))
        return self.raw_output(session)

    def show_jobs(self, session: Session) -> bytes:
        """``show jobs`` cut to C gearmand's four columns (handle, retries, ignore, queued):
        gearsql's three extra columns at the end are checked where they are the point."""
        reply = self.admin(session, b"show jobs")
        return b"".join(
            line if line == b".\n" else b"\t".join(line.split(b"\t")[:4]) + b"\n"
            for line in reply.splitlines(keepends=True)
        )

    # Shorthand for the usual roles ------------------------------------------------------

    def worker(self, *functions: bytes) -> Session:
        """A connection that registered ``functions`` with CAN_DO."""
        session = self.connect()
        for name in functions:
            self.send(session, PacketType.CAN_DO, name)
        assert self.received(session) == []
        return session

    def sleeping_worker(self, *functions: bytes) -> Session:
        """A worker that found no job and went to sleep (PRE_SLEEP, no immediate NOOP)."""
        session = self.worker(*functions)
        self.send(session, PacketType.PRE_SLEEP)
        assert self.received(session) == []
        return session

    def submit(
        self,
        client: Session,
        function: bytes,
        data: bytes = b"payload",
        unique: bytes = b"",
        type_: PacketType = PacketType.SUBMIT_JOB,
    ) -> bytes:
        """Submit a job and return its handle; fails unless the reply is one JOB_CREATED."""
        self.send(client, type_, function, unique, data)
        replies = self.received(client)
        assert len(replies) == 1 and replies[0][0] == PacketType.JOB_CREATED, replies
        return replies[0][1][0]

    def grab(self, worker: Session) -> Reply:
        """GRAB_JOB and return the single reply (JOB_ASSIGN or NO_JOB)."""
        self.send(worker, PacketType.GRAB_JOB)
        replies = self.received(worker)
        assert len(replies) == 1, replies
        return replies[0]

    def grab_handle(self, worker: Session) -> bytes:
        """GRAB_JOB and return the handle of the assigned job; fails on NO_JOB."""
        kind, args = self.grab(worker)
        assert kind == PacketType.JOB_ASSIGN, (kind, args)
        return args[0]
