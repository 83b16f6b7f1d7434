"""The admin commands of the ``gearsql`` CLI against real job servers (gearsql and C gearmand)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import ServerProcess, free_port
from wire import Peer

import gearsql
from gearsql.adminclient import AdminClient
from gearsql.cli import cli
from gearsql.protocol import PacketType as P

# Never let the developer's own $GEARMAN_SERVERS pick the server under test.
CLEAN_ENV = {key: value for key, value in os.environ.items() if key != "GEARMAN_SERVERS"}


def run(server: ServerProcess, *args: str, env: dict[str, str | None] | None = None) -> Result:
    """``gearsql ARGS -h 127.0.0.1 -p PORT`` in-process; asserts it succeeded."""
    result = CliRunner().invoke(
        cli,
        [*args, "-h", server.host, "-p", str(server.port)],
        env={"GEARMAN_SERVERS": None, **(env or {})},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return result


def run_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m gearsql ARGS`` as a real process, stdout and stderr kept apart."""
    return subprocess.run(
        [sys.executable, "-m", "gearsql", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**CLEAN_ENV, **(env or {})},
    )


def sync(peer: Peer) -> None:
    peer.send(P.ECHO_REQ, b"sync")
    peer.expect(P.ECHO_RES)


def submit_background(peer: Peer, function: bytes, unique: bytes = b"") -> bytes:
    peer.send(P.SUBMIT_JOB_BG, function, unique, b"payload")
    return peer.expect(P.JOB_CREATED).args[0]


def frame_body(output: str) -> list[str]:
    """A `top` frame without its title line (which carries the time)."""
    title, *lines = output.rstrip("\n").split("\n")
    assert title.startswith("gearsql top  127.0.0.1:")
    return lines


# ---------------------------------------------------------------------------- listings


def test_status_prints_a_table_of_functions(any_server: ServerProcess) -> None:
    with Peer(any_server.address) as client, Peer(any_server.address) as worker:
        submit_background(client, b"resize")
        submit_background(client, b"resize")
        submit_background(client, b"mail")
        worker.send(P.CAN_DO, b"resize")
        worker.send(P.GRAB_JOB)
        worker.expect(P.JOB_ASSIGN)

        output = run(any_server, "status").output

    header, *rows = output.splitlines()
    assert header == "FUNCTION  TOTAL  RUNNING  WORKERS  DEAD"
    # DEAD counts dead letters: gearsql's own, `-` from C gearmand.
    dead = "     0" if any_server.kind == "gearsql" else "  -"
    assert sorted(rows) == [
        f"mail          1        0        0{dead}",
        f"resize        2        1        1{dead}",
    ]


def test_status_json_lists_one_object_per_function(any_server: ServerProcess) -> None:
    with Peer(any_server.address) as client:
        submit_background(client, b"mail")

        output = run(any_server, "status", "--json").output

    assert json.loads(output) == [
        {
            "server": f"127.0.0.1:{any_server.port}",
            "function": "mail",
            "total": 1,
            "running": 0,
            "workers": 0,
            "dead": 0 if any_server.kind == "gearsql" else None,
        }
    ]


def test_status_of_an_empty_server_prints_only_the_header(any_server: ServerProcess) -> None:
    assert run(any_server, "status").output == "FUNCTION  TOTAL  RUNNING  WORKERS  DEAD\n"
    assert json.loads(run(any_server, "status", "--json").output) == []


def test_workers_lists_connections_with_client_id_and_functions(
    any_server: ServerProcess,
) -> None:
    with Peer(any_server.address) as worker:
        worker.send(P.SET_CLIENT_ID, b"resizer-1")
        worker.send(P.CAN_DO, b"resize")
        worker.send(P.CAN_DO, b"crop")
        sync(worker)

        table = run(any_server, "workers").output
        records = json.loads(run(any_server, "workers", "--json").output)

    assert table.splitlines()[0].split() == ["FD", "IP", "CLIENT-ID", "FUNCTIONS"]
    (row,) = [line.split() for line in table.splitlines() if "resizer-1" in line]
    assert row[1:3] == ["127.0.0.1", "resizer-1"]
    assert sorted(row[3:]) == ["crop", "resize"]
    (record,) = [r for r in records if r["client_id"] == "resizer-1"]
    assert sorted(record["functions"]) == ["crop", "resize"]
    assert record["ip"] == "127.0.0.1"


