"""The client connection state machine, fed server bytes whole, split at every byte, and byte by
byte: replies match requests first in first out, WORK_* packets go by handle."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gearsql._clientconn import (
    Answer,
    ClientConnection,
    ErrorReply,
    JobCreated,
    JobDone,
    JobUpdate,
    Priority,
    ProtocolBroken,
)
from gearsql.protocol import LocalProtocolError, Packet, pack_request, pack_response
from gearsql.protocol import PacketType as P


def pieces_whole(data: bytes) -> Iterator[list[bytes]]:
    yield [data]


def pieces_split_everywhere(data: bytes) -> Iterator[list[bytes]]:
    for cut in range(len(data) + 1):
        yield [data[:cut], data[cut:]]


def pieces_byte_by_byte(data: bytes) -> Iterator[list[bytes]]:
    yield [data[n : n + 1] for n in range(len(data))]


def feed(conn: ClientConnection[Any], chunks: list[bytes]) -> list[Any]:
    events: list[Any] = []
    for chunk in chunks:
        events.extend(conn.receive_data(chunk))
    return events


def every_split(setup: Callable[[ClientConnection[str]], None], data: bytes) -> list[list[Any]]:
    """The event sequence of a fresh connection (prepared by ``setup``) fed ``data`` in every
    way; all of them, so the caller can check they are identical."""
    sequences = []
    for pieces in (pieces_whole, pieces_split_everywhere, pieces_byte_by_byte):
        for chunks in pieces(data):
            conn: ClientConnection[str] = ClientConnection()
            setup(conn)
            conn.data_to_send()
            sequences.append(feed(conn, chunks))
    return sequences


def assert_same_everywhere(
    setup: Callable[[ClientConnection[str]], None], data: bytes
) -> list[Any]:
    sequences = every_split(setup, data)
    for sequence in sequences[1:]:
        assert sequence == sequences[0]
    return sequences[0]


def test_foreground_job_events_are_identical_at_every_split_point() -> None:
    def setup(conn: ClientConnection[str]) -> None:
        conn.submit("job", b"reverse", b"", b"stressed")

    data = (
        pack_response(P.JOB_CREATED, b"H:1")
        + pack_response(P.WORK_DATA, b"H:1", b"part\0with nul")
        + pack_response(P.WORK_STATUS, b"H:1", b"1", b"2")
        + pack_response(P.WORK_WARNING, b"H:1", b"careful")
        + pack_response(P.WORK_COMPLETE, b"H:1", b"desserts")
    )
    events = assert_same_everywhere(setup, data)
    assert events == [
        JobCreated("job", b"H:1"),
        JobUpdate("job", Packet(P.WORK_DATA, (b"H:1", b"part\0with nul"), False)),
        JobUpdate("job", Packet(P.WORK_STATUS, (b"H:1", b"1", b"2"), False)),
        JobUpdate("job", Packet(P.WORK_WARNING, (b"H:1", b"careful"), False)),
        JobDone("job", Packet(P.WORK_COMPLETE, (b"H:1", b"desserts"), False)),
    ]


def test_replies_without_ids_are_matched_first_in_first_out() -> None:
    def setup(conn: ClientConnection[str]) -> None:
        conn.submit("first", b"f", b"", b"1")
        conn.get_status("status", b"H:9")
        conn.submit("second", b"f", b"u2", b"2", priority=Priority.HIGH, background=True)
        conn.echo("echo", b"ping")
        conn.option("option", b"exceptions")
        conn.get_status_unique("unique", b"u2")
        conn.submit("refused", b"f", b"", b"3")

    data = (
        pack_response(P.JOB_CREATED, b"H:1")
        + pack_response(P.STATUS_RES, b"H:9", b"0", b"0", b"0", b"0")
        + pack_response(P.JOB_CREATED, b"H:2")
        + pack_response(P.ECHO_RES, b"ping")
        + pack_response(P.OPTION_RES, b"exceptions")
        + pack_response(P.STATUS_RES_UNIQUE, b"u2", b"1", b"0", b"0", b"0", b"0")
        + pack_response(P.ERROR, b"QUEUE_ERROR", b"queue full")
    )
    events = assert_same_everywhere(setup, data)
    assert events == [
        JobCreated("first", b"H:1"),
        Answer("status", Packet(P.STATUS_RES, (b"H:9", b"0", b"0", b"0", b"0"), False)),
        JobCreated("second", b"H:2"),
        Answer("echo", Packet(P.ECHO_RES, (b"ping",), False)),
        Answer("option", Packet(P.OPTION_RES, (b"exceptions",), False)),
        Answer("unique", Packet(P.STATUS_RES_UNIQUE, (b"u2", b"1", b"0", b"0", b"0", b"0"), False)),
        ErrorReply("refused", "QUEUE_ERROR", "queue full"),
    ]


def test_error_answers_the_oldest_request_and_the_next_reply_the_one_after() -> None:
    def setup(conn: ClientConnection[str]) -> None:
        conn.submit("a", b"f", b"", b"1")
        conn.submit("b", b"f", b"", b"2")

    data = pack_response(P.ERROR, b"ERR", b"no") + pack_response(P.JOB_CREATED, b"H:2")
    assert assert_same_everywhere(setup, data) == [
        ErrorReply("a", "ERR", "no"),
        JobCreated("b", b"H:2"),
    ]


def test_error_with_nothing_waiting_has_no_token() -> None:
    data = pack_response(P.ERROR, b"ERR", b"spontaneous")
    assert assert_same_everywhere(lambda conn: None, data) == [
        ErrorReply(None, "ERR", "spontaneous")
    ]


def test_work_packets_are_routed_by_handle_whatever_the_order() -> None:
    def setup(conn: ClientConnection[str]) -> None:
        conn.submit("one", b"f", b"", b"1")
        conn.submit("two", b"f", b"", b"2")
        conn.submit("three", b"f", b"", b"3")

    data = (
        pack_response(P.JOB_CREATED, b"H:1")
        + pack_response(P.JOB_CREATED, b"H:2")
        + pack_response(P.JOB_CREATED, b"H:3")
        + pack_response(P.WORK_COMPLETE, b"H:3", b"third")
        + pack_response(P.WORK_DATA, b"H:1", b"d1")
        + pack_response(P.WORK_FAIL, b"H:2")
        + pack_response(P.WORK_EXCEPTION, b"H:1", b"boom")
        # A WORK_* packet for a handle nobody waits for is dropped.
        + pack_response(P.WORK_COMPLETE, b"H:unknown", b"ignored")
    )
    events = assert_same_everywhere(setup, data)
    assert events == [
        JobCreated("one", b"H:1"),
        JobCreated("two", b"H:2"),
        JobCreated("three", b"H:3"),
        JobDone("three", Packet(P.WORK_COMPLETE, (b"H:3", b"third"), False)),
        JobUpdate("one", Packet(P.WORK_DATA, (b"H:1", b"d1"), False)),
        JobDone("two", Packet(P.WORK_FAIL, (b"H:2",), False)),
        JobDone("one", Packet(P.WORK_EXCEPTION, (b"H:1", b"boom"), False)),
    ]


def test_work_fail_with_a_trailing_nul_after_the_handle_ends_the_job() -> None:
    def setup(conn: ClientConnection[str]) -> None:
        conn.submit("job", b"f", b"", b"1")

    # WORK_FAIL has one argument, so the stray NUL is part of it on the wire.
    data = pack_response(P.JOB_CREATED, b"H:1") + pack_response(P.WORK_FAIL, b"H:1\0")
    events = assert_same_everywhere(setup, data)
    assert events[1] == JobDone("job", Packet(P.WORK_FAIL, (b"H:1\0",), False))


def test_coalesced_submissions_on_one_connection_both_get_the_result() -> None:
    def setup(conn: ClientConnection[str]) -> None:
        conn.submit("first", b"f", b"same", b"1")
        conn.submit("second", b"f", b"same", b"1")

    data = (
        pack_response(P.JOB_CREATED, b"H:1")
        + pack_response(P.JOB_CREATED, b"H:1")
        + pack_response(P.WORK_COMPLETE, b"H:1", b"r")
    )
    done = Packet(P.WORK_COMPLETE, (b"H:1", b"r"), False)
    assert assert_same_everywhere(setup, data)[2:] == [
        JobDone("first", done),
        JobDone("second", done),
    ]


def test_background_jobs_get_no_work_packets() -> None:
    def setup(conn: ClientConnection[str]) -> None:
        conn.submit("bg", b"f", b"", b"1", background=True)

    data = pack_response(P.JOB_CREATED, b"H:1") + pack_response(P.WORK_COMPLETE, b"H:1", b"r")
    assert assert_same_everywhere(setup, data) == [JobCreated("bg", b"H:1")]


def test_noop_is_ignored() -> None:
    def setup(conn: ClientConnection[str]) -> None:
        conn.echo("echo", b"x")

    data = pack_response(P.NOOP) + pack_response(P.ECHO_RES, b"x") + pack_response(P.NOOP)
    assert assert_same_everywhere(setup, data) == [
        Answer("echo", Packet(P.ECHO_RES, (b"x",), False))
    ]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (pack_response(P.STATUS_RES, b"H", b"0", b"0", b"0", b"0"), "does not answer"),
        (pack_response(P.ECHO_RES, b"x") + pack_response(P.ECHO_RES, b"y"), "unexpected ECHO_RES"),
        (pack_request(P.JOB_CREATED, b"H:1"), "request magic"),
        (b"\0RES\0\0\0\xff\0\0\0\0", "bad data"),
        (b"status\n", "text line"),
    ],
    ids=["wrong-reply-type", "reply-with-nothing-waiting", "request-magic", "bad-type", "text"],
)
def test_a_protocol_violation_breaks_the_connection_at_every_split_point(
    data: bytes, reason: str
) -> None:
    trailing = pack_response(P.WORK_COMPLETE, b"H:1", b"never seen")

    def prepare(conn: ClientConnection[str]) -> None:
        # A running job and one ECHO waiting: the bytes under test come after that.
        conn.submit("job", b"f", b"", b"1")
        conn.data_to_send()
        conn.receive_data(pack_response(P.JOB_CREATED, b"H:1"))
        conn.echo("echo", b"x")

    events = assert_same_everywhere(prepare, data + trailing)
    assert isinstance(events[-1], ProtocolBroken), events
    assert reason in events[-1].reason
    assert not any(isinstance(e, JobDone) for e in events)


def test_nothing_is_delivered_after_the_connection_broke() -> None:
    conn: ClientConnection[str] = ClientConnection()
    conn.submit("job", b"f", b"", b"1")
    events = conn.receive_data(pack_request(P.JOB_CREATED, b"H:1"))
    assert isinstance(events[-1], ProtocolBroken)
    assert conn.receive_data(pack_response(P.JOB_CREATED, b"H:1")) == []


def test_connection_lost_returns_every_waiting_token_oldest_request_first() -> None:
    conn: ClientConnection[str] = ClientConnection()
    conn.submit("running", b"f", b"", b"1")
    conn.submit("bg", b"f", b"", b"2", background=True)
    conn.submit("created-later", b"f", b"", b"3")
    conn.get_status("status", b"H:9")
    conn.receive_data(pack_response(P.JOB_CREATED, b"H:1") + pack_response(P.JOB_CREATED, b"H:2"))
    assert conn.waiting == 3  # two replies outstanding and one running foreground job
    assert conn.connection_lost() == ["created-later", "status", "running"]
    assert conn.waiting == 0
    assert conn.receive_data(pack_response(P.JOB_CREATED, b"H:3")) == []


def test_forgotten_tokens_get_no_more_work_packets() -> None:
    conn: ClientConnection[str] = ClientConnection()
    conn.submit("job", b"f", b"", b"1")
    conn.receive_data(pack_response(P.JOB_CREATED, b"H:1"))
    conn.forget(b"H:1", "job")
    assert conn.receive_data(pack_response(P.WORK_COMPLETE, b"H:1", b"r")) == []
    assert conn.waiting == 0


def test_submit_frames_exactly_as_pack_request() -> None:
    conn: ClientConnection[str] = ClientConnection()
    expected = b""
    for priority in Priority:
        for background in (False, True):
            conn.submit("t", b"fn", b"uniq", b"da\0ta", priority=priority, background=background)
            packet_type = {
                (Priority.HIGH, False): P.SUBMIT_JOB_HIGH,
                (Priority.NORMAL, False): P.SUBMIT_JOB,
                (Priority.LOW, False): P.SUBMIT_JOB_LOW,
                (Priority.HIGH, True): P.SUBMIT_JOB_HIGH_BG,
                (Priority.NORMAL, True): P.SUBMIT_JOB_BG,
                (Priority.LOW, True): P.SUBMIT_JOB_LOW_BG,
            }[priority, background]
            expected += pack_request(packet_type, b"fn", b"uniq", b"da\0ta")
    conn.submit("e", b"fn", b"u", b"d", background=True, epoch=1234)
    expected += pack_request(P.SUBMIT_JOB_EPOCH, b"fn", b"u", b"1234", b"d")
    assert conn.data_to_send() == expected
    assert conn.data_to_send() == b""


@pytest.mark.parametrize(("function", "unique"), [(b"f\0n", b""), (b"fn", b"u\0")])
def test_submit_refuses_nul_in_function_or_unique(function: bytes, unique: bytes) -> None:
    conn: ClientConnection[str] = ClientConnection()
    with pytest.raises(LocalProtocolError):
        conn.submit("t", function, unique, b"data")
    assert conn.data_to_send() == b""
    assert conn.waiting == 0
