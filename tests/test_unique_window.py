"""Uniques that remember (``--unique-window``, ``uniquewindow`` admin command) on a real server
with real workers, against every store (the memory store where nothing has to outlive the
server): a background job with a unique that completed is not run again for a submission of
the same function and unique within the window; with ``--keep-results`` a foreground
submission gets the kept result at once and GET_STATUS_UNIQUE tells "done".
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import ServerProcess, need_tool
from test_retries import (  # the same worker processes, stores and fixtures
    Workers,
    admin_of,
    database,
    durable_only,
    gearsql,
    servers,
    start_server,
    store_url,
    submit,
    wait_until,
    workers,
)

from gearsql import Client

__all__ = ["database", "servers", "store_url", "workers"]  # fixtures, used by name


def test_a_completed_unique_is_acknowledged_and_not_run_again_within_the_window(
    store_url: str, tmp_path: Path, servers: list[ServerProcess], workers: Workers
) -> None:
    server = start_server(tmp_path, store_url, "--unique-window", "3600")
    servers.append(server)
    workers.start(server, "invoice", "ok")
    first = submit(server, "invoice", "inv-1", unique="inv-1")
    with admin_of(server) as admin:
        wait_until(lambda: workers.runs() == ["ok inv-1"], "the first run")
        wait_until(lambda: admin.show_jobs() == [], "the job to finish")
        # A relay redelivery or a client retry: acknowledged with a handle of its own...
        again = submit(server, "invoice", "inv-1", unique="inv-1")
        assert again and again != first
        # ...and never run: a job with another unique, submitted after it, runs and is the
        # only other run.
        submit(server, "invoice", "inv-2", unique="inv-2")
        wait_until(lambda: len(workers.runs()) == 2, "the second job")
        wait_until(lambda: admin.show_jobs() == [], "the second job to finish")
        assert workers.runs() == ["ok inv-1", "ok inv-2"]
        # The same unique under another function is another job.
        submit(server, "receipt", "inv-1", unique="inv-1")
        assert [tuple(line) for line in admin.status() if line[0] == b"receipt"] == [
            (b"receipt", 1, 0, 0)
        ]


def test_a_function_window_of_zero_runs_every_submission(
    store_url: str, tmp_path: Path, servers: list[ServerProcess], workers: Workers
) -> None:
    server = start_server(tmp_path, store_url, "--unique-window", "3600")
    servers.append(server)
    with admin_of(server) as admin:
        assert admin.unique_window("ping") == (3600.0, True)
        admin.set_unique_window("ping", 0)
        assert admin.unique_window("ping") == (0.0, False)
        workers.start(server, "ping", "ok")
        submit(server, "ping", "p", unique="p")
        wait_until(lambda: workers.runs() == ["ok p"], "the first run")
        wait_until(lambda: admin.show_jobs() == [], "the job to finish")
        submit(server, "ping", "p", unique="p")
        wait_until(lambda: workers.runs() == ["ok p", "ok p"], "the second run")


def test_keep_results_answers_a_foreground_submission_and_status_says_done(
    store_url: str, tmp_path: Path, servers: list[ServerProcess], workers: Workers
) -> None:
    server = start_server(tmp_path, store_url, "--unique-window", "3600", "--keep-results")
    servers.append(server)
    workers.start(server, "render", "ok")
    submit(server, "render", "page-1", unique="page-1")
    with admin_of(server) as admin, Client(f"127.0.0.1:{server.port}") as client:
        wait_until(lambda: workers.runs() == ["ok page-1"], "the first run")
        wait_until(lambda: admin.show_jobs() == [], "the job to finish")
        status = client.get_status_unique("page-1")
        assert (status.known, status.running, status.numerator, status.denominator) == (
            True,
            False,
            1,
            1,
        )
        assert client.submit("render", "page-1", unique="page-1", timeout=20) == b"done"
        assert not client.get_status_unique("never-submitted").known
    assert workers.runs() == ["ok page-1"]


@durable_only
def test_remembered_uniques_and_function_windows_survive_a_restart(
    store_url: str, tmp_path: Path, servers: list[ServerProcess], workers: Workers
) -> None:
    server = start_server(tmp_path, store_url, "--keep-results")
    servers.append(server)
    with admin_of(server) as admin:
        admin.set_unique_window("charge", 3600)
    worker = workers.start(server, "charge", "ok")
    submit(server, "charge", "c-1", unique="c-1")
    with admin_of(server) as admin:
        wait_until(lambda: workers.runs() == ["ok c-1"], "the first run")
        wait_until(lambda: admin.show_jobs() == [], "the job to finish")
    workers.stop(worker)
    server.stop()
    server = start_server(tmp_path, store_url, "--keep-results")
    servers.append(server)
    with admin_of(server) as admin:
        assert admin.unique_window("charge") == (3600.0, False)
    workers.start(server, "charge", "ok")
    submit(server, "charge", "c-1", unique="c-1")
    with Client(f"127.0.0.1:{server.port}") as client:
        assert client.submit("charge", "c-1", unique="c-1", timeout=20) == b"done"
        submit(server, "charge", "c-2", unique="c-2")
        wait_until(lambda: len(workers.runs()) == 2, "the other job")
    assert workers.runs() == ["ok c-1", "ok c-2"]


@pytest.mark.databases("sqlite")
def test_expired_uniques_are_purged_from_the_store(
    store_url: str, tmp_path: Path, servers: list[ServerProcess], workers: Workers
) -> None:
    import sqlite3

    server = start_server(tmp_path, store_url)
    servers.append(server)
    with admin_of(server) as admin:
        admin.set_unique_window("short", 0.2)
    workers.start(server, "short", "ok")
    submit(server, "short", "s-1", unique="s-1")
    path = store_url.removeprefix("sqlite:///")

    def remembered() -> int:
        with sqlite3.connect(path) as conn:
            (count,) = conn.execute("SELECT count(*) FROM gearsql_unique").fetchone()
        conn.close()
        return int(count)

    wait_until(lambda: remembered() == 1, "the unique to be stored")
    wait_until(lambda: remembered() == 0, "the expired unique to be purged")
    # Expired: the same unique runs again.
    submit(server, "short", "s-1", unique="s-1")
    wait_until(lambda: workers.runs() == ["ok s-1", "ok s-1"], "the second run")


def test_the_unique_window_command_shows_sets_and_resets_a_functions_window(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    server = start_server(tmp_path, "memory", "--unique-window", "60")
    servers.append(server)
    at = ["-h", "127.0.0.1", "-p", str(server.port)]
    assert gearsql("unique-window", "mail", *at).stdout == "mail: 60 (server default)\n"
    assert gearsql("unique-window", "mail", "2.5", *at).stdout == "mail: 2.5\n"
    with admin_of(server) as admin:
        assert admin.unique_window("mail") == (2.5, False)
    assert gearsql("unique-window", "mail", "--default", *at).stdout == (
        "mail: 60 (server default)\n"
    )
    bad = gearsql("unique-window", "mail", "1", "--default", *at)
    assert (bad.returncode, bad.stderr) == (1, "gearsql: give SECONDS or --default, not both\n")


def test_c_gearman_and_gearadmin_work_unchanged_with_the_window_and_kept_results(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    gearman, gearadmin = need_tool("gearman"), need_tool("gearadmin")
    server = start_server(tmp_path, "memory", "--unique-window", "3600", "--keep-results")
    servers.append(server)
    at = ["-h", "127.0.0.1", "-p", str(server.port)]

    def tool(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )

    # A real C worker runs one job (`rev` reverses its input) and exits.
    worker = subprocess.Popen(
        [gearman, *at, "-w", "-f", "rev", "-c", "1", "--", "rev"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with admin_of(server) as admin:
            wait_until(lambda: any(b"rev" in w.functions for w in admin.workers()), "the worker")
            assert tool(gearman, *at, "-b", "-u", "k-1", "-f", "rev", "abc").returncode == 0
            assert worker.wait(30) == 0
            # No worker is left: the foreground C client gets the kept result at once.
            done = tool(gearman, *at, "-u", "k-1", "-f", "rev", "abc")
            assert (done.returncode, done.stdout.strip()) == (0, "cba")
            assert tool(gearadmin, *at, "--status").stdout == ".\n"
            assert tool(gearadmin, *at, "--show-jobs").stdout == ".\n"
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait()
