"""``gearsql submit`` and ``gearsql work`` as real processes, against gearsql and C gearmand, and
against Debian's ``gearman`` program in both directions."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ServerProcess, free_port, need_tool

from gearsql.adminclient import AdminClient
from gearsql.cli import cli

# Never let the developer's own $GEARMAN_SERVERS pick the server under test.
CLEAN_ENV = {key: value for key, value in os.environ.items() if key != "GEARMAN_SERVERS"}
WAIT = 20.0  # the longest any program here may run


def at(server: ServerProcess) -> list[str]:
    return ["-h", server.host, "-p", str(server.port)]


def gearsql(*args: str) -> list[str]:
    return [sys.executable, "-m", "gearsql", *args]


def run(argv: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run a program to its end (killed after WAIT seconds), stdout and stderr kept apart."""
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=WAIT, env=CLEAN_ENV)


class Programs:
    """Programs started in the background by a test; whatever still runs at its end is killed."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], **options: object) -> subprocess.Popen[bytes]:
        options.setdefault("stdin", subprocess.DEVNULL)
        options.setdefault("stdout", subprocess.PIPE)
        options.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(argv, env=CLEAN_ENV, **options)  # type: ignore[call-overload]
        self.started.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


@pytest.fixture
def programs() -> Iterator[Programs]:
    started = Programs()
    try:
        yield started
    finally:
        started.kill_all()


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, bytes, bytes]:
    """Wait for a program to exit by itself: (exit status, stdout, stderr)."""
    out, err = proc.communicate(timeout=WAIT)
    return proc.returncode, out, err


def read_until(proc: subprocess.Popen[bytes], expected: bytes) -> bytes:
    """Read the program's stdout until ``expected`` has come, without waiting for it to end."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + WAIT
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while expected not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"waited for {expected!r}, got {seen!r}"
            if selector.select(remaining):
                chunk = os.read(fd, 4096)
                assert chunk, f"stdout closed before {expected!r}; got {seen!r}"
                seen += chunk
    return seen


def wait_for_status(server: ServerProcess, function: bytes, running: int) -> None:
    deadline = time.monotonic() + WAIT
    with AdminClient(*server.address) as admin:
        while time.monotonic() < deadline:
            if any(f.name == function and f.running == running for f in admin.status()):
                return
            time.sleep(0.05)
    raise AssertionError(f"{function!r} never had {running} running jobs")


# ---------------------------------------------------------------------------- round trips


def test_foreground_job_runs_through_the_workers_command(
    any_server: ServerProcess, programs: Programs
) -> None:
    worker = programs.start(gearsql("work", *at(any_server), "-f", "rev", "-c", "1", "--", "rev"))
    done = run(gearsql("submit", *at(any_server), "-f", "rev", "--", "hello"))
    assert (done.returncode, done.stdout, done.stderr) == (0, b"olleh", b"")
    assert finish(worker)[0] == 0  # -c 1: exits after its one job


def test_each_stdin_line_is_a_job_and_p_prefixes_output_lines(
    any_server: ServerProcess, programs: Programs
) -> None:
    programs.start(gearsql("work", *at(any_server), "-f", "rev", "--", "rev"))
    done = run(gearsql("submit", *at(any_server), "-n", "-P", "-f", "rev"), stdin=b"abc\ndef\n")
    assert (done.returncode, done.stdout) == (0, b"rev: cba\nrev: fed\n")
    # -N strips each line's newline before it is sent.
    done = run(gearsql("submit", *at(any_server), "-N", "-f", "rev"), stdin=b"abc\ndef\n")
    assert (done.returncode, done.stdout) == (0, b"cbafed")


def test_work_n_sends_each_output_line_as_work_data(
    gearsql_server: ServerProcess, programs: Programs
) -> None:
    command = ["printf", "one\\ntwo\\n"]
    programs.start(gearsql("work", *at(gearsql_server), "-n", "-f", "lines", "--", *command))
    programs.start(gearsql("work", *at(gearsql_server), "-N", "-f", "stripped", "--", *command))
    done = run(gearsql("submit", *at(gearsql_server), "-P", "-s", "-f", "lines"))
    assert (done.returncode, done.stdout) == (0, b"lines: one\nlines: two\n")
    done = run(gearsql("submit", *at(gearsql_server), "-s", "-f", "stripped"))
    assert (done.returncode, done.stdout) == (0, b"onetwo")


