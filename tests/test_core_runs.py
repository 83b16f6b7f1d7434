"""``JobServerCore.handle_packets`` takes a read's packets in as few calls as it can: a run of
plain background submissions goes through ``_submit_run`` in one. Nothing anyone is sent may
differ from the same packets handed over one at a time with ``handle_packet``: handles, replies
and their order (a NOOP to a submitter that is also a sleeping worker included), queue limits,
status, listings.
"""

from __future__ import annotations

import re

import pytest
from coredriver import CoreDriver
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gearsql.protocol import RES, AdminLine, Event, Packet, Parser, Violation
from gearsql.protocol import PacketType as P

SUBMITS = (P.SUBMIT_JOB_BG, P.SUBMIT_JOB_HIGH_BG, P.SUBMIT_JOB_LOW_BG, P.SUBMIT_JOB)
#: A small PACK_LIMIT on both sides, so that payloads on either side of it are cheap to make.
PACK_LIMIT = 8

submits = st.tuples(
    st.just("submit"),
    st.sampled_from(SUBMITS + (P.SUBMIT_JOB_BG,) * 4),
    st.sampled_from([b"f", b"f", b"g", b"h"]),
    st.sampled_from([b"", b"", b"", b"", b"u1"]),
    st.sampled_from([0, 1, PACK_LIMIT, PACK_LIMIT + 1]),
    st.sampled_from([True, True, True, True, False]),
)
#: What a pipelining client sends: several plain background submissions in a row.
bursts = st.tuples(
    st.just("burst"),
    st.sampled_from([P.SUBMIT_JOB_BG, P.SUBMIT_JOB_BG, P.SUBMIT_JOB_HIGH_BG, P.SUBMIT_JOB_LOW_BG]),
    st.sampled_from([b"f", b"f", b"g", b"h"]),
    st.integers(2, 8),
)
items = st.one_of(
    submits,
    submits,
    bursts,
    bursts,
    st.tuples(st.just("echo")),
    st.tuples(st.just("status"), st.integers(0, 30)),
    st.tuples(st.just("sleep")),
    st.tuples(st.just("grab")),
    st.tuples(st.just("complete")),
    st.tuples(
        st.just("admin"),
        st.sampled_from(
            [
                b"status",
                b"prioritystatus",
                b"counters",
                b"show jobs",
                b"maxqueue f 0",
                b"maxqueue g 1 0 2",
                b"drop function h",
            ]
        ),
    ),
    st.tuples(st.just("admin"), st.integers(1, 12).map(lambda n: b"maxqueue f %d" % n)),
)
#: Each read: which session sends it (two clients, a worker of f, a client that is also a
#: worker of f, an admin) and what it holds.
reads = st.lists(
    st.tuples(st.integers(0, 4), st.lists(items, min_size=1, max_size=12)), max_size=25
)


class Side:
    def __init__(self, durable: bool = False) -> None:
        self.d = CoreDriver(durable=durable)
        self.d.core.PACK_LIMIT = PACK_LIMIT  # type: ignore[misc]
        self.sessions = [self.d.connect() for _ in range(5)]
        for worker in self.sessions[2:4]:
            self.d.send(worker, P.CAN_DO, b"f")

    def everything_sent(self) -> list[bytes]:
        """Each session's output since the last look; the seconds of ``counters`` (sums of
        wait and run times, which a run measures from one instant) as ``T``."""
        return [
            re.sub(rb"\b\d+\.\d{6}\b", b"T", self.d.raw_output(session))
            for session in self.sessions
        ]


