"""The sans-IO codec: framing every packet type, chunking, violations, limits and admin lines."""

from __future__ import annotations

import struct

import pytest

from gearsql.protocol import (
    ARGUMENTS,
    DEFAULT_MAX_PACKET_SIZE,
    HEADER,
    MAX_ADMIN_LINE,
    MAX_FUNCTION_NAME,
    MAX_UNIQUE,
    REQ,
    RES,
    SUBMIT_KINDS,
    SUBMIT_TYPES,
    AdminLine,
    ArgumentProblem,
    Event,
    LocalProtocolError,
    Packet,
    PacketType,
    Parser,
    Priority,
    Violation,
    check_function_name,
    check_unique,
    pack,
    pack_request,
    pack_response,
    split_admin_words,
)
from gearsql.protocol import PacketType as P

ALL_TYPES = list(PacketType)
TYPES_WITH_ARGS = [t for t in ALL_TYPES if ARGUMENTS[t]]
TYPES_WITH_SEPARATORS = [t for t in ALL_TYPES if len(ARGUMENTS[t]) >= 2]


def header(magic: bytes, type_: int, size: int) -> bytes:
    return struct.pack(">4sII", magic, type_, size)


def sample_args(type_: PacketType) -> tuple[bytes, ...]:
    """Distinct arguments for ``type_``; the last one starts and ends with NUL bytes."""
    names = ARGUMENTS[type_]
    if not names:
        return ()
    return (*(name.encode() for name in names[:-1]), b"\0" + names[-1].encode() + b"\0\0")


def feed_all(parser: Parser, chunks: list[bytes]) -> list[Event]:
    """Feed ``chunks`` in order, as a server would, stopping once the peer violated the protocol."""
    events: list[Event] = []
    for chunk in chunks:
        events += parser.feed(chunk)
        if events and isinstance(events[-1], Violation):
            break
    return events


def feed_split(data: bytes, at: int) -> list[Event]:
    return feed_all(Parser(), [data[:at], data[at:]])


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# ---------------------------------------------------------------------------- the type table


def test_packet_types_are_1_to_42_without_the_unused_5() -> None:
    assert [int(t) for t in ALL_TYPES] == [n for n in range(1, 43) if n != 5]


def test_every_packet_type_has_an_argument_list_of_at_most_eight() -> None:
    assert set(ARGUMENTS) == set(ALL_TYPES)
    assert all(len(names) <= 8 for names in ARGUMENTS.values())


def test_header_layout_matches_the_protocol_document_example() -> None:
    # PROTOCOL: client `SUBMIT_JOB reverse\0\0test`, answered with `JOB_CREATED H:lap:1`.
    assert pack_request(P.SUBMIT_JOB, b"reverse", b"", b"test") == (
        b"\0REQ" + b"\x00\x00\x00\x07" + b"\x00\x00\x00\x0d" + b"reverse\0\0test"
    )
    assert pack_response(P.JOB_CREATED, b"H:lap:1") == (
        b"\0RES" + b"\x00\x00\x00\x08" + b"\x00\x00\x00\x07" + b"H:lap:1"
    )
    assert pack_response(P.NOOP) == b"\0RES\x00\x00\x00\x06\x00\x00\x00\x00"


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("magic", [REQ, RES], ids=["REQ", "RES"])
@pytest.mark.parametrize("type_", ALL_TYPES, ids=lambda t: t.name)
def test_every_packet_type_round_trips_with_nul_bytes_in_its_last_argument(
    type_: PacketType, magic: bytes
) -> None:
    args = sample_args(type_)
    data = pack(type_, args, magic)
    assert data[:4] == magic
    assert len(data) == HEADER + struct.unpack(">I", data[8:12])[0]
    assert Parser().feed(data) == [Packet(type_, args, request=magic == REQ)]


@pytest.mark.parametrize("type_", TYPES_WITH_ARGS, ids=lambda t: t.name)
def test_every_packet_type_round_trips_with_all_arguments_empty(type_: PacketType) -> None:
    args = (b"",) * len(ARGUMENTS[type_])
    data = pack_request(type_, *args)
    assert len(data) == HEADER + len(args) - 1
    assert Parser().feed(data) == [Packet(type_, args, request=True)]


