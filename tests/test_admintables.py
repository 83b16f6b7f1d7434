"""The admin commands' tables and `top`'s frames, built without the command line: pure table
layout, and frames read from a real job server."""

from __future__ import annotations

from conftest import ServerProcess
from wire import Peer

from gearsql._admintables import RateMemory, display_name, table_lines, top_frame
from gearsql.adminclient import AdminClient
from gearsql.protocol import PacketType as P


def test_table_lines_pad_text_left_and_numbers_right() -> None:
    assert table_lines(["NAME", "N", "NOTE"], [["a", 5, "x"], ["long-name", 123, ""]]) == [
        "NAME       N    NOTE",
        "a            5  x",
        "long-name  123",
    ]


def test_table_lines_of_no_rows_is_the_header() -> None:
    assert table_lines(["SERVER", "UNIQUE"], []) == ["SERVER  UNIQUE"]


def test_display_name_shows_bytes_that_are_not_utf8_escaped() -> None:
    assert display_name("café".encode()) == "café"
    assert display_name(b"a\xffb") == "a\\xffb"


def test_top_frame_counts_queued_jobs_by_priority_and_running_ones(
    gearsql_server: ServerProcess,
) -> None:
    with Peer(gearsql_server.address) as client, Peer(gearsql_server.address) as worker:
        client.send(P.SUBMIT_JOB_HIGH_BG, b"resize", b"", b"x")
        client.expect(P.JOB_CREATED)
        client.send(P.SUBMIT_JOB_LOW_BG, b"resize", b"", b"x")
        client.expect(P.JOB_CREATED)
        for _ in range(2):
            client.send(P.SUBMIT_JOB_BG, b"mail", b"", b"x")
            client.expect(P.JOB_CREATED)
        worker.send(P.CAN_DO, b"mail")
        worker.send(P.GRAB_JOB)
        worker.expect(P.JOB_ASSIGN)

        with AdminClient(*gearsql_server.address) as admin:
            one = top_frame([admin], many=False)
            many = top_frame([admin], many=True)

    assert one == [
        "FUNCTION  QUEUED  HIGH  NORMAL  LOW  RUNNING  WORKERS  DEAD",
        "mail           1     0       1    0        1        1     0",
        "resize         2     1       0    1        0        0     0",
    ]
    server = f"127.0.0.1:{gearsql_server.port}"
    assert many[0].startswith("SERVER")
    assert many[1:] == [f"{server}  {line}" for line in one[1:]]


def test_top_frame_turns_counters_into_rates_between_frames(
    gearsql_server: ServerProcess,
) -> None:
    memory: RateMemory = {}
    with Peer(gearsql_server.address) as client, Peer(gearsql_server.address) as worker:
        for _ in range(5):
            client.send(P.SUBMIT_JOB_BG, b"mail", b"", b"x")
            client.expect(P.JOB_CREATED)
        worker.send(P.CAN_DO, b"mail")
        with AdminClient(*gearsql_server.address) as admin:
            first = top_frame([admin], many=False, memory=memory, now=100.0)
            for answer in (P.WORK_COMPLETE, P.WORK_COMPLETE, P.WORK_COMPLETE, P.WORK_FAIL):
                worker.send(P.GRAB_JOB)
                handle = worker.expect(P.JOB_ASSIGN).args[0]
                worker.send(answer, handle, *((b"ok",) if answer == P.WORK_COMPLETE else ()))
            assert admin.status()  # a round trip after the last answer
            second = top_frame([admin], many=False, memory=memory, now=102.0)

    header = "FUNCTION  QUEUED  HIGH  NORMAL  LOW  RUNNING  WORKERS  DEAD  DONE/S  FAIL/S  WAIT_MS"
    assert first[0] == header + "  RUN_MS"
    assert first[1].split()[-4:] == ["-", "-", "-", "-"]
    name, queued, *_, done, failed, wait_ms, run_ms = second[1].split()
    assert (name, queued, done, failed) == ("mail", "1", "1.5", "0.5")
    assert float(wait_ms) >= 0 and float(run_ms) >= 0


def test_a_c_gearmand_has_no_rates(gearmand_server: ServerProcess) -> None:
    memory: RateMemory = {}
    with Peer(gearmand_server.address) as client:
        client.send(P.SUBMIT_JOB_BG, b"mail", b"", b"x")
        client.expect(P.JOB_CREATED)
        with AdminClient(*gearmand_server.address) as admin:
            top_frame([admin], many=False, memory=memory, now=100.0)
            second = top_frame([admin], many=False, memory=memory, now=102.0)
    assert second[1].split()[-4:] == ["-", "-", "-", "-"]
