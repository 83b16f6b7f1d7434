"""Recurring schedules on a real server: defined with ``gearsql schedule``, kept by every durable
store across restarts, and a tick submitted once even when the server is killed right after
it (the fake-clock cases, clock jumps among them, are in ``test_core_schedules.py``)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from conftest import ServerProcess
from test_retries import (  # the same stores and fixtures
    admin_of,
    database,
    durable_only,
    gearsql,
    servers,
    start_server,
    store_url,
    wait_until,
)

__all__ = ["database", "servers", "store_url"]  # fixtures, used by name


@durable_only
def test_schedules_are_added_listed_kept_across_a_restart_and_removed(
    store_url: str, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    server = start_server(tmp_path, store_url)
    servers.append(server)
    at = ["-h", "127.0.0.1", "-p", str(server.port)]
    added = gearsql("schedule", "add", "nightly", "report", "0 3 * * *", "-d", "all", *at)
    assert added.returncode == 0 and added.stdout.startswith("nightly: next ")
    assert added.stdout.rstrip().endswith("03:00 UTC")
    bad = gearsql("schedule", "add", "x", "f", "0 25 * * *", *at)
    assert (bad.returncode, bad.stderr.count("\n")) == (1, 1)
    assert bad.stderr.startswith("gearsql: hour field '25'")
    server.stop()
    server = start_server(tmp_path, store_url)
    servers.append(server)
    at = ["-h", "127.0.0.1", "-p", str(server.port)]
    [listed] = json.loads(gearsql("schedule", "list", "--json", *at).stdout)
    assert (listed["name"], listed["function"], listed["spec"], listed["size"]) == (
        "nightly",
        "report",
        "0 3 * * *",
        3,
    )
    assert listed["next"] % 86400 == 3 * 3600 and listed["next"] > time.time()
    assert gearsql("schedule", "remove", "nightly", *at).returncode == 0
    missing = gearsql("schedule", "remove", "nightly", *at)
    assert (missing.returncode, missing.stderr) == (1, "gearsql: no schedule 'nightly'\n")
    assert json.loads(gearsql("schedule", "list", "--json", *at).stdout) == []


@pytest.mark.slow
@pytest.mark.databases("sqlite", "postgresql")
def test_a_server_killed_right_after_a_tick_submits_it_once(
    store_url: str, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    # Cron's unit is the minute: this waits for the next minute boundary (up to 60 s).
    server = start_server(tmp_path, store_url)
    servers.append(server)
    with admin_of(server) as admin:
        due = admin.add_schedule("every", "minutely", "* * * * *", "tick")
        wait_until(lambda: admin.show_jobs() != [], "the tick's job", timeout=90)
    # No worker: the job waits in the store. SIGKILL at once, before or after the commit that
    # holds both the job and the schedule's next tick: either both are stored or neither is
    # (and the restarted server submits the tick, still due, once).
    server.stop(signal.SIGKILL)
    server = start_server(tmp_path, store_url)
    servers.append(server)
    with admin_of(server) as admin:
        wait_until(lambda: admin.show_unique_jobs() != [], "the replayed or resubmitted tick")
        ticks = admin.show_unique_jobs()
        [schedule] = admin.schedules()
    # One job for the tick (a second one only for the next minute's tick, should the restart
    # have crossed it), and the schedule waits for a later tick.
    assert ticks[0] == b"every@%d" % due
    assert ticks[1:] in ([], [b"every@%d" % (due + 60)])
    assert schedule.due > due