def test_jobs_lists_handles_and_unique_lists_uniques(any_server: ServerProcess) -> None:
    with Peer(any_server.address) as client:
        handle = submit_background(client, b"mail", unique=b"welcome-42").decode()

        jobs = run(any_server, "jobs").output
        uniques = run(any_server, "jobs", "--unique").output
        records = json.loads(run(any_server, "jobs", "--json").output)

    header, row = jobs.splitlines()
    assert header.split() == [
        "HANDLE",
        "RETRIES",
        "IGNORED",
        "QUEUED",
        "ATTEMPTS",
        "STATE",
        "ERROR",
    ]
    # gearsql's own columns: runs so far, state, last error; `-` from C gearmand.
    extra = ["0", "queued", "-"] if any_server.kind == "gearsql" else ["-", "-", "-"]
    assert row.split() == [handle, "0", "no", "yes", *extra]
    assert uniques.splitlines() == ["UNIQUE", "welcome-42"]
    gearsql_only = any_server.kind == "gearsql"
    assert records == [
        {
            "server": f"127.0.0.1:{any_server.port}",
            "handle": handle,
            "retries": 0,
            "ignored": False,
            "queued": True,
            "attempts": 0 if gearsql_only else None,
            "state": "queued" if gearsql_only else None,
            "error": None,
        }
    ]


# ---------------------------------------------------------------------------- commands


def test_cancel_cancels_a_queued_job(any_server: ServerProcess) -> None:
    with Peer(any_server.address) as client:
        handle = submit_background(client, b"doomed").decode()

    assert run(any_server, "cancel", handle).output == f"cancelled {handle}\n"
    with AdminClient(*any_server.address) as admin:
        # gearmand lists it, ignored, until a worker reaches it; gearsql lets go of a cancelled
        # job alone in its queue at once.
        expected = [True] if any_server.kind == "gearmand" else []
        assert [job.ignore for job in admin.show_jobs()] == expected


def test_cancel_of_an_unknown_handle_fails_with_one_line(any_server: ServerProcess) -> None:
    result = run_process("cancel", "H:nowhere:1", "-p", str(any_server.port))

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"gearsql: no job H:nowhere:1 on 127.0.0.1:{any_server.port}\n"


def test_maxqueue_limits_a_function(any_server: ServerProcess) -> None:
    with AdminClient(*any_server.address) as admin:
        admin.create_function("capped")

    assert run(any_server, "maxqueue", "capped", "1").output == "maxqueue capped: 1\n"
    with Peer(any_server.address) as client:
        submit_background(client, b"capped")
        client.send(P.SUBMIT_JOB_BG, b"capped", b"", b"one too many")
        assert client.expect(P.ERROR).args[0] == b"QUEUE_ERROR"

        assert run(any_server, "maxqueue", "capped", "0").output == "maxqueue capped: unlimited\n"
        submit_background(client, b"capped")

    output = run(any_server, "maxqueue", "capped", "5", "0", "2").output
    assert output == "maxqueue capped: high 5, normal unlimited, low 2\n"


def test_maxqueue_of_an_unknown_function_is_an_error(any_server: ServerProcess) -> None:
    result = run_process("maxqueue", "nobody_knows", "3", "-p", str(any_server.port))

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"gearsql: 127.0.0.1:{any_server.port} does not know function 'nobody_knows', "
        "so it ignored the limit\n"
    )


def test_maxqueue_takes_one_limit_or_three() -> None:
    result = CliRunner().invoke(
        cli, ["maxqueue", "f", "1", "2", "-p", str(free_port())], env={"GEARMAN_SERVERS": None}
    )
    assert result.exit_code == 2
    assert "give one limit, or three (high normal low)" in result.output


def test_version_prints_the_servers_version(any_server: ServerProcess) -> None:
    output = run(any_server, "version").output
    if any_server.kind == "gearsql":
        assert output == f"{gearsql.__version__}\n"
    else:
        assert output.startswith("1.1.")


def test_top_once_prints_one_frame_of_queue_depths(any_server: ServerProcess) -> None:
    with Peer(any_server.address) as client, Peer(any_server.address) as worker:
        client.send(P.SUBMIT_JOB_HIGH_BG, b"resize", b"", b"x")
        client.expect(P.JOB_CREATED)
        for _ in range(2):
            client.send(P.SUBMIT_JOB_LOW_BG, b"resize", b"", b"x")
            client.expect(P.JOB_CREATED)
        submit_background(client, b"mail")
        submit_background(client, b"mail")
        worker.send(P.CAN_DO, b"mail")
        worker.send(P.GRAB_JOB)
        worker.expect(P.JOB_ASSIGN)

        output = run(any_server, "top", "--once").output

    # DEAD counts dead letters: gearsql's own, `-` from C gearmand. The rates need two frames.
    dead = "     0" if any_server.kind == "gearsql" else "  -   "
    rates = "  -       -       -        -"
    assert frame_body(output) == [
        "FUNCTION  QUEUED  HIGH  NORMAL  LOW  RUNNING  WORKERS  DEAD  DONE/S  FAIL/S  WAIT_MS"
        "  RUN_MS",
        f"mail           1     0       1    0        1        1{dead}{rates}",
        f"resize         3     1       0    2        0        0{dead}{rates}",
    ]