def test_background_jobs_print_nothing_and_the_worker_gets_them(
    any_server: ServerProcess, programs: Programs
) -> None:
    done = run(gearsql("submit", *at(any_server), "-b", "-f", "collect", "--", "one\n", "two\n"))
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    # Without a command the worker prints each workload, like `gearman -w`.
    worker = programs.start(gearsql("work", *at(any_server), "-f", "collect", "-c", "2"))
    assert finish(worker) == (0, b"one\ntwo\n", b"")


def test_priorities_decide_which_queued_job_runs_first(
    any_server: ServerProcess, programs: Programs, tmp_path: Path
) -> None:
    for flag, word in (("-L", "low"), ("", "normal"), ("-I", "high")):
        flags = [flag] if flag else []
        done = run(gearsql("submit", *at(any_server), "-b", *flags, "-f", "rank", "--", word))
        assert done.returncode == 0, done.stderr
    log = tmp_path / "order.txt"
    command = ["sh", "-c", 'cat >> "$0"; echo >> "$0"', str(log)]
    worker = programs.start(gearsql("work", *at(any_server), "-f", "rank", "-c", "3", *command))
    assert finish(worker)[0] == 0
    assert log.read_text() == "high\nnormal\nlow\n"


def test_jobs_with_the_same_unique_coalesce(any_server: ServerProcess, programs: Programs) -> None:
    submit = gearsql("submit", *at(any_server), "-b", "-v", "-u", "same", "-f", "once")
    first = run([*submit, "--", "payload"])
    second = run([*submit, "--", "payload"])
    assert first.returncode == second.returncode == 0
    assert first.stdout.startswith(b"H:") and first.stdout == second.stdout  # one job, one handle
    worker = programs.start(gearsql("work", *at(any_server), "-f", "once", "-c", "1"))
    assert finish(worker) == (0, b"payload", b"")
    with AdminClient(*any_server.address) as admin:
        # No job left: gearmand lists the function with a total of 0, gearsql forgets it once
        # its worker has left too.
        assert [f.total for f in admin.status() if f.name == b"once"] in ([0], [])


def test_stdin_lines_are_submitted_as_they_arrive(
    any_server: ServerProcess, programs: Programs
) -> None:
    worker = programs.start(gearsql("work", *at(any_server), "-f", "log_collect"))
    submit = programs.start(
        gearsql("submit", *at(any_server), "-n", "-b", "-f", "log_collect"),
        stdin=subprocess.PIPE,
    )
    assert submit.stdin is not None
    for line in (b"GET /a\n", b"GET /b\n"):
        submit.stdin.write(line)
        submit.stdin.flush()
        assert read_until(worker, line) == line
        assert submit.poll() is None  # the writer is still open: this is `tail -f`
    assert finish(submit)[0] == 0  # communicate() closes its stdin: the end of the input


# ---------------------------------------------------------------------------- stopping


def test_sigterm_lets_the_worker_finish_the_job_in_hand(
    gearsql_server: ServerProcess, programs: Programs
) -> None:
    command = ["sh", "-c", "sleep 1; cat"]
    worker = programs.start(gearsql("work", *at(gearsql_server), "-f", "slow", "--", *command))
    submit = programs.start(gearsql("submit", *at(gearsql_server), "-f", "slow", "--", "done"))
    wait_for_status(gearsql_server, b"slow", running=1)
    worker.send_signal(signal.SIGTERM)
    assert finish(submit) == (0, b"done", b"")
    assert finish(worker)[0] == 0


# ---------------------------------------------------------------------------- errors


def test_a_failing_command_fails_the_job(any_server: ServerProcess, programs: Programs) -> None:
    command = ["sh", "-c", "echo partial; exit 3"]
    programs.start(gearsql("work", *at(any_server), "-f", "broken", "-c", "1", "--", *command))
    done = run(gearsql("submit", *at(any_server), "-s", "-f", "broken"))
    assert done.returncode == 1
    assert done.stdout == b"partial\n"  # sent as WORK_DATA before WORK_FAIL, as gearman -w does
    assert done.stderr == b"gearsql: broken: the job failed\n"


@pytest.mark.parametrize("mode", [[], ["-b"]])
def test_a_server_that_is_down_is_one_error_line(mode: list[str]) -> None:
    done = run(gearsql("submit", "-p", str(free_port()), *mode, "-s", "-f", "anything"))
    assert done.returncode == 1
    assert done.stdout == b""
    assert done.stderr.startswith(b"gearsql: no job server reachable: 127.0.0.1:")
    assert done.stderr.count(b"\n") == 1


def test_a_job_without_a_result_in_time_is_a_timeout(gearsql_server: ServerProcess) -> None:
    done = run(gearsql("submit", *at(gearsql_server), "-t", "200", "-s", "-f", "nobody"))
    assert (done.returncode, done.stdout) == (1, b"")
    assert done.stderr == b"gearsql: nobody: no result within 200 ms\n"


