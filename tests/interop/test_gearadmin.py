"""Debian's `gearadmin` against a real job server: exact admin output (docs/protocol.md §2)."""

from __future__ import annotations

import re
import subprocess

import pytest
from conftest import ServerProcess

import gearsql

from .gearman_tools import Gearadmin
from .probe import PacketType, ProbeConnection, admin_lines, wait_for_status_line

pytestmark = pytest.mark.interop


def listing(stdout: str) -> list[str]:
    """The lines of a gearadmin list output, checking it ends with the `.` terminator line."""
    lines = stdout.split("\n")
    assert lines[-2:] == [".", ""], f"list output must end with '.\\n': {stdout!r}"
    return lines[:-2]


def gearmand_columns(lines: list[str]) -> list[str]:
    """``show jobs`` lines cut to gearmand's four columns: gearsql adds three after them
    (attempts, state, last error), which gearadmin passes through untouched."""
    return ["\t".join(line.split("\t")[:4]) for line in lines]


def test_status_lists_total_running_and_workers_per_function(
    any_server: ServerProcess, gearadmin: Gearadmin
) -> None:
    with (
        ProbeConnection(any_server.address) as client,
        ProbeConnection(any_server.address) as worker,
    ):
        client.submit_background(b"waiting", b"1")
        client.submit_background(b"waiting", b"2")
        client.submit_background(b"busy", b"3")
        worker.register(b"busy")
        assert worker.grab_job()[0] == PacketType.JOB_ASSIGN

        result = gearadmin("--status")

    assert result.returncode == 0
    assert result.stderr == ""
    assert sorted(listing(result.stdout)) == ["busy\t1\t1\t1", "waiting\t2\t0\t0"]


def test_workers_lists_each_connection_with_client_id_and_functions(
    any_server: ServerProcess, gearadmin: Gearadmin
) -> None:
    with ProbeConnection(any_server.address) as worker:
        worker.register(b"alpha", b"beta", client_id=b"probe-worker")

        result = gearadmin("--workers")

    lines = listing(result.stdout)
    assert len(lines) == 2, lines
    rows = [re.fullmatch(r"(\d+) (\S+) (\S+) :((?: \S+)*)", line) for line in lines]
    assert all(rows), lines
    by_id = {row[3]: row for row in rows if row}
    assert set(by_id) == {"probe-worker", "-"}
    assert by_id["probe-worker"][2] == "127.0.0.1"
    assert sorted(by_id["probe-worker"][4].split()) == ["alpha", "beta"]
    # gearadmin's own connection: no client id, no functions, nothing after the colon.
    assert by_id["-"][4] == ""


def test_show_jobs_lists_handle_retries_ignored_and_background_flag(
    any_server: ServerProcess, gearadmin: Gearadmin
) -> None:
    with (
        ProbeConnection(any_server.address) as client,
        ProbeConnection(any_server.address) as worker,
    ):
        running = client.submit_background(b"jobs", b"taken first")
        queued = client.submit_background(b"jobs", b"still queued")
        worker.register(b"jobs")
        assert worker.grab_job() == (PacketType.JOB_ASSIGN, running + b"\0jobs\0taken first")
        waited_on = client.submit_foreground(b"jobs", b"client waits")

        result = gearadmin("--show-jobs")

    # JOB_QUEUED is gearmand's job_queued flag: 1 for background jobs (queued or running), 0
    # for a foreground job that has a waiting client.
    lines = listing(result.stdout)
    if any_server.kind == "gearsql":
        assert sorted(line.split("\t", 4)[4] for line in lines) == [
            "0\tqueued\t-",
            "0\tqueued\t-",
            "1\trunning\t-",
        ]
    assert sorted(gearmand_columns(lines)) == sorted(
        [
            f"{running.decode()}\t0\t0\t1",
            f"{queued.decode()}\t0\t0\t1",
            f"{waited_on.decode()}\t0\t0\t0",
        ]
    )


