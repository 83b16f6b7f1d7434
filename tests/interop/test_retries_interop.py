"""Debian's `gearman` and `gearadmin` against a gearsql server with retries and dead letters on:
both keep working unchanged (docs/reliability.md case 50; docs/protocol.md §2)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ServerProcess, need_tool

from gearsql.adminclient import AdminClient

from .gearman_tools import Gearadmin, GearmanCli

pytestmark = pytest.mark.interop


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def retrying_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        "gearsql",
        tmp_path / "gearsql.log",
        [
            "--store",
            f"sqlite:///{tmp_path}/queue.sqlite3",
            "--retries",
            "2",
            "--retry-backoff",
            "0.05:0.1",
            "-j",
            "3",
        ],
    ).start()
    try:
        yield server
    finally:
        server.stop()


def test_gearman_and_gearadmin_work_unchanged_with_retries_and_dead_letters(
    retrying_server: ServerProcess, tmp_path: Path
) -> None:
    cli = GearmanCli(need_tool("gearman"), retrying_server, tmp_path)
    gearadmin = Gearadmin(need_tool("gearadmin"), retrying_server)
    try:
        with AdminClient(*retrying_server.address) as admin:
            submitted = cli.client("-b", "-f", "flaky", "--", "payload")
            assert submitted.returncode == 0, submitted.stderr
            # The C worker runs `false`, which makes it answer WORK_FAIL (and then exit, with
            # GEARMAN_UNKNOWN_STATE): two runs, then a dead letter.
            for _ in range(2):
                cli.start_worker("flaky", "false", count=1).wait(20)
            wait_until(lambda: len(admin.show_dead()) == 1, "the dead letter")
            [letter] = admin.show_dead()
            assert (letter.attempts, letter.error, letter.size) == (2, b"failed", 7)

            # gearadmin reads gearmand's four status columns, and show jobs' first four. With
            # its worker gone and no job left, flaky is forgotten; its dead letter stays.
            wait_until(
                lambda: gearadmin("--status").stdout.splitlines() == ["."], "flaky forgotten"
            )
            assert gearadmin("--show-jobs").stdout.splitlines() == ["."]
            assert admin.dead_status() == {b"flaky": 1}

            # Resubmitted, it runs through the C worker; a foreground job works as ever.
            assert admin.retry_dead(letter.id) == 1
            worker = cli.start_worker("flaky", "cat", count=2)
            foreground = cli.client("-f", "flaky", "hello")
            assert (foreground.returncode, foreground.stdout) == (0, b"hello")
            cli.wait_for_worker(worker)
            wait_until(lambda: admin.show_jobs() == [], "the resubmitted job to finish")
            assert admin.show_dead() == []
    finally:
        cli.kill_workers()