def test_bad_arguments_are_refused_before_anything_is_sent() -> None:
    runner = CliRunner()
    both = runner.invoke(cli, ["submit", "-p", "1", "-I", "-L", "-f", "f", "-s"])
    assert both.exit_code == 2 and "give -I (high) or -L (low), not both" in both.output
    long_unique = runner.invoke(cli, ["submit", "-p", "1", "-u", "u" * 65, "-f", "f", "-s"])
    assert long_unique.exit_code == 1 and long_unique.output.startswith("gearsql: ")
    missing = runner.invoke(cli, ["work", "-p", "1", "-f", "f", "--", "no-such-command-here"])
    assert missing.exit_code == 1
    assert missing.output == "gearsql: command not found: no-such-command-here\n"


# ---------------------------------------------------------------------------- interop


@pytest.mark.interop
def test_gearsql_submit_to_a_debian_gearman_worker(
    any_server: ServerProcess, programs: Programs
) -> None:
    gearman = need_tool("gearman")
    argv = [gearman, "-w", "-h", any_server.host, "-p", str(any_server.port)]
    worker = programs.start([*argv, "-f", "up", "-c", "1", "--", "tr", "a-z", "A-Z"])
    done = run(gearsql("submit", *at(any_server), "-f", "up"), stdin=b"hello\n")
    assert (done.returncode, done.stdout, done.stderr) == (0, b"HELLO\n", b"")
    assert finish(worker)[0] == 0


@pytest.mark.interop
def test_debian_gearman_client_to_a_gearsql_worker(
    any_server: ServerProcess, programs: Programs
) -> None:
    gearman = need_tool("gearman")
    argv = [gearman, "-h", any_server.host, "-p", str(any_server.port)]
    command = ["tr", "a-z", "A-Z"]  # no `--`: the first argument that is no option starts it
    worker = programs.start(gearsql("work", *at(any_server), "-f", "up", "-c", "1", *command))
    done = run([*argv, "-f", "up"], stdin=b"hello\n")
    assert (done.returncode, done.stdout) == (0, b"HELLO\n")
    assert finish(worker)[0] == 0
    # A failing command is a failed job for gearman too.
    programs.start(gearsql("work", *at(any_server), "-f", "broken", "-c", "1", "false"))
    done = run([*argv, "-s", "-f", "broken"])
    assert done.returncode == 1 and b"Job failed" in done.stderr


# ---------------------------------------------------------------------- nobody to do the job


def read_stderr_until(proc: subprocess.Popen[bytes], expected: bytes) -> bytes:
    """Read the program's stderr until ``expected`` has come, without waiting for it to end."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + WAIT
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while expected not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"waited for {expected!r} on stderr, got {seen!r}"
            if selector.select(remaining):
                chunk = os.read(fd, 4096)
                assert chunk, f"stderr closed before {expected!r}; got {seen!r}"
                seen += chunk
    return seen


def test_submit_says_once_that_no_worker_is_registered_and_keeps_waiting(
    any_server: ServerProcess, programs: Programs
) -> None:
    submit = programs.start(gearsql("submit", *at(any_server), "-f", "nobody_yet", "hi"))
    said = read_stderr_until(submit, b"\n")
    assert (
        said
        == (
            f"gearsql: no worker is registered for 'nobody_yet' on 127.0.0.1:{any_server.port}; "
            "still waiting (Ctrl-C stops; -t MS sets a timeout)\n"
        ).encode()
    )
    # Still waiting: a worker that comes now gets the job, and the result is printed.
    programs.start(gearsql("work", *at(any_server), "-f", "nobody_yet", "-c", "1"))
    code, out, err = finish(submit)
    assert (code, out, err) == (0, b"hi", b"")


def test_submit_says_nothing_while_a_registered_worker_is_busy(
    any_server: ServerProcess, programs: Programs
) -> None:
    """The job outlasts the notice's delay, but a worker has the function: nothing to say."""
    programs.start(
        gearsql("work", *at(any_server), "-f", "slow", "-c", "1", "--", "sh", "-c", "sleep 4; cat")
    )
    deadline = time.monotonic() + WAIT
    with AdminClient(*any_server.address) as admin:
        while not any(f.name == b"slow" and f.workers for f in admin.status()):
            assert time.monotonic() < deadline, "the worker never registered"
            time.sleep(0.05)
    done = run(gearsql("submit", *at(any_server), "-f", "slow", "hi"))
    assert (done.returncode, done.stdout, done.stderr) == (0, b"hi", b"")