@pytest.mark.parametrize("started_with", ["SIGINT handled", "SIGINT ignored"])
def test_top_refreshes_until_interrupted(
    gearsql_server: ServerProcess, tmp_path: Path, started_with: str
) -> None:
    """Also when its parent ignores SIGINT, as a non-interactive shell does for a background
    job (`pytest &`): Python then leaves SIGINT ignored, so `top` must set its own handler."""
    out = tmp_path / "top.out"
    command = [sys.executable, "-m", "gearsql", "top", "-p", str(gearsql_server.port), "-n", "0.1"]
    if started_with == "SIGINT ignored":
        command = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *command]
    with (
        out.open("w") as stdout,
        subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE, env=CLEAN_ENV) as proc,
    ):
        try:
            # Frames are printed after the handler is set: only then is a SIGINT sure to reach
            # `top` rather than the interpreter's start-up. The deadline is for a hung `top`,
            # far beyond what a busy machine needs.
            deadline = time.monotonic() + 120
            while out.read_text().count("gearsql top") < 3:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                assert time.monotonic() < deadline, "top printed fewer than 3 frames in 120 s"
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()

    assert proc.returncode == 0
    assert stderr == b""
    frames = out.read_text().split("\n\n")
    assert len(frames) >= 3
    assert frame_body(frames[0]) == [
        "FUNCTION  QUEUED  HIGH  NORMAL  LOW  RUNNING  WORKERS  DEAD  DONE/S  FAIL/S  WAIT_MS"
        "  RUN_MS"
    ]


# ---------------------------------------------------------------------------- servers and errors


def test_a_server_that_is_down_gives_one_error_line_and_status_1() -> None:
    port = free_port()

    result = run_process("status", "-p", str(port))

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"gearsql: cannot connect to 127.0.0.1:{port}: Connection refused\n"


@pytest.mark.parametrize(
    "command",
    ["workers", "jobs", "jobs --unique", "cancel H:x:1", "maxqueue f 1", "version", "top --once"],
)
def test_every_admin_command_reports_a_server_that_is_down(command: str) -> None:
    port = free_port()

    result = CliRunner().invoke(
        cli, [*command.split(), "-p", str(port)], env={"GEARMAN_SERVERS": None}
    )

    assert result.exit_code == 1
    assert result.output == f"gearsql: cannot connect to 127.0.0.1:{port}: Connection refused\n"


def test_host_may_carry_the_port(gearsql_server: ServerProcess) -> None:
    result = CliRunner().invoke(
        cli, ["version", "-h", f"127.0.0.1:{gearsql_server.port}"], env={"GEARMAN_SERVERS": None}
    )
    assert (result.exit_code, result.output) == (0, f"{gearsql.__version__}\n")


def test_servers_lists_every_servers_functions(
    gearsql_server: ServerProcess, gearmand_server: ServerProcess
) -> None:
    servers = [f"127.0.0.1:{gearsql_server.port}", f"127.0.0.1:{gearmand_server.port}"]
    for server in (gearsql_server, gearmand_server):
        with AdminClient(*server.address) as admin:
            admin.create_function(server.kind)

    result = CliRunner().invoke(
        cli, ["status", "--servers", ",".join(servers)], env={"GEARMAN_SERVERS": None}
    )

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "SERVER           FUNCTION  TOTAL  RUNNING  WORKERS  DEAD",
        f"{servers[0]}  gearsql       0        0        0     0",
        f"{servers[1]}  gearmand      0        0        0     -",
    ]


def test_gearman_servers_variable_names_the_server(gearsql_server: ServerProcess) -> None:
    env = {"GEARMAN_SERVERS": f"127.0.0.1:{gearsql_server.port}"}
    result = CliRunner().invoke(cli, ["version"], env=env)
    assert (result.exit_code, result.output) == (0, f"{gearsql.__version__}\n")

    # -h/-p on the command line win over the variable.
    down = free_port()
    result = CliRunner().invoke(cli, ["version", "-p", str(down)], env=env)
    assert result.exit_code == 1


def test_servers_and_host_together_are_a_usage_error() -> None:
    result = run_process("status", "--servers", "127.0.0.1:1", "-h", "127.0.0.1")

    assert result.returncode == 2
    assert "give either --servers or -h/--host and -p/--port, not both" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_is_help_and_h_is_the_host() -> None:
    result = CliRunner().invoke(cli, ["status", "--help"])
    assert result.exit_code == 0
    assert "-h, --host HOST" in result.output