@pytest.mark.parametrize("type_", ALL_TYPES, ids=lambda t: t.name)
def test_pack_request_and_pack_response_differ_only_in_magic(type_: PacketType) -> None:
    args = sample_args(type_)
    assert pack_request(type_, *args) == pack(type_, args, REQ)
    assert pack_response(type_, *args) == pack(type_, args, RES)
    assert pack(type_, list(args)) == pack_response(type_, *args)


def test_a_parser_without_expected_magic_reports_a_response_packet_as_such() -> None:
    # The server must see it to answer ERROR INVALID_MAGIC as gearmand does.
    events = Parser().feed(pack_response(P.ECHO_REQ, b"hi"))
    assert events == [Packet(P.ECHO_REQ, (b"hi",), request=False)]


def test_a_parser_for_responses_refuses_a_request_packet() -> None:
    parser = Parser(expect_magic=RES)
    events = parser.feed(pack_response(P.NOOP) + pack_request(P.NOOP) + pack_response(P.NOOP))
    assert events == [
        Packet(P.NOOP, (), request=False),
        Violation(b"", "request magic where response magic was expected"),
    ]
    with pytest.raises(LocalProtocolError):
        parser.feed(pack_response(P.NOOP))


def test_a_parser_for_requests_refuses_a_response_packet_at_any_split() -> None:
    data = pack_request(P.ECHO_REQ, b"hi") + pack_response(P.ECHO_RES, b"hi")
    for split in range(len(data) + 1):
        parser = Parser(expect_magic=REQ)
        events = parser.feed(data[:split])
        if not any(isinstance(event, Violation) for event in events):
            events += parser.feed(data[split:])
        assert events == [
            Packet(P.ECHO_REQ, (b"hi",)),
            Violation(b"", "response magic where request magic was expected"),
        ], split


@pytest.mark.parametrize(
    ("type_", "index"),
    [(t, i) for t in TYPES_WITH_SEPARATORS for i in range(len(ARGUMENTS[t]) - 1)],
    ids=lambda v: v.name if isinstance(v, PacketType) else str(v),
)
def test_pack_refuses_a_nul_byte_in_any_argument_but_the_last(
    type_: PacketType, index: int
) -> None:
    args = list(sample_args(type_))
    args[index] = b"bad\0arg"
    with pytest.raises(LocalProtocolError, match="only the last argument"):
        pack_request(type_, *args)


@pytest.mark.parametrize("type_", ALL_TYPES, ids=lambda t: t.name)
def test_pack_refuses_one_argument_too_many(type_: PacketType) -> None:
    with pytest.raises(LocalProtocolError, match="arguments"):
        pack_request(type_, *sample_args(type_), b"extra")


@pytest.mark.parametrize("type_", TYPES_WITH_ARGS, ids=lambda t: t.name)
def test_pack_refuses_one_argument_too_few(type_: PacketType) -> None:
    with pytest.raises(LocalProtocolError, match="arguments"):
        pack_request(type_, *sample_args(type_)[:-1])


@pytest.mark.parametrize("type_", [0, 5, 43, -1, 9999])
def test_pack_refuses_a_number_that_is_no_packet_type(type_: int) -> None:
    with pytest.raises(LocalProtocolError, match="unknown packet type"):
        pack(type_, ())


def test_only_the_last_argument_absorbs_surplus_nul_bytes() -> None:
    body = b"handle\0func\0uniq\0data\0with\0nuls"
    events = Parser().feed(header(RES, P.JOB_ASSIGN_UNIQ, len(body)) + body)
    assert events == [
        Packet(P.JOB_ASSIGN_UNIQ, (b"handle", b"func", b"uniq", b"data\0with\0nuls"), False)
    ]


def test_a_single_argument_packet_keeps_its_nul_bytes() -> None:
    assert Parser().feed(pack_request(P.ECHO_REQ, b"\0a\0b\0")) == [
        Packet(P.ECHO_REQ, (b"\0a\0b\0",))
    ]


# ---------------------------------------------------------------------------- chunking

MIXED: list[tuple[bytes, Event]] = []
for _n, _type in enumerate(ALL_TYPES):
    _magic = REQ if _n % 2 else RES
    _args = sample_args(_type)
    MIXED.append((pack(_type, _args, _magic), Packet(_type, _args, request=_magic == REQ)))
    if _n % 5 == 0:
        MIXED.append((b"status\r\n", AdminLine(b"status")))
