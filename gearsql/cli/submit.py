"""``gearsql submit``: the ``gearman`` program's client mode.

``submit`` and ``work`` (:mod:`gearsql.cli.work`) are the client and worker modes of the
``gearman`` program on top of :class:`gearsql.Client` and :class:`gearsql.Worker`, with the same
one-letter flags, so that shell pipelines written for ``gearman`` read the same with ``gearsql``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

import click

from gearsql._servers import format_address, function_bytes, unique_bytes
from gearsql.admin import escape_name
from gearsql.adminclient import AdminClient
from gearsql.cli._options import (
    CONTEXT,
    binary_stream,
    library_logging,
    per_line_options,
    server_address_options,
)
from gearsql.client import Client, Priority, SyncTask
from gearsql.errors import GearmanError, JobException, JobFailed, JobTimeout, ServerError
from gearsql.worker_command import strip_line


class _Printer:
    """Writes to stdout and stderr from the main thread and the client's thread alike; notes a
    closed pipe (``| head``) instead of raising, so the command can stop quietly."""

    def __init__(self) -> None:
        self.stdout = binary_stream("stdout")
        self.stderr = binary_stream("stderr")
        self.lock = threading.Lock()
        self.broken_pipe = False

    def emit(self, stream: BinaryIO, data: bytes) -> None:
        if not data:
            return
        with self.lock:
            if self.broken_pipe:
                return
            try:
                stream.write(data)
                stream.flush()
            except BrokenPipeError:
                self.broken_pipe = True

    def error(self, message: str) -> None:
        self.emit(self.stderr, f"gearsql: {message}\n".encode("utf-8", "backslashreplace"))


class _Output:
    """One job's output to one stream, written as it arrives. With a ``tag`` (``-P``) every line
    starts with it, and a line split over several WORK_DATA packets is held until it ends."""

    def __init__(self, printer: _Printer, stream: BinaryIO, tag: bytes) -> None:
        self.printer = printer
        self.stream = stream
        self.tag = tag
        self.partial = b""

    def write(self, data: bytes) -> None:
        if self.tag:
            lines = (self.partial + data).split(b"\n")
            self.partial = lines.pop()
            data = b"".join(self.tag + line + b"\n" for line in lines)
        self.printer.emit(self.stream, data)

    def close(self) -> None:
        """The job ended: write its unfinished last line, as it is (no newline is added)."""
        if self.partial:
            self.printer.emit(self.stream, self.tag + self.partial)
            self.partial = b""


def _workloads(data: tuple[str, ...], per_line: str | None, no_input: bool) -> Iterator[bytes]:
    """The jobs' workloads: each DATA argument; or one empty workload (``-s``); or stdin, whole
    or (``-n``/``-N``) line by line as the lines arrive."""
    if data:
        # os.fsencode gives back the argument's bytes, even those that are not UTF-8.
        yield from (os.fsencode(item) for item in data)
    elif no_input:
        yield b""
    else:
        stdin = binary_stream("stdin")
        if per_line is None:
            yield stdin.read()
            return
        # readline returns as soon as a whole line is in the pipe, not when the buffer fills.
        for line in iter(stdin.readline, b""):
            yield strip_line(line, per_line)


def _job_error(exc: GearmanError, timeout_ms: int | None) -> str:
    if isinstance(exc, JobTimeout):
        return f"no result within {timeout_ms} ms"
    if isinstance(exc, JobException):
        return f"the job raised an exception: {exc}"
    if isinstance(exc, ServerError):
        return f"the server refused the job: {exc}"
    return "the job failed"


#: Seconds a foreground job of `submit` waits before the job servers are asked whether any
#: worker can do its function.
NO_WORKER_NOTICE_AFTER = 3.0


class _NoWorkerNotice:
    """Says once on stderr, per function, that no job server has a worker for a foreground job
    that has been waiting for :data:`NO_WORKER_NOTICE_AFTER` seconds, so that `submit -f typo`
    does not hang in silence. The servers are asked with the admin ``status`` command (which
    gearmand answers too), once per wait, on a timer thread; a server that does not answer is
    left out."""

    def __init__(
        self, servers: list[tuple[str, int]], printer: _Printer, timeout_ms: int | None
    ) -> None:
        self.servers = servers
        self.printer = printer
        self.told: set[str] = set()
        self.until = (
            "(Ctrl-C stops; -t MS sets a timeout)"
            if timeout_ms is None
            else f"until the -t timeout of {timeout_ms} ms"
        )

    @contextlib.contextmanager
    def watching(self, jobs: list[tuple[str, SyncTask]]) -> Iterator[None]:
        """While the block waits for ``jobs`` (function, task), check once after the delay."""
        timer = threading.Timer(NO_WORKER_NOTICE_AFTER, self._check, [jobs])
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            timer.join()

    def _workers(self) -> dict[bytes, int] | None:
        """Workers per function name (as listed) over every server that answered; None if
        none did."""
        counts: dict[bytes, int] = {}
        answered = False
        for address in self.servers:
            try:
                with AdminClient(*address, timeout=2.0) as admin:
                    for fn in admin.status():
                        counts[fn.name] = counts.get(fn.name, 0) + fn.workers
                answered = True
            except (GearmanError, OSError):
                continue
        return counts if answered else None

    def _check(self, jobs: list[tuple[str, SyncTask]]) -> None:
        waiting = sorted({f for f, task in jobs if not task.done() and f not in self.told})
        if not waiting:
            return
        counts = self._workers()
        if counts is None:
            return
        where = ", ".join(format_address(address) for address in self.servers)
        for function in waiting:
            name = function_bytes(function)
            if counts.get(name, 0) or counts.get(escape_name(name), 0):
                continue
            self.told.add(function)
            self.printer.error(
                f"no worker is registered for {function!r} on {where}; still waiting " + self.until
            )


def _run_foreground(
    client: Client,
    functions: tuple[str, ...],
    workload: bytes,
    options: dict[str, Any],
    printer: _Printer,
    prefix: bool,
    verbose: bool,
    timeout_ms: int | None,
    notice: _NoWorkerNotice,
) -> int:
    """Run one workload as a foreground job of each function, at once, printing their output
    as it arrives; returns how many jobs failed."""
    jobs: list[tuple[str, SyncTask, _Output, _Output]] = []
    for function in functions:
        tag = f"{function}: ".encode() if prefix else b""
        output = _Output(printer, printer.stdout, tag)
        warnings = _Output(printer, printer.stderr, tag)

        def status(numerator: int, denominator: int, tag: bytes = tag) -> None:
            percent = numerator * 100 // denominator if denominator else 0
            printer.emit(printer.stderr, tag + b"%d%% complete\n" % percent)

        task = client.submit_task(
            function,
            workload,
            on_data=output.write,
            on_warning=warnings.write,
            on_status=status if verbose else None,
            **options,
        )
        jobs.append((function, task, output, warnings))
    deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
    with notice.watching([(function, task) for function, task, _, _ in jobs]):
        return _collect(jobs, printer, deadline, timeout_ms)


def _collect(
    jobs: list[tuple[str, SyncTask, _Output, _Output]],
    printer: _Printer,
    deadline: float | None,
    timeout_ms: int | None,
) -> int:
    """Wait for each job's result and print it (or its error); how many jobs failed."""
    failures = 0
    for function, task, output, warnings in jobs:
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
        try:
            result = task.result(remaining)
        except (JobFailed, JobException, JobTimeout, ServerError) as exc:
            task.cancel()
            failures += 1
            warnings.close()
            printer.error(f"{function}: {_job_error(exc, timeout_ms)}")
        else:
            output.write(result)
        finally:
            output.close()
            warnings.close()
    return failures


