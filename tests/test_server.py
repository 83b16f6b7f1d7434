"""End-to-end behaviour of `gearsql server` as a real process on a real socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ServerProcess, free_port, need_tool
from wire import Peer

from gearsql.protocol import PacketType as P
from gearsql.protocol import pack_request


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gearsql", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_help_explains_every_option() -> None:
    result = run_cli("server", "--help")
    assert result.returncode == 0
    for option in (
        "--port",
        "--listen",
        "--job-retries",
        "--worker-wakeup",
        "--exceptions",
        "--job-handle-prefix",
        "--keepalive",
        "--keepalive-idle",
        "--keepalive-interval",
        "--keepalive-count",
        "--log-file",
        "--verbose",
        "--pid-file",
        "--config-file",
        "--max-packet-size",
        "--store",
        "--max-connections",
    ):
        assert option in result.stdout, option


def test_sigterm_stops_cleanly_and_removes_pid_file(tmp_path: Path) -> None:
    pid_file = tmp_path / "gearsql.pid"
    server = ServerProcess("gearsql", tmp_path / "log", ["--pid-file", str(pid_file)]).start()
    assert server.proc is not None
    assert pid_file.read_text().strip() == str(server.proc.pid)
    with Peer(server.address) as worker:
        worker.send(P.CAN_DO, b"f")
        worker.send(P.ECHO_REQ, b"ping")
        worker.expect(P.ECHO_RES)
        assert server.stop(signal.SIGTERM) == 0
        assert worker.closed_within(5)
    assert not pid_file.exists()
    assert "stopped" in server.log()


def test_config_file_is_read_and_command_line_overrides_it(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "gearsql.conf"
    config.write_text(
        f"# comment line\n--port {port}\n--job-handle-prefix FROMFILE  # trailing comment\n"
        "--verbose DEBUG\n"
    )
    server = ServerProcess(
        "gearsql", tmp_path / "log", ["--config-file", str(config), "--job-handle-prefix", "CLI"]
    )
    server.port = port
    # ServerProcess passes --port itself; the file's value and ours agree, the prefix is
    # overridden by the command line, the verbose level comes from the file.
    server.start()
    try:
        with Peer(server.address) as client:
            client.send(P.SUBMIT_JOB_BG, b"f", b"", b"x")
            handle = client.expect(P.JOB_CREATED).args[0]
            assert handle.startswith(b"CLI:")
            assert client.admin("verbose", list_reply=False) == b"OK INFO\n"
    finally:
        server.stop()


def test_config_file_alone_sets_the_port(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "gearsql.conf"
    config.write_text(f"--port {port} --listen 127.0.0.1\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gearsql",
            "server",
            "--config-file",
            str(config),
            "--log-file",
            str(tmp_path / "log"),
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        from conftest import wait_for_port

        wait_for_port(port, proc)
        with Peer(("127.0.0.1", port)) as peer:
            peer.send(P.ECHO_REQ, b"hello")
            assert peer.expect(P.ECHO_RES).args == (b"hello",)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_listening_beyond_loopback_needs_explicit_consent(tmp_path: Path) -> None:
    result = run_cli(
        "server", "--port", str(free_port()), "--listen", "0.0.0.0", "--log-file", "stderr"
    )
    assert result.returncode != 0
    assert "--allow-insecure-remote" in result.stderr


def test_unknown_store_is_refused_with_a_clear_message() -> None:
    result = run_cli("server", "--port", str(free_port()), "--store", "redis://nowhere")
    assert result.returncode != 0
    assert "unknown store" in result.stderr


def test_pipelined_submissions_are_answered_in_order(gearsql_server: ServerProcess) -> None:
    with Peer(gearsql_server.address) as client:
        client.send_raw(
            b"".join(
                pack_request(P.SUBMIT_JOB_BG, b"f", f"u{i}".encode(), b"data") for i in range(500)
            )
            + pack_request(P.ECHO_REQ, b"end")
        )
        handles = [client.expect(P.JOB_CREATED).args[0] for _ in range(500)]
        assert client.expect(P.ECHO_RES).args == (b"end",)
        numbers = [int(h.rsplit(b":", 1)[1]) for h in handles]
        assert numbers == sorted(numbers) and len(set(numbers)) == 500


def test_epoch_job_wakes_a_sleeping_worker_when_due(gearsql_server: ServerProcess) -> None:
    with Peer(gearsql_server.address) as worker, Peer(gearsql_server.address) as client:
        worker.send(P.CAN_DO, b"later")
        worker.send(P.PRE_SLEEP)
        when = int(time.time()) + 2
        client.send(P.SUBMIT_JOB_EPOCH, b"later", b"", str(when).encode(), b"payload")
        client.expect(P.JOB_CREATED)
        # Not due yet: the sleeping worker is left alone...
        assert worker.nothing_within(max(0.0, when - time.time() - 0.5))
        # ...and woken when the time comes, with no other event needed.
        worker.expect(P.NOOP, timeout=5)
        assert time.time() >= when
        worker.send(P.GRAB_JOB_UNIQ)
        assigned = worker.expect(P.JOB_ASSIGN_UNIQ)
        assert assigned.args[1] == b"later" and assigned.args[3] == b"payload"


def test_can_do_timeout_requeues_to_another_worker(gearsql_server: ServerProcess) -> None:
    address = gearsql_server.address
    with Peer(address) as slow, Peer(address) as fast, Peer(address) as client:
        slow.send(P.CAN_DO_TIMEOUT, b"job", b"1000")
        client.send(P.SUBMIT_JOB, b"job", b"", b"work")
        handle = client.expect(P.JOB_CREATED).args[0]
        slow.send(P.GRAB_JOB)
        assert slow.expect(P.JOB_ASSIGN).args[0] == handle
        fast.send(P.CAN_DO, b"job")
        fast.send(P.PRE_SLEEP)
        fast.expect(P.NOOP, timeout=5)  # the timeout requeued the job and woke us
        fast.send(P.GRAB_JOB)
        assert fast.expect(P.JOB_ASSIGN).args[0] == handle
        fast.send(P.WORK_COMPLETE, handle, b"done")
        assert client.expect(P.WORK_COMPLETE).args == (handle, b"done")
        # The slow worker's late answer names a job it no longer holds.
        slow.send(P.WORK_COMPLETE, handle, b"late")
        error = slow.expect(P.ERROR)
        assert error.args[0] == b"JOB_NOT_FOUND"
        assert client.nothing_within(0.3)
        assert client.admin("show jobs") == b".\n"
        assert client.admin("status") == b"job\t0\t0\t2\n.\n"


def test_killed_worker_process_job_goes_to_the_next_worker(
    gearsql_server: ServerProcess, tmp_path: Path
) -> None:
    gearman = need_tool("gearman")
    host, port = gearsql_server.address
    # A real worker process (Debian's gearman CLI) that takes the job and never finishes.
    stuck = subprocess.Popen(
        [gearman, "-h", host, "-p", str(port), "-w", "-f", "crash", "-c", "1", "--", "sleep", "60"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with Peer(gearsql_server.address) as client, Peer(gearsql_server.address) as admin:
            deadline = time.monotonic() + 10
            while b"crash\t0\t0\t1" not in admin.admin("status"):
                assert time.monotonic() < deadline, "worker never registered"
                time.sleep(0.05)
            client.send(P.SUBMIT_JOB, b"crash", b"", b"input")
            handle = client.expect(P.JOB_CREATED).args[0]
            while b"crash\t1\t1\t1" not in admin.admin("status"):
                assert time.monotonic() < deadline, "worker never took the job"
                time.sleep(0.05)
            os.kill(stuck.pid, signal.SIGKILL)
            stuck.wait(5)
            # The server learns of the death when the kernel closes the socket; wait for the
            # requeue (queued again, nobody running it, no worker left) before grabbing.
            while b"crash\t1\t0\t0" not in admin.admin("status"):
                assert time.monotonic() < deadline + 10, "the job was never requeued"
                time.sleep(0.05)
            with Peer(gearsql_server.address) as second:
                second.send(P.CAN_DO, b"crash")
                second.send(P.GRAB_JOB)
                assigned = second.expect(P.JOB_ASSIGN)
                assert assigned.args == (handle, b"crash", b"input")
                jobs = admin.admin("show jobs")
                # One retry counted (gearmand's columns), run a second time (gearsql's).
                assert jobs == handle + b"\t1\t0\t0\t2\trunning\t-\n.\n"
                second.send(P.WORK_COMPLETE, handle, b"second worker")
                assert client.expect(P.WORK_COMPLETE).args == (handle, b"second worker")
    finally:
        if stuck.poll() is None:
            stuck.kill()
        stuck.wait(5)


@pytest.mark.parametrize("runs", [1, 3])
def test_job_retries_n_gives_n_runs_after_worker_loss_as_gearmand(
    tmp_path: Path, runs: int
) -> None:
    server = ServerProcess("gearsql", tmp_path / "log", ["--job-retries", str(runs)]).start()
    try:
        with Peer(server.address) as client:
            client.send(P.SUBMIT_JOB, b"crashy", b"", b"x")
            handle = client.expect(P.JOB_CREATED).args[0]
            for _attempt in range(runs):
                with Peer(server.address) as worker:
                    worker.send(P.CAN_DO, b"crashy")
                    worker.send(P.GRAB_JOB)
                    assert worker.expect(P.JOB_ASSIGN).args[0] == handle
                # The worker's connection drops here without an answer.
            assert client.expect(P.WORK_FAIL).args == (handle,)
        assert "Dropped job due to max retry count" in server.log()
    finally:
        server.stop()


def test_an_exception_in_handling_a_packet_closes_that_connection_only_and_logs_within_limits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in the core (injected: ECHO_REQ raises) costs the connection that triggered it,
    not the server, and its tracebacks go through the log rate limit however often it fires."""
    import asyncio

    from gearsql.server import JobServer, ServerConfig

    async def scenario() -> tuple[list[bool], bytes]:
        server = JobServer(ServerConfig(port=0, store="memory"))
        await server.start()

        def broken(session: object, packet: object) -> None:
            raise RuntimeError("injected core bug")

        server.core._dispatch[P.ECHO_REQ] = broken  # type: ignore[assignment]
        try:
            closed = []
            for _ in range(40):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(pack_request(P.ECHO_REQ, b"boom"))
                closed.append(await asyncio.wait_for(reader.read(), 5) == b"")
                writer.close()
                await writer.wait_closed()
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"version\n")
            answer = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            await writer.wait_closed()
            return closed, answer
        finally:
            await server.close()

    with caplog.at_level("WARNING", logger="gearsql.server"):
        closed, answer = asyncio.run(scenario())
    assert all(closed)
    assert answer.startswith(b"OK ")
    unexpected = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    with_traceback = [r for r in unexpected if r.exc_info]
    assert 1 <= len(with_traceback) <= 10, len(with_traceback)
    assert "injected core bug" in caplog.text