MIXED += [
    (b"workers\n", AdminLine(b"workers")),
    (pack_request(P.SUBMIT_JOB, b"f", b"", b""), Packet(P.SUBMIT_JOB, (b"f", b"", b""))),
    (b"maxqueue  f 1 2 3\r\n", AdminLine(b"maxqueue  f 1 2 3")),
    (b"\n", AdminLine(b"")),
    (b"\r\n", AdminLine(b"")),
    (b"show\0jobs\n", AdminLine(b"show\0jobs")),
    (pack_request(P.ECHO_REQ, b"\n\r\n"), Packet(P.ECHO_REQ, (b"\n\r\n",))),
    (b"GETPID\n", AdminLine(b"GETPID")),
    (pack_request(P.GRAB_JOB), Packet(P.GRAB_JOB, ())),
    (pack_request(P.PRE_SLEEP), Packet(P.PRE_SLEEP, ())),
]
STREAM = b"".join(data for data, _ in MIXED)
STREAM_EVENTS = [event for _, event in MIXED]


def test_a_mixed_stream_fed_whole_yields_every_packet_and_line_in_order() -> None:
    parser = Parser()
    assert parser.feed(STREAM) == STREAM_EVENTS
    assert parser.buffered == 0


def test_a_mixed_stream_split_at_every_byte_position_yields_the_same_events() -> None:
    for at in range(len(STREAM) + 1):
        assert feed_split(STREAM, at) == STREAM_EVENTS, f"split at {at}"


def test_a_mixed_stream_fed_byte_by_byte_yields_the_same_events() -> None:
    parser = Parser()
    assert feed_all(parser, byte_by_byte(STREAM)) == STREAM_EVENTS
    assert parser.buffered == 0


def test_an_incomplete_packet_is_held_until_its_last_byte_arrives() -> None:
    data = pack_request(P.WORK_COMPLETE, b"H:x:1", b"result")
    parser = Parser()
    assert parser.feed(data[:5]) == []
    assert parser.buffered == 5
    assert parser.feed(data[5:-1]) == []
    assert parser.buffered == len(data) - 1
    assert parser.feed(b"") == []
    assert parser.feed(data[-1:] + b"sta") == [Packet(P.WORK_COMPLETE, (b"H:x:1", b"result"))]
    assert parser.buffered == 3
    assert parser.feed(b"tus\n") == [AdminLine(b"status")]
    assert parser.buffered == 0


# ---------------------------------------------------------------------------- violations

TOO_LARGE = "packet too large (limit %d bytes)"

PREFIX = pack_request(P.CAN_DO, b"reverse") + b"status\n"
PREFIX_EVENTS: list[Event] = [Packet(P.CAN_DO, (b"reverse",)), AdminLine(b"status")]

BAD_INPUTS = {
    "bad magic": (header(b"\0XYZ", P.ECHO_REQ, 2) + b"hi", Violation(b"", "bad magic")),
    "unknown type 0": (header(REQ, 0, 0), Violation(b"", "unknown packet type 0")),
    "unknown type 43": (header(RES, 43, 1) + b"x", Violation(b"", "unknown packet type 43")),
    "huge length": (
        header(REQ, P.SUBMIT_JOB, 0xFFFFFFFF),
        Violation(b"ARGUMENT_TOO_LARGE", TOO_LARGE % DEFAULT_MAX_PACKET_SIZE),
    ),
    "missing separators": (
        header(REQ, P.SUBMIT_JOB, 7) + b"reverse",
        Violation(b"INVALID_PACKET", "SUBMIT_JOB needs 3 arguments"),
    ),
    "long admin line": (b"s" * (MAX_ADMIN_LINE + 1), Violation(b"", "admin line too long")),
    "http": (b"GET / HTTP/1.1\r\n", Violation(b"", "HTTP request on the Gearman port")),
}


