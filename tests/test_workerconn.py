"""The worker connection state machine, fed server bytes whole, split at every byte, and byte by
byte: the same events, the same state and the same bytes to send, whatever the split."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from gearsql._workerconn import (
    Assigned,
    NoJob,
    ProtocolBroken,
    ServerErrorReply,
    WakeUp,
    WorkerConnection,
    WorkerEvent,
    WorkerState,
)
from gearsql.protocol import LocalProtocolError, pack_request, pack_response
from gearsql.protocol import PacketType as P

Outcome = tuple[list[WorkerEvent], WorkerState, bytes]


def splits(data: bytes) -> Iterator[list[bytes]]:
    """``data`` whole, cut in two at every position, and byte by byte."""
    yield [data]
    for cut in range(len(data) + 1):
        yield [data[:cut], data[cut:]]
    yield [data[n : n + 1] for n in range(len(data))]


def run(setup: Callable[[WorkerConnection], None], chunks: list[bytes]) -> Outcome:
    conn = WorkerConnection()
    setup(conn)
    conn.data_to_send()
    events: list[WorkerEvent] = []
    for chunk in chunks:
        events.extend(conn.receive_data(chunk))
    return events, conn.state, conn.data_to_send()


def assert_same_everywhere(setup: Callable[[WorkerConnection], None], data: bytes) -> Outcome:
    outcomes = [run(setup, chunks) for chunks in splits(data)]
    for outcome in outcomes[1:]:
        assert outcome == outcomes[0]
    return outcomes[0]


def grabbing(conn: WorkerConnection) -> None:
    conn.can_do(b"reverse")
    conn.grab()


def test_job_assign_uniq_is_identical_at_every_split_point() -> None:
    data = pack_response(P.JOB_ASSIGN_UNIQ, b"H:1", b"reverse", b"u-1", b"pay\0load")
    events, state, out = assert_same_everywhere(grabbing, data)
    assert events == [Assigned(b"H:1", b"reverse", b"u-1", b"pay\0load")]
    assert state is WorkerState.IDLE
    assert out == b""


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (
            pack_response(P.JOB_ASSIGN, b"H:2", b"reverse", b"data"),
            Assigned(b"H:2", b"reverse", b"", b"data"),
        ),
        (
            pack_response(P.JOB_ASSIGN_ALL, b"H:3", b"reverse", b"u", b"reducer", b"data"),
            Assigned(b"H:3", b"reverse", b"u", b"data"),
        ),
    ],
    ids=["JOB_ASSIGN", "JOB_ASSIGN_ALL"],
)
def test_other_assign_packets_at_every_split_point(packet: bytes, expected: Assigned) -> None:
    events, state, _ = assert_same_everywhere(grabbing, packet)
    assert events == [expected]
    assert state is WorkerState.IDLE


def test_no_job_then_noop_sleeps_and_wakes_at_every_split_point() -> None:
    data = pack_response(P.NO_JOB) + pack_response(P.NOOP)
    events, state, out = assert_same_everywhere(grabbing, data)
    assert events == [NoJob(), WakeUp()]
    assert state is WorkerState.IDLE
    assert out == pack_request(P.PRE_SLEEP)


def test_no_job_alone_leaves_the_connection_sleeping() -> None:
    events, state, out = assert_same_everywhere(grabbing, pack_response(P.NO_JOB))
    assert events == [NoJob()]
    assert state is WorkerState.SLEEPING
    assert out == pack_request(P.PRE_SLEEP)


def test_stray_noops_while_awake_are_harmless() -> None:
    data = pack_response(P.NOOP) + pack_response(P.NOOP)
    events, state, out = assert_same_everywhere(lambda conn: None, data)
    assert events == [WakeUp(), WakeUp()]
    assert (state, out) == (WorkerState.IDLE, b"")
    events, state, _ = assert_same_everywhere(grabbing, pack_response(P.NOOP))
    assert (events, state) == ([WakeUp()], WorkerState.GRABBING)


def test_error_refuses_the_grab_and_the_connection_goes_on() -> None:
    data = pack_response(P.ERROR, b"ERR", b"busy") + pack_response(P.NOOP)
    events, state, out = assert_same_everywhere(grabbing, data)
    assert events == [ServerErrorReply("ERR", "busy"), WakeUp()]
    assert state is WorkerState.IDLE
    assert out == b""


@pytest.mark.parametrize(
    ("setup", "data", "reason"),
    [
        (lambda conn: None, pack_response(P.NO_JOB), "unexpected NO_JOB while idle"),
        (
            lambda conn: None,
            pack_response(P.JOB_ASSIGN_UNIQ, b"H", b"f", b"u", b"d"),
            "unexpected JOB_ASSIGN_UNIQ while idle",
        ),
        (grabbing, pack_response(P.JOB_CREATED, b"H:1"), "unexpected JOB_CREATED"),
        (grabbing, pack_request(P.NO_JOB), "request magic"),
        (grabbing, b"\0RES\0\0\0\xff\0\0\0\0", "bad data"),
        (grabbing, b"workers\n", "a text line"),
    ],
    ids=["no-job-unasked", "assign-unasked", "client-reply", "request-magic", "bad-type", "text"],
)
def test_a_protocol_violation_breaks_the_connection_at_every_split_point(
    setup: Callable[[WorkerConnection], None], data: bytes, reason: str
) -> None:
    trailing = pack_response(P.NOOP)
    events, _, out = assert_same_everywhere(setup, data + trailing)
    assert len(events) == 1 and isinstance(events[0], ProtocolBroken), events
    assert reason in events[0].reason
    assert out == b""


def test_nothing_is_delivered_after_the_connection_broke() -> None:
    conn = WorkerConnection()
    assert isinstance(conn.receive_data(pack_response(P.NO_JOB))[0], ProtocolBroken)
    assert conn.receive_data(pack_response(P.NOOP)) == []


def test_a_whole_job_cycle_sends_exactly_the_expected_bytes() -> None:
    conn = WorkerConnection()
    conn.can_do(b"reverse")
    conn.can_do(b"slow", timeout=2.5)
    conn.set_client_id(b"w1")
    conn.grab()
    assert conn.data_to_send() == (
        pack_request(P.CAN_DO, b"reverse")
        + pack_request(P.CAN_DO_TIMEOUT, b"slow", b"2500")
        + pack_request(P.SET_CLIENT_ID, b"w1")
        + pack_request(P.GRAB_JOB_UNIQ)
    )
    [job] = conn.receive_data(pack_response(P.JOB_ASSIGN_UNIQ, b"H:1", b"reverse", b"", b"ab"))
    assert isinstance(job, Assigned)
    conn.work_data(job.handle, b"a")
    conn.work_warning(job.handle, b"w")
    conn.work_status(job.handle, 1, 2)
    conn.work_complete(job.handle, b"ba")
    conn.work_fail(b"H:2")
    conn.work_exception(b"H:3", b"boom")
    assert conn.data_to_send() == (
        pack_request(P.WORK_DATA, b"H:1", b"a")
        + pack_request(P.WORK_WARNING, b"H:1", b"w")
        + pack_request(P.WORK_STATUS, b"H:1", b"1", b"2")
        + pack_request(P.WORK_COMPLETE, b"H:1", b"ba")
        + pack_request(P.WORK_FAIL, b"H:2")
        + pack_request(P.WORK_EXCEPTION, b"H:3", b"boom")
    )


def test_grab_is_refused_unless_idle() -> None:
    conn = WorkerConnection()
    conn.grab()
    with pytest.raises(LocalProtocolError):
        conn.grab()
    conn.receive_data(pack_response(P.NO_JOB))
    with pytest.raises(LocalProtocolError):
        conn.grab()
