"""A worker's job handler that pipes each workload through a command, as ``gearman -w`` does
(the handler of ``gearsql work``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import BinaryIO

from gearsql.worker import WorkerJob

# Longest line `work -n` reads from its command (asyncio's default limit is 64 KiB).
MAX_OUTPUT_LINE = 64 * 1024 * 1024


def strip_line(line: bytes, per_line: str | None) -> bytes:
    """``line`` without its newline when ``per_line`` is ``"strip"`` (``-N``), else as it is."""
    return line[:-1] if per_line == "strip" and line.endswith(b"\n") else line


class CommandRunner:
    """The job handler of `gearsql work`: pipes each workload through ``command`` in a new
    process (or, with no command, writes it to ``echo``), and calls ``stop`` after ``count`` jobs.

    The command's stdout is the job's result; with ``per_line`` (``"keep"`` or ``"strip"``) each
    line it prints is sent as WORK_DATA as soon as it is printed, and the result is empty. A
    non-zero exit status sends what it printed as WORK_DATA, then WORK_FAIL. Register
    :meth:`run` as the handler of each function.
    """

    def __init__(
        self,
        command: tuple[str, ...],
        per_line: str | None,
        count: int | None,
        stop: Callable[[], None],
        echo: BinaryIO,
    ) -> None:
        self.command = command
        self.echo = echo
        self.per_line = per_line
        self.count = count
        self.stop = stop
        self.done = 0
        self.log = logging.getLogger("gearsql.work")

    async def run(self, job: WorkerJob) -> bytes:
        try:
            if not self.command:
                # gearman -w prints the workload; gearsql also sends it back as the result.
                self.echo.write(job.data)
                self.echo.flush()
                return job.data
            return await self._pipe(job)
        finally:
            self.done += 1
            if self.count is not None and self.done >= self.count:
                self.stop()  # the result is still sent: the worker finishes the job in hand

    async def _pipe(self, job: WorkerJob) -> bytes:
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=MAX_OUTPUT_LINE,
                # Its own session: a Ctrl-C meant for the worker does not kill the job in hand.
                start_new_session=True,
            )
        except OSError as exc:
            self.log.error("cannot run %s: %s", self.command[0], exc.strerror or exc)
            job.fail()
            return b""
        assert process.stdin is not None and process.stdout is not None
        feeding = asyncio.ensure_future(_feed(process.stdin, job.data))
        output = b""
        if self.per_line:
            async for line in process.stdout:
                job.send_data(strip_line(line, self.per_line))
        else:
            output = await process.stdout.read()
        await feeding
        status = await process.wait()
        if status != 0:
            # As gearman -w: what the command printed goes to the client as WORK_DATA, then
            # WORK_FAIL.
            if output:
                job.send_data(output)
            job.fail()
            function = job.function.decode("utf-8", "backslashreplace")
            self.log.warning("%s: %s exited with status %d", function, self.command[0], status)
        return output


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    """Write the workload to the command and close its stdin, so that it sees the end."""
    try:
        stdin.write(data)
        await stdin.drain()
        stdin.close()
        await stdin.wait_closed()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the command exited without reading all of its input: its exit status tells
