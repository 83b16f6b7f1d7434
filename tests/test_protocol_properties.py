"""Hypothesis properties of the codec: any chunking, any garbage, bounded buffering."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gearsql.protocol import (
    ARGUMENTS,
    HEADER,
    MAX_ADMIN_LINE,
    REQ,
    RES,
    AdminLine,
    Event,
    LocalProtocolError,
    Packet,
    PacketType,
    Parser,
    Violation,
    pack,
)

FAST = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

no_nul = st.binary(max_size=24).map(lambda b: b.replace(b"\0", b""))
last_arg = st.binary(max_size=200) | st.lists(st.sampled_from([b"\0", b"x", b"\n"])).map(b"".join)


@st.composite
def packets(draw: st.DrawFn) -> tuple[bytes, Event]:
    type_ = draw(st.sampled_from(list(PacketType)))
    argc = len(ARGUMENTS[type_])
    args = tuple(draw(no_nul) for _ in range(argc - 1)) + ((draw(last_arg),) if argc else ())
    magic = draw(st.sampled_from([REQ, RES]))
    return pack(type_, args, magic), Packet(type_, args, request=magic == REQ)


@st.composite
def admin_lines(draw: st.DrawFn) -> tuple[bytes, Event]:
    line = draw(st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"").rstrip(b"\r")))
    if line[:1] == b"\0":
        line = b"x" + line
    if b" HTTP/" in line:
        line = line.replace(b" HTTP/", b" http/")
    ending = draw(st.sampled_from([b"\n", b"\r\n"]))
    return line + ending, AdminLine(line)


def split_at(data: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted(points), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def chunkings(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """``data`` cut at random positions; repeated positions give empty chunks."""
    return st.lists(st.integers(0, len(data)), max_size=30).map(lambda p: split_at(data, p))


def feed_checked(parser: Parser, chunks: list[bytes], bound: int) -> list[Event]:
    """Feed like a server: stop at a Violation, check the buffer bound after every feed."""
    events: list[Event] = []
    for chunk in chunks:
        new = parser.feed(chunk)
        assert parser.buffered <= bound
        assert not any(isinstance(e, Violation) for e in new[:-1])
        events += new
        if events and isinstance(events[-1], Violation):
            assert parser.buffered == 0
            with pytest.raises(LocalProtocolError):
                parser.feed(b"\0RES")
            break
    return events


@FAST
@given(items=st.lists(packets() | admin_lines(), max_size=25), data=st.data())
def test_packets_and_admin_lines_survive_any_chunking(
    items: list[tuple[bytes, Event]], data: st.DataObject
) -> None:
    stream = b"".join(raw for raw, _ in items)
    expected = [event for _, event in items]
    assert Parser().feed(stream) == expected
    parser = Parser()
    chunks = data.draw(chunkings(stream))
    assert feed_checked(parser, chunks, parser.max_packet_size + HEADER) == expected
    assert parser.buffered == 0


HEADER_STRUCT = struct.Struct(">4sII")


def garbage(max_size: int) -> st.SearchStrategy[bytes]:
    """Byte soup with enough structure to reach every branch of the parser."""
    fragment = st.one_of(
        st.binary(max_size=40),
        st.sampled_from([REQ, RES, b"\0", b"\n", b"\r\n", b"\0XYZ", b"GET / HTTP/1.1", b"status"]),
        st.builds(
            HEADER_STRUCT.pack,
            st.sampled_from([REQ, RES, b"\0REX"]),
            st.integers(0, 44) | st.sampled_from([9999, 0xFFFFFFFF]),
            st.integers(0, max_size + 2) | st.just(0xFFFFFFFF),
        ),
        st.builds(
            lambda type_, body: HEADER_STRUCT.pack(REQ, type_, len(body)) + body,
            st.integers(1, 42),
            st.binary(max_size=40),
        ),
        st.builds(lambda b, n: bytes([b]) * n, st.integers(0, 255), st.integers(0, max_size + 40)),
        packets().map(lambda p: p[0]),
    )
    return st.lists(fragment, max_size=30).map(b"".join)


@FAST
@given(
    max_packet_size=st.sampled_from([MAX_ADMIN_LINE - HEADER, MAX_ADMIN_LINE, 3 * MAX_ADMIN_LINE]),
    data=st.data(),
)
def test_garbage_yields_events_and_at_most_one_final_violation_and_buffers_little(
    max_packet_size: int, data: st.DataObject
) -> None:
    soup = data.draw(garbage(max_packet_size))
    whole = Parser(max_packet_size=max_packet_size)
    bound = max_packet_size + HEADER
    expected = feed_checked(whole, [soup], bound)
    assert all(isinstance(e, (Packet, AdminLine)) for e in expected[:-1])
    chunks = data.draw(chunkings(soup))
    assert feed_checked(Parser(max_packet_size=max_packet_size), chunks, bound) == expected


@FAST
@given(max_packet_size=st.integers(0, 64), data=st.data())
def test_small_maximum_bounds_packets_and_admin_lines_by_their_own_limits(
    max_packet_size: int, data: st.DataObject
) -> None:
    soup = data.draw(garbage(max_packet_size))
    chunks = data.draw(chunkings(soup))
    # An admin line may be held up to MAX_ADMIN_LINE bytes even when packets are capped lower.
    bound = max(max_packet_size + HEADER, MAX_ADMIN_LINE)
    events = feed_checked(Parser(max_packet_size=max_packet_size), chunks, bound)
    for event in events:
        if isinstance(event, Packet):
            assert len(b"\0".join(event.args)) <= max_packet_size