def test_cancel_job_prints_ok_and_the_job_is_never_assigned(
    any_server: ServerProcess, gearadmin: Gearadmin
) -> None:
    with ProbeConnection(any_server.address) as client:
        handle = client.submit_background(b"doomed", b"never runs").decode()

    result = gearadmin("--cancel-job", handle)

    assert (result.stdout, result.stderr) == ("OK\n", "")
    # gearmand only marks the job ignored (IGNORE_JOB 1) until a worker next asks for work;
    # gearsql lets go of a cancelled job alone in its queue at once.
    if any_server.kind == "gearmand":
        assert gearmand_columns(listing(gearadmin("--show-jobs").stdout)) == [f"{handle}\t0\t1\t0"]
    else:
        assert listing(gearadmin("--show-jobs").stdout) == []
    with ProbeConnection(any_server.address) as worker:
        worker.register(b"doomed")
        assert worker.grab_job() == (PacketType.NO_JOB, b"")
        wait_for_status_line(any_server.address, "doomed\t0\t0\t1")
    assert admin_lines(any_server.address, "show jobs") == []


def test_cancel_of_an_unknown_job_reports_unknown_job(
    any_server: ServerProcess, gearadmin: Gearadmin
) -> None:
    result = gearadmin("--cancel-job", "H:nowhere:1")

    assert result.stdout == ""
    assert result.stderr.strip() == "Error: UNKNOWN_JOB"


def test_create_function_lists_it_idle_until_drop_function(
    any_server: ServerProcess, gearadmin: Gearadmin
) -> None:
    created = gearadmin("--create-function", "made_by_admin")
    assert (created.stdout, created.stderr) == ("OK\n", "")
    assert listing(gearadmin("--status").stdout) == ["made_by_admin\t0\t0\t0"]

    dropped = gearadmin("--drop-function", "made_by_admin")
    assert (dropped.stdout, dropped.stderr) == ("OK\n", "")
    assert listing(gearadmin("--status").stdout) == []

    again = gearadmin("--drop-function", "made_by_admin")
    assert again.stdout == ""
    assert again.stderr.strip() == "Error: function not found"


def test_drop_function_is_refused_while_a_worker_is_connected(
    any_server: ServerProcess, gearadmin: Gearadmin
) -> None:
    with ProbeConnection(any_server.address) as worker:
        worker.register(b"in_use")

        result = gearadmin("--drop-function", "in_use")

        assert result.stdout == ""
        assert result.stderr.strip() == (
            "Error: there are still connected workers or executing clients"
        )
        assert admin_lines(any_server.address, "status") == ["in_use\t0\t0\t1"]


def test_priority_status_counts_queued_jobs_per_priority(
    any_server: ServerProcess, gearadmin: Gearadmin
) -> None:
    with (
        ProbeConnection(any_server.address) as client,
        ProbeConnection(any_server.address) as worker,
    ):
        for priority, count in (("high", 1), ("normal", 2), ("low", 3)):
            for n in range(count):
                client.submit_background(b"ranked", f"{priority} {n}".encode(), priority=priority)
        client.submit_background(b"unranked", b"x", priority="low")
        worker.register(b"ranked")

        result = gearadmin("--priority-status")

    assert result.stderr == ""
    assert sorted(listing(result.stdout)) == ["ranked\t1\t2\t3\t1", "unranked\t0\t0\t1\t0"]


def expected_version(server: ServerProcess) -> str:
    if server.kind == "gearmand":
        banner = subprocess.run(
            ["gearmand", "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
        return banner.split()[1]  # "gearmand 1.1.20+ds - https://..."
    return gearsql.__version__


def test_server_version_prints_the_running_servers_version(
    any_server: ServerProcess, gearadmin: Gearadmin
) -> None:
    result = gearadmin("--server-version")

    assert (result.stdout, result.stderr) == (f"{expected_version(any_server)}\n", "")


def test_getpid_prints_the_server_process_id(
    any_server: ServerProcess, gearadmin: Gearadmin
) -> None:
    assert any_server.proc is not None

    result = gearadmin("--getpid")

    assert (result.stdout, result.stderr) == (f"{any_server.proc.pid}\n", "")


def test_server_verbose_prints_the_configured_log_level(
    any_server: ServerProcess, gearadmin: Gearadmin
) -> None:
    # Both servers are started with `--verbose INFO` (tests/conftest.py).
    result = gearadmin("--server-verbose")

    assert (result.stdout, result.stderr) == ("INFO\n", "")
