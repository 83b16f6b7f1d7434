"""Debian's `gearman` CLI (libgearman) as client and as worker against a real job server.

Seen on the wire with gearmand 1.1.20: the CLI worker asks for work with GRAB_JOB_ALL (39) and
gets JOB_ASSIGN_UNIQ back; the CLI client sends no OPTION_REQ and makes up a UUID unique for
every job it submits without `-u`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ServerProcess

from .gearman_tools import GearmanCli
from .probe import admin_lines, wait_for_status_line, wait_until

pytestmark = pytest.mark.interop


def wait_for_no_job_left(server: ServerProcess, function: str) -> None:
    """Wait until ``status`` shows no job of ``function``: gearmand lists it with a total of 0,
    gearsql forgets a function once it has neither a job nor a worker."""

    def no_job() -> bool:
        rows = [line.split("\t") for line in admin_lines(server.address, "status")]
        totals = [row[1] for row in rows if row[0] == function]
        return totals in (["0"], [])

    wait_until(no_job, f"no job of {function} left")


def append_to(path: Path) -> list[str]:
    """A worker command that appends each workload to `path`, one line per job."""
    return ["sh", "-c", 'cat >> "$0"; echo >> "$0"', str(path)]


def test_foreground_job_returns_worker_command_output(
    any_server: ServerProcess, gearman_cli: GearmanCli
) -> None:
    worker = gearman_cli.start_worker("upper", "tr", "a-z", "A-Z", count=1)

    result = gearman_cli.client("-f", "upper", "hello world")

    assert result.returncode == 0, result.stderr
    assert result.stdout == b"HELLO WORLD"
    gearman_cli.wait_for_worker(worker)


def test_workload_from_stdin_round_trips_through_rev(
    any_server: ServerProcess, gearman_cli: GearmanCli
) -> None:
    worker = gearman_cli.start_worker("reverse", "rev", count=1)

    result = gearman_cli.client("-f", "reverse", stdin=b"gearman\n")

    assert result.returncode == 0, result.stderr
    assert result.stdout == b"namraeg\n"
    gearman_cli.wait_for_worker(worker)


def test_background_job_is_queued_then_run_by_a_later_worker(
    any_server: ServerProcess, gearman_cli: GearmanCli, tmp_path: Path
) -> None:
    ran = tmp_path / "ran.txt"

    submitted = gearman_cli.client("-f", "record", "-b", "in the background")

    assert submitted.returncode == 0, submitted.stderr
    assert submitted.stdout == b""
    wait_for_status_line(any_server.address, "record\t1\t0\t0")

    worker = gearman_cli.start_worker("record", *append_to(ran), count=1)
    gearman_cli.wait_for_worker(worker)

    assert ran.read_text() == "in the background\n"
    wait_for_no_job_left(any_server, "record")


def test_verbose_background_submit_prints_the_job_handle(
    any_server: ServerProcess, gearman_cli: GearmanCli
) -> None:
    result = gearman_cli.client("-f", "later", "-b", "-v", "payload")

    assert result.returncode == 0, result.stderr
    prefix = b"Task created: "
    assert result.stdout.startswith(prefix), result.stdout
    handle = result.stdout[len(prefix) :].strip().decode()
    # gearmand's four columns (gearsql adds three after them).
    listed = [
        "\t".join(line.split("\t")[:4]) for line in admin_lines(any_server.address, "show jobs")
    ]
    assert f"{handle}\t0\t0\t1" in listed


def test_job_per_line_submits_one_job_for_each_input_line(
    any_server: ServerProcess, gearman_cli: GearmanCli
) -> None:
    worker = gearman_cli.start_worker("reverse", "rev", count=3)

    result = gearman_cli.client("-f", "reverse", "-n", stdin=b"one\ntwo\nthree\n")

    assert result.returncode == 0, result.stderr
    assert result.stdout == b"eno\nowt\neerht\n"
    gearman_cli.wait_for_worker(worker)


def test_background_jobs_run_high_then_normal_then_low_priority(
    any_server: ServerProcess, gearman_cli: GearmanCli, tmp_path: Path
) -> None:
    ran = tmp_path / "order.txt"
    for flags, payload in ((["-L"], "low"), ([], "normal"), (["-I"], "high")):
        submitted = gearman_cli.client("-f", "ordered", "-b", *flags, payload)
        assert submitted.returncode == 0, submitted.stderr
    wait_for_status_line(any_server.address, "ordered\t3\t0\t0")

    worker = gearman_cli.start_worker("ordered", *append_to(ran), count=3)
    gearman_cli.wait_for_worker(worker)

    assert ran.read_text().splitlines() == ["high", "normal", "low"]


def test_background_submits_with_the_same_unique_coalesce_into_one_job(
    any_server: ServerProcess, gearman_cli: GearmanCli, tmp_path: Path
) -> None:
    ran = tmp_path / "ran.txt"
    for payload in ("first", "second"):
        submitted = gearman_cli.client("-f", "once", "-b", "-u", "same-key", payload)
        assert submitted.returncode == 0, submitted.stderr

    wait_for_status_line(any_server.address, "once\t1\t0\t0")

    worker = gearman_cli.start_worker("once", *append_to(ran), count=1)
    gearman_cli.wait_for_worker(worker)

    assert ran.read_text() == "first\n"
    wait_for_no_job_left(any_server, "once")


def test_failing_worker_command_makes_the_client_report_job_failed(
    any_server: ServerProcess, gearman_cli: GearmanCli
) -> None:
    # libgearman's worker sends the command's output as WORK_DATA, then WORK_FAIL.
    worker = gearman_cli.start_worker("broken", "sh", "-c", "echo partial; exit 3", count=1)

    result = gearman_cli.client("-f", "broken", "input")

    assert result.returncode == 1
    assert result.stdout == b"partial\n"
    assert b"Job failed" in result.stderr
    worker.wait(10)