@pytest.mark.parametrize(("data", "violation"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_a_violation_ends_the_stream_at_the_same_event_wherever_it_is_split(
    data: bytes, violation: Violation
) -> None:
    stream = PREFIX + data + pack_request(P.NOOP)
    expected = [*PREFIX_EVENTS, violation]
    parser = Parser()
    assert parser.feed(stream) == expected
    assert parser.buffered == 0
    for at in range(len(stream) + 1):
        assert feed_split(stream, at) == expected, f"split at {at}"


@pytest.mark.parametrize(("data", "violation"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_after_a_violation_feeding_more_is_a_local_error(data: bytes, violation: Violation) -> None:
    parser = Parser()
    assert parser.feed(data) == [violation]
    with pytest.raises(LocalProtocolError):
        parser.feed(pack_request(P.NOOP))
    with pytest.raises(LocalProtocolError):
        parser.feed(b"")


def test_bad_magic_is_refused_as_soon_as_four_bytes_arrive() -> None:
    parser = Parser()
    assert parser.feed(b"\0XY") == []
    assert parser.feed(b"Z") == [Violation(b"", "bad magic")]


@pytest.mark.parametrize("magic", [b"\0req", b"\0\0\0\0", b"\0RE\0", b"\0REX"])
def test_any_magic_but_req_and_res_is_a_silent_violation(magic: bytes) -> None:
    [violation] = Parser().feed(header(magic, P.NOOP, 0))
    assert violation == Violation(b"", "bad magic")


@pytest.mark.parametrize("type_", [0, 5, 43, 9999, 0xFFFFFFFF])
@pytest.mark.parametrize("magic", [REQ, RES], ids=["REQ", "RES"])
def test_an_unknown_packet_type_is_a_silent_violation(magic: bytes, type_: int) -> None:
    assert Parser().feed(header(magic, type_, 0)) == [
        Violation(b"", f"unknown packet type {type_}")
    ]


def test_an_unknown_type_is_refused_before_its_declared_body_arrives() -> None:
    parser = Parser()
    assert parser.feed(header(REQ, 9999, 1000)) == [Violation(b"", "unknown packet type 9999")]
    assert parser.buffered == 0


def test_a_declared_length_of_4_gib_is_refused_on_the_header_alone() -> None:
    parser = Parser()
    events = parser.feed(header(REQ, P.SUBMIT_JOB_BG, 0xFFFFFFFF))
    assert events == [Violation(b"ARGUMENT_TOO_LARGE", TOO_LARGE % DEFAULT_MAX_PACKET_SIZE)]
    assert parser.buffered == 0


def test_the_default_maximum_refuses_a_length_one_past_it_on_the_header() -> None:
    too_big = header(REQ, P.ECHO_REQ, DEFAULT_MAX_PACKET_SIZE + 1)
    too_large = TOO_LARGE % DEFAULT_MAX_PACKET_SIZE
    assert Parser().feed(too_big) == [Violation(b"ARGUMENT_TOO_LARGE", too_large)]
    parser = Parser()
    assert parser.feed(header(REQ, P.ECHO_REQ, DEFAULT_MAX_PACKET_SIZE)) == []
    assert parser.buffered == HEADER


@pytest.mark.parametrize("limit", [0, 1, 1024])
def test_a_body_of_exactly_the_maximum_is_accepted(limit: int) -> None:
    data = pack_request(P.ECHO_REQ, b"\0x" * (limit // 2) + b"y" * (limit % 2))
    assert Parser(max_packet_size=limit).feed(data) == [Packet(P.ECHO_REQ, (data[HEADER:],))]


@pytest.mark.parametrize("limit", [0, 1, 1024])
def test_a_body_one_byte_over_the_maximum_is_refused_on_the_header(limit: int) -> None:
    parser = Parser(max_packet_size=limit)
    assert parser.feed(header(REQ, P.ECHO_REQ, limit + 1)) == [
        Violation(b"ARGUMENT_TOO_LARGE", TOO_LARGE % limit)
    ]
    assert parser.discard == limit + 1


def test_an_over_size_refusal_says_how_many_bytes_of_the_packet_are_still_to_come() -> None:
    body = b"x" * 100
    parser = Parser(max_packet_size=64)
    [violation] = parser.feed(header(REQ, P.ECHO_REQ, len(body)) + body[:30])
    assert violation == Violation(b"ARGUMENT_TOO_LARGE", TOO_LARGE % 64)
    assert parser.discard == 70
    # What arrived past the packet's end is not counted.
    parser = Parser(max_packet_size=64)
    parser.feed(header(REQ, P.ECHO_REQ, len(body)) + body + pack_request(P.NOOP))
    assert parser.discard == 0


@pytest.mark.parametrize(
    ("type_", "body"),
    [
        (P.SUBMIT_JOB, b"reverse"),
        (P.SUBMIT_JOB, b"reverse\0test"),
        (P.SUBMIT_JOB, b""),
        (P.WORK_COMPLETE, b"H:x:1"),
        (P.SUBMIT_JOB_SCHED, b"f\0u\0" + b"1\0" * 4),
        (P.STATUS_RES_UNIQUE, b"u\0" + b"0\0" * 3 + b"0"),
    ],
    ids=lambda v: v.name if isinstance(v, PacketType) else repr(v)[:20],
)
def test_a_body_with_too_few_separators_is_an_invalid_packet(
    type_: PacketType, body: bytes
) -> None:
    [violation] = Parser().feed(header(REQ, type_, len(body)) + body)
    assert isinstance(violation, Violation)
    assert violation.code == b"INVALID_PACKET"
    assert type_.name in violation.text


def test_events_before_a_violation_in_the_same_feed_are_returned() -> None:
    data = pack_request(P.ECHO_REQ, b"a") + b"version\n" + header(REQ, 0, 0)
    assert Parser().feed(data) == [
        Packet(P.ECHO_REQ, (b"a",)),
        AdminLine(b"version"),
        Violation(b"", "unknown packet type 0"),
    ]


# ---------------------------------------------------------------------------- admin lines


def test_admin_lines_end_with_crlf_or_a_bare_newline() -> None:
    assert Parser().feed(b"status\r\n") == [AdminLine(b"status")]
    assert Parser().feed(b"status\n") == [AdminLine(b"status")]


def test_several_admin_lines_in_one_feed_come_out_in_order() -> None:
    assert Parser().feed(b"status\r\nworkers\nversion\r\n") == [
        AdminLine(b"status"),
        AdminLine(b"workers"),
        AdminLine(b"version"),
    ]


def test_only_one_trailing_carriage_return_is_stripped() -> None:
    assert Parser().feed(b"a\r\r\n\rb\n") == [AdminLine(b"a\r"), AdminLine(b"\rb")]


def test_an_admin_line_with_an_embedded_nul_byte_is_delivered_whole() -> None:
    assert Parser().feed(b"status\0junk\r\n") == [AdminLine(b"status\0junk")]


def test_an_admin_line_of_the_maximum_length_is_accepted() -> None:
    line = b"x" * MAX_ADMIN_LINE
    parser = Parser()
    assert parser.feed(line) == []
    assert parser.buffered == MAX_ADMIN_LINE
    assert parser.feed(b"\n") == [AdminLine(line)]


def test_an_admin_line_one_byte_over_the_maximum_without_newline_is_a_violation() -> None:
    parser = Parser()
    assert parser.feed(b"x" * MAX_ADMIN_LINE) == []
    assert parser.feed(b"x") == [Violation(b"", "admin line too long")]
    assert parser.buffered == 0


def test_a_megabyte_line_is_refused_in_one_feed() -> None:
    assert Parser().feed(b"x" * (1 << 20)) == [Violation(b"", "admin line too long")]


def test_an_overlong_admin_line_is_refused_even_when_its_newline_came_too() -> None:
    data = b"x" * (MAX_ADMIN_LINE + 1) + b"\n"
    assert Parser().feed(data) == [Violation(b"", "admin line too long")]


def test_an_admin_line_is_bounded_by_its_own_limit_whatever_the_packet_maximum() -> None:
    parser = Parser(max_packet_size=16)
    assert parser.feed(b"x" * MAX_ADMIN_LINE) == []
    assert parser.buffered == MAX_ADMIN_LINE
    assert parser.feed(b"x") == [Violation(b"", "admin line too long")]


@pytest.mark.parametrize(
    "line",
    [b"GET / HTTP/1.1\r\n", b"POST /reverse HTTP/1.0\n", b"HEAD / HTTP/1.1\r\n"],
)
def test_an_http_request_line_is_a_violation(line: bytes) -> None:
    assert Parser().feed(line) == [Violation(b"", "HTTP request on the Gearman port")]


@pytest.mark.parametrize("line", [b"GETPID", b"getpid", b"GET status", b"status HTTP/1.1"])
def test_admin_words_that_merely_resemble_http_are_admin_lines(line: bytes) -> None:
    assert Parser().feed(line + b"\r\n") == [AdminLine(line)]


# ---------------------------------------------------------------------------- limits


def test_unique_of_64_bytes_is_accepted_and_65_refused() -> None:
    assert MAX_UNIQUE == 64
    assert check_unique(b"u" * 64) is None
    assert check_unique(b"u" * 65) is ArgumentProblem.UNIQUE_TOO_LARGE


def test_empty_and_dash_uniques_are_accepted() -> None:
    assert check_unique(b"") is None
    assert check_unique(b"-") is None


def test_unique_with_a_nul_byte_is_refused() -> None:
    assert check_unique(b"a\0b") is ArgumentProblem.UNIQUE_HAS_NUL


def test_unique_limit_can_be_lowered() -> None:
    assert check_unique(b"abc", limit=3) is None
    assert check_unique(b"abcd", limit=3) is ArgumentProblem.UNIQUE_TOO_LARGE


def test_function_name_of_512_bytes_is_accepted_and_513_refused() -> None:
    assert MAX_FUNCTION_NAME == 512
    assert check_function_name(b"f" * 512) is None
    assert check_function_name(b"f" * 513) is ArgumentProblem.FUNCTION_TOO_LARGE


def test_empty_function_name_is_refused() -> None:
    assert check_function_name(b"") is ArgumentProblem.FUNCTION_EMPTY


def test_function_name_with_a_nul_byte_is_refused() -> None:
    assert check_function_name(b"re\0verse") is ArgumentProblem.FUNCTION_HAS_NUL


def test_function_name_with_a_nul_byte_may_be_allowed_where_it_cannot_break_framing() -> None:
    assert check_function_name(b"re\0verse", nul_allowed=True) is None
    assert check_function_name(b"", nul_allowed=True) is ArgumentProblem.FUNCTION_EMPTY


def test_argument_problems_carry_gearmands_error_code_and_text() -> None:
    assert ArgumentProblem.FUNCTION_TOO_LARGE.code == b"ARGUMENT_TOO_LARGE"
    assert ArgumentProblem.FUNCTION_TOO_LARGE.text == "Function name too large"
    assert ArgumentProblem.FUNCTION_EMPTY.code == b"INVALID_ARGUMENT"
    assert ArgumentProblem.UNIQUE_TOO_LARGE.text == "Unique value too large"


def test_function_names_are_bytes_and_need_not_be_utf8() -> None:
    assert check_function_name(b"\xff\xfe") is None
    assert check_function_name(b"with space") is None


def test_function_name_limit_can_be_lowered() -> None:
    assert check_function_name(b"abc", limit=3) is None
    assert check_function_name(b"abcd", limit=3) is ArgumentProblem.FUNCTION_TOO_LARGE


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"status", [b"status"]),
        (b"maxqueue f 1 2 3", [b"maxqueue", b"f", b"1", b"2", b"3"]),
        (b"  cancel   job  H:x:1  ", [b"cancel", b"job", b"H:x:1"]),
        (b"", []),
        (b"   ", []),
        (b"show\tjobs", [b"show\tjobs"]),
        (b"a\0b c", [b"a\0b", b"c"]),
    ],
)
def test_split_admin_words_splits_on_spaces_and_drops_empty_words(
    line: bytes, words: list[bytes]
) -> None:
    assert split_admin_words(line) == words


# ---------------------------------------------------------------------------- vocabulary


def test_priority_value_is_the_rank_and_word_the_outbox_spelling() -> None:
    assert [(p.name, int(p), p.word) for p in Priority] == [
        ("HIGH", 0, "high"),
        ("NORMAL", 1, "normal"),
        ("LOW", 2, "low"),
    ]
    assert Priority.from_word("High") is Priority.HIGH
    assert Priority("low") is Priority.LOW  # as with the old string-valued enum
    with pytest.raises(ValueError, match="'urgent' is not a priority"):
        Priority.from_word("urgent")


def test_submit_kinds_and_submit_types_are_inverse_tables_of_the_six_plain_submits() -> None:
    assert len(SUBMIT_KINDS) == 6
    assert {SUBMIT_TYPES[kind]: kind for kind in SUBMIT_TYPES} == SUBMIT_KINDS
    assert SUBMIT_KINDS[P.SUBMIT_JOB_LOW_BG] == (Priority.LOW, True)
    assert all(ARGUMENTS[type_] == ("function", "unique", "data") for type_ in SUBMIT_KINDS)