@click.command(context_settings=CONTEXT)
@server_address_options
@click.option(
    "-f",
    "--function",
    "functions",
    multiple=True,
    required=True,
    metavar="FUNCTION",
    help="Function to run the jobs; repeat to send each workload to several functions.",
)
@click.option("-b", "--background", is_flag=True, help="Run jobs in the background.")
@click.option("-I", "--high", is_flag=True, help="Run jobs as high priority.")
@click.option("-L", "--low", is_flag=True, help="Run jobs as low priority.")
@click.option(
    "-u",
    "--unique",
    metavar="UNIQUE",
    help="Unique key of the jobs; jobs with the same key coalesce into one while it runs.",
)
@per_line_options(client=True)
@click.option("-s", "--no-input", is_flag=True, help="Send one job without reading stdin.")
@click.option(
    "-P", "--prefix", is_flag=True, help="Prefix all output lines with the function name."
)
@click.option(
    "-t",
    "--timeout",
    "timeout_ms",
    type=click.IntRange(1),
    metavar="MS",
    help="Timeout in milliseconds: for connecting, and for each job's result. "
    "Default: 5 s to connect, then wait as long as the job takes.",
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Print each background job's handle, and foreground jobs' progress on stderr.",
)
@click.argument("data", nargs=-1)
def submit(
    servers: list[tuple[str, int]],
    functions: tuple[str, ...],
    background: bool,
    high: bool,
    low: bool,
    unique: str | None,
    per_line: str | None,
    no_input: bool,
    prefix: bool,
    timeout_ms: int | None,
    verbose: bool,
    data: tuple[str, ...],
) -> None:
    """Submit jobs and print their results, like `gearman` in client mode.

    Each DATA argument is one job (put `--` before DATA that starts with `-`). Without DATA the
    workload is standard input: all of it as one job, or with -n/-N one job per line, each sent
    as soon as its line arrives, so `tail -f log | gearsql submit -n -b -f collect` streams.

    A foreground job's WORK_DATA and result go to stdout as they arrive, its warnings to stderr;
    jobs run one after the other (with several -f, each workload goes to every function at
    once). Background jobs print nothing. A job that fails, raises or times out is reported on
    stderr, the other jobs still run, and the exit status is 1; a server that cannot be reached
    stops the command with status 1. When a foreground job has waited 3 s and no server has a
    worker for its function, that is said once on stderr; the job still waits (see -t).
    """
    if high and low:
        raise click.UsageError("give -I (high) or -L (low), not both")
    if data and (per_line or no_input):
        raise click.UsageError("DATA arguments are the workload: drop -n/-N/-s, or the DATA")
    for function in functions:
        function_bytes(function)  # a bad name fails here, before stdin is read
    unique_bytes(unique)
    level = Priority.HIGH if high else Priority.LOW if low else Priority.NORMAL
    options: dict[str, Any] = {"unique": unique, "priority": level}
    timeout = None if timeout_ms is None else timeout_ms / 1000
    library_logging()
    printer = _Printer()
    notice = _NoWorkerNotice(servers, printer, timeout_ms)
    failures = 0
    with Client(servers, connect_timeout=timeout or 5.0) as client:
        for workload in _workloads(data, per_line, no_input):
            if background:
                for function in functions:
                    job = client.submit_background(function, workload, timeout=timeout, **options)
                    if verbose:
                        tag = f"{function}: " if prefix else ""
                        printer.emit(printer.stdout, f"{tag}{job.handle.decode()}\n".encode())
            else:
                failures += _run_foreground(
                    client,
                    functions,
                    workload,
                    options,
                    printer,
                    prefix,
                    verbose,
                    timeout_ms,
                    notice,
                )
            if printer.broken_pipe:
                break
    if failures or printer.broken_pipe:
        sys.exit(1)


COMMANDS = [submit]
