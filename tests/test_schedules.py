"""Recurring schedules on a real server: defined with ``gearsql schedule`` or in the config file,
kept by every durable store across restarts with their catch-up mode, and a tick submitted
once even when the server is killed right after it; SUBMIT_JOB_SCHED as a raw packet (the
fake-clock cases, clock jumps and catch-up among them, are in ``test_core_schedules.py``)."""

from __future__ import annotations

import json
import secrets
import signal
import sqlite3
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
from wire import Peer

from gearsql.protocol import PacketType as P

__all__ = ["database", "servers", "store_url"]  # fixtures, used by name


def listed(server: ServerProcess) -> dict[str, dict[str, object]]:
    """``gearsql schedule list --json`` of ``server``, by name."""
    at = ["-h", "127.0.0.1", "-p", str(server.port)]
    return {
        item["name"]: item for item in json.loads(gearsql("schedule", "list", "--json", *at).stdout)
    }


@durable_only
def test_config_file_schedules_are_added_replaced_when_changed_and_kept_when_left_out(
    store_url: str, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    config = tmp_path / "gearsql.conf"
    config.write_text(
        "# schedules, as the example server/gearsql.conf has them\n"
        "--schedule 'nightly 0 3 * * * report all files'\n"
        "--schedule 'hourly 0 * * * * catch-up=all tidy'\n"
    )
    server = start_server(tmp_path, store_url, "--config-file", str(config))
    servers.append(server)
    found = listed(server)
    assert (found["nightly"]["function"], found["nightly"]["spec"]) == ("report", "0 3 * * *")
    assert found["nightly"]["size"] == len("all files")
    assert found["hourly"]["spec"] == "0 * * * * catch-up=all"
    at = ["-h", "127.0.0.1", "-p", str(server.port)]
    added = gearsql("schedule", "add", "extra", "f", "*/5 * * * *", "--catch-up", "none", *at)
    assert added.returncode == 0, added.stderr
    server.stop()
    # The config changes nightly and leaves hourly out; the command line adds one more.
    config.write_text("--schedule 'nightly 30 3 * * * report all files'\n")
    server = start_server(
        tmp_path, store_url, "--config-file", str(config), "--schedule", "weekly 0 0 * * 0 sum"
    )
    servers.append(server)
    found = listed(server)
    assert found["nightly"]["spec"] == "30 3 * * *"
    assert int(str(found["nightly"]["next"])) % 86400 == 3 * 3600 + 1800
    assert found["hourly"]["spec"] == "0 * * * * catch-up=all"  # stays until removed
    assert found["extra"]["spec"] == "*/5 * * * * catch-up=none"
    assert found["weekly"]["function"] == "sum"


def test_a_config_schedule_unchanged_across_a_restart_keeps_its_missed_tick(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    url = f"sqlite:///{tmp_path}/queue.sqlite3"
    server = start_server(tmp_path, url, "--schedule", "often * * * * * f")
    servers.append(server)
    server.stop()
    # As if the server had been down across a tick: the stored next tick is in the past.
    missed = int(time.time()) // 60 * 60 - 600
    with sqlite3.connect(tmp_path / "queue.sqlite3") as db:
        db.execute("UPDATE gearsql_schedule SET due = ? WHERE name = ?", (missed, b"often"))
    server = start_server(tmp_path, url, "--schedule", "often * * * * * f")
    servers.append(server)
    with admin_of(server) as admin:
        # The same definition keeps the stored tick, which is submitted once; a definition
        # added afresh would have waited for the next minute.
        wait_until(lambda: b"often@%d" % missed in admin.show_unique_jobs(), "the missed tick")
        [schedule] = admin.schedules()
    assert schedule.due > time.time() - 60


def test_a_bad_schedule_option_is_one_line_and_no_server() -> None:
    for line, reason in [
        ("nightly 0 3 * * *", "want NAME M H DOM MON DOW [catch-up=MODE] FUNCTION [DATA]"),
        ("n@ 0 3 * * * f", "schedule name 'n@': 1 to 40 bytes, no @"),
        ("n 0 3 30 2 * f", "never matches"),
        ("n 0 3 * * * catch-up=some f", "catch-up 'some': want one of one, none, all"),
    ]:
        ran = gearsql("server", "--port", "0", "--store", "memory", "--schedule", line)
        assert ran.returncode != 0 and ran.stderr.count("\n") == 1, ran.stderr
        assert ran.stderr.startswith("gearsql: --schedule: ") and reason in ran.stderr


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_submit_job_sched_is_a_stored_job_waiting_for_the_minute_its_fields_match(
    store: str, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    url = "memory" if store == "memory" else f"sqlite:///{tmp_path}/queue.sqlite3"
    server = start_server(tmp_path, url)
    servers.append(server)
    target = (int(time.time()) // 60 + 3) * 60  # minute and hour match once a day
    at = time.gmtime(target)
    minute, hour = b"%d" % at.tm_min, b"%d" % at.tm_hour
    with Peer(server.address) as peer:
        peer.send(P.SUBMIT_JOB_SCHED, b"report", b"once", minute, hour, b"", b"", b"", b"data")
        handle = peer.expect(P.JOB_CREATED).args[0]
        peer.send(P.SUBMIT_JOB_SCHED, b"report", b"", b"61", b"", b"", b"", b"", b"x")
        assert peer.expect(P.ERROR).args == (
            b"INVALID_ARGUMENT",
            b"minute field '61': values run from 0 to 59",
        )
        peer.send(P.SUBMIT_JOB_SCHED, b"report", b"", b"0", b"0", b"30", b"2", b"", b"x")
        assert peer.expect(P.ERROR).args == (b"INVALID_ARGUMENT", b"The time never comes")
        peer.send(P.ECHO_REQ, b"still here")
        assert peer.expect(P.ECHO_RES).args == (b"still here",)
    with admin_of(server) as admin:
        [job] = admin.show_jobs()
        assert (job.handle, job.state) == (handle, "scheduled")
    if store == "sqlite":
        with sqlite3.connect(tmp_path / "queue.sqlite3") as db:
            rows = db.execute("SELECT unique_key, when_to_run FROM gearman_queue").fetchall()
        assert rows == [("once", target)]


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
def test_a_server_killed_right_after_a_tick_submits_it_once(
    pg_dsn: str, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    # Cron's unit is the minute: this waits for the next minute boundary (up to 60 s), once for
    # both stores, a server on SQLite and one on PostgreSQL side by side.
    stores = {
        "sqlite": f"sqlite:///{tmp_path}/queue.sqlite3",
        "postgresql": f"{pg_dsn}?table=ticks_{secrets.token_hex(4)}",
    }
    running, dues = {}, {}
    for name, url in stores.items():
        (tmp_path / name).mkdir()
        running[name] = start_server(tmp_path / name, url)
        servers.append(running[name])
        with admin_of(running[name]) as admin:
            dues[name] = admin.add_schedule("every", "minutely", "* * * * *", "tick")
    # No worker: the job waits in the store. SIGKILL as soon as the tick's job is there, before
    # or after the commit that holds both the job and the schedule's next tick: either both are
    # stored or neither is (and the restarted server submits the tick, still due, once).
    deadline = time.monotonic() + 90
    while running:
        assert time.monotonic() < deadline, f"no tick's job on {sorted(running)}"
        for name, server in list(running.items()):
            with admin_of(server) as admin:
                if admin.show_jobs():
                    server.stop(signal.SIGKILL)
                    del running[name]
        time.sleep(0.02)
    for name, url in stores.items():
        server = start_server(tmp_path / name, url)
        servers.append(server)
        with admin_of(server) as admin:
            wait_until(lambda: admin.show_unique_jobs() != [], f"the tick ({name}) again")
            ticks = admin.show_unique_jobs()
            [schedule] = admin.schedules()
        # One job for the tick (a second one only for the next minute's tick, should the
        # restart have crossed it), and the schedule waits for a later tick.
        due = dues[name]
        assert ticks[0] == b"every@%d" % due, name
        assert ticks[1:] in ([], [b"every@%d" % (due + 60)]), name
        assert schedule.due > due, name