def events_of(read: list[tuple], handles: list[bytes], held: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for item in read:
        kind = item[0]
        if kind == "submit":
            _, type_, name, unique, size, request = item
            events.append(Packet(type_, (name, unique, b"x" * size), request))
        elif kind == "burst":
            _, type_, name, count = item
            events += [Packet(type_, (name, b"", b"x"), True) for _ in range(count)]
        elif kind == "echo":
            events.append(Packet(P.ECHO_REQ, (b"hi",), True))
        elif kind == "status":
            known = handles or [b"H:test:1"]
            events.append(Packet(P.GET_STATUS, (known[item[1] % len(known)],), True))
        elif kind == "sleep":
            events.append(Packet(P.PRE_SLEEP, (), True))
        elif kind == "grab":
            events.append(Packet(P.GRAB_JOB, (), True))
        elif kind == "complete" and held:
            events.append(Packet(P.WORK_COMPLETE, (held.pop(0), b"done"), True))
        elif kind == "admin":
            events.append(AdminLine(item[1]))
    return events


def one_by_one(side: Side, session_index: int, events: list[Event]) -> None:
    session = side.sessions[session_index]
    for event in events:
        if isinstance(event, Packet):
            side.d.core.handle_packet(session, event)
        else:
            assert isinstance(event, AdminLine)
            side.d.core.handle_admin(session, event)


def batched(side: Side, session_index: int, events: list[Event]) -> None:
    """As a connection hands a read over: packets in runs, admin lines in between."""
    session = side.sessions[session_index]
    core = side.d.core
    index = 0
    while index < len(events):
        index = core.handle_packets(session, events, index)
        if index < len(events):
            event = events[index]
            assert isinstance(event, AdminLine)
            core.handle_admin(session, event)
            index += 1


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "durable"])
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=reads)
def test_packets_handed_over_in_runs_say_what_they_say_one_by_one(
    durable: bool, plan: list[tuple[int, list[tuple]]]
) -> None:
    sides = [Side(durable), Side(durable)]
    handles: list[bytes] = []
    held: list[list[bytes]] = [[] for _ in range(5)]
    for session_index, read in plan:
        events = events_of(read, handles, held[session_index])
        one_by_one(sides[0], session_index, events)
        batched(sides[1], session_index, events)
        for side in sides:
            if durable:
                jobs, side.d.core.to_store = side.d.core.to_store, []
                side.d.core.commit_done(jobs)
        single, runs = (side.everything_sent() for side in sides)
        assert single == runs, read
        assert sides[0].d.core.packed_jobs == sides[1].d.core.packed_jobs
        for index, data in enumerate(single):
            for reply in Parser(expect_magic=RES).feed(data):  # admin replies are text lines
                if not isinstance(reply, Packet):
                    continue
                if reply.type == P.JOB_CREATED and reply.args[0] not in handles:
                    handles.append(reply.args[0])
                elif reply.type == P.JOB_ASSIGN:
                    held[index].append(reply.args[0])


def test_a_run_is_taken_in_one_call_and_stops_where_its_kind_ends() -> None:
    """A read of plain background submissions to a known function, then one with a unique:
    the run takes the plain ones (their JOB_CREATEDs in order, the jobs packed) and leaves the
    other to its handler, and an admin line or a violation ends what the core takes."""
    side = Side()
    client = side.sessions[0]
    core = side.d.core
    side.d.send(client, P.SUBMIT_JOB_BG, b"f", b"", b"first")  # known from now on
    assert side.d.received(client) == [(P.JOB_CREATED, (b"H:test:1",))]
    plain = [Packet(P.SUBMIT_JOB_BG, (b"f", b"", b"x"), True) for _ in range(5)]
    tail: list[Event] = [Packet(P.SUBMIT_JOB_BG, (b"f", b"u", b"x"), True)]
    assert core._submit_run(client, [*plain, *tail], 0) == 5
    assert side.d.received(client) == [(P.JOB_CREATED, (b"H:test:%d" % n,)) for n in range(2, 7)]
    assert core.packed_jobs == 6 and core.functions[b"f"].waiting[1] == 6
    assert core._submit_run(client, tail, 0) == 0  # not plain: left to _submit
    stop: list[Event] = [plain[0], AdminLine(b"status"), plain[1], Violation(b"", "bad magic")]
    assert core.handle_packets(client, stop) == 1
    assert core.handle_packets(client, stop, 2) == 3
    assert core.packed_jobs == 8


def test_a_run_stops_where_the_queue_is_full() -> None:
    side = Side()
    client, admin = side.sessions[0], side.sessions[4]
    side.d.core.handle_admin(admin, AdminLine(b"maxqueue f 2"))
    plain = [Packet(P.SUBMIT_JOB_BG, (b"f", b"", b"x"), True) for _ in range(3)]
    side.d.core.handle_packets(client, plain)
    assert side.d.received(client) == [
        (P.JOB_CREATED, (b"H:test:1",)),
        (P.JOB_CREATED, (b"H:test:2",)),
        (P.ERROR, (b"QUEUE_ERROR", b"Job queue is full")),
    ]
