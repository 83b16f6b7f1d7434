"""The handler behind `gearsql work`, without the command line: a real job server, a real worker
and real child processes."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from conftest import ServerProcess
from test_client import WAIT, run, serving, url

from gearsql import AsyncClient, AsyncWorker, JobFailed
from gearsql.worker_command import CommandRunner, strip_line

PYTHON = sys.executable


def test_strip_line_drops_the_newline_only_for_strip() -> None:
    assert strip_line(b"a\n", "strip") == b"a"
    assert strip_line(b"a\n", "keep") == b"a\n"
    assert strip_line(b"a\n", None) == b"a\n"
    assert strip_line(b"a", "strip") == b"a"


def test_the_workload_goes_to_the_commands_stdin_and_its_stdout_is_the_result(
    gearsql_server: ServerProcess,
) -> None:
    async def main() -> None:
        worker = AsyncWorker(url(gearsql_server))
        runner = CommandRunner(("tr", "a-z", "A-Z"), None, None, worker.stop, io.BytesIO())
        worker.register("upper", runner.run)
        async with serving(worker), AsyncClient(url(gearsql_server)) as client:
            assert await client.submit("upper", b"hello\nworld", timeout=WAIT) == b"HELLO\nWORLD"
        assert runner.done == 1

    run(main())


@pytest.mark.parametrize(
    ("per_line", "lines"), [("keep", [b"a\n", b"b\n"]), ("strip", [b"a", b"b"])]
)
def test_per_line_sends_each_printed_line_as_work_data(
    gearsql_server: ServerProcess, per_line: str, lines: list[bytes]
) -> None:
    async def main() -> None:
        worker = AsyncWorker(url(gearsql_server))
        runner = CommandRunner(("cat",), per_line, None, worker.stop, io.BytesIO())
        worker.register("lines", runner.run)
        data: list[bytes] = []
        async with serving(worker), AsyncClient(url(gearsql_server)) as client:
            result = await client.submit("lines", b"a\nb\n", timeout=WAIT, on_data=data.append)
        assert result == b""
        assert data == lines

    run(main())


def test_a_non_zero_exit_sends_the_output_then_fails_the_job(
    gearsql_server: ServerProcess,
) -> None:
    script = "import sys; sys.stdout.write('partial'); sys.exit(3)"

    async def main() -> None:
        worker = AsyncWorker(url(gearsql_server))
        runner = CommandRunner((PYTHON, "-c", script), None, None, worker.stop, io.BytesIO())
        worker.register("broken", runner.run)
        data: list[bytes] = []
        async with serving(worker), AsyncClient(url(gearsql_server)) as client:
            with pytest.raises(JobFailed):
                await client.submit("broken", b"x", timeout=WAIT, on_data=data.append)
        assert data == [b"partial"]

    run(main())


def test_a_command_that_cannot_start_fails_the_job(
    gearsql_server: ServerProcess, tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-such-program")

    async def main() -> None:
        worker = AsyncWorker(url(gearsql_server))
        runner = CommandRunner((missing,), None, None, worker.stop, io.BytesIO())
        worker.register("missing", runner.run)
        async with serving(worker), AsyncClient(url(gearsql_server)) as client:
            with pytest.raises(JobFailed):
                await client.submit("missing", b"x", timeout=WAIT)

    run(main())


def test_without_a_command_the_workload_is_echoed_and_returned(
    gearsql_server: ServerProcess,
) -> None:
    async def main() -> None:
        worker = AsyncWorker(url(gearsql_server))
        echo = io.BytesIO()
        runner = CommandRunner((), None, None, worker.stop, echo)
        worker.register("echo", runner.run)
        async with serving(worker), AsyncClient(url(gearsql_server)) as client:
            assert await client.submit("echo", b"one", timeout=WAIT) == b"one"
            assert await client.submit("echo", b"two", timeout=WAIT) == b"two"
        assert echo.getvalue() == b"onetwo"

    run(main())


def test_count_stops_the_worker_after_that_many_jobs_and_sends_the_last_result(
    gearsql_server: ServerProcess,
) -> None:
    async def main() -> None:
        worker = AsyncWorker(url(gearsql_server))
        stops: list[int] = []

        def stop() -> None:
            stops.append(runner.done)
            worker.stop()

        runner = CommandRunner((), None, 2, stop, io.BytesIO())
        worker.register("counted", runner.run)
        async with serving(worker), AsyncClient(url(gearsql_server)) as client:
            assert await client.submit("counted", b"1", timeout=WAIT) == b"1"
            assert stops == []
            assert await client.submit("counted", b"2", timeout=WAIT) == b"2"
        assert stops == [2]

    run(main())
