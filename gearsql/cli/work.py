"""``gearsql work``: the ``gearman`` program's worker mode, serving a function by piping each
job through a command (:class:`gearsql.worker_command.CommandRunner`)."""

from __future__ import annotations

import shutil

import click

from gearsql.cli._options import (
    CONTEXT,
    CommandError,
    binary_stream,
    library_logging,
    per_line_options,
    server_address_options,
)
from gearsql.worker import Worker
from gearsql.worker_command import CommandRunner


@click.command(context_settings={**CONTEXT, "allow_interspersed_args": False})
@server_address_options
@click.option(
    "-f",
    "--function",
    "functions",
    multiple=True,
    required=True,
    metavar="FUNCTION",
    help="Function to serve; repeat for several.",
)
@click.option(
    "-c",
    "--count",
    type=click.IntRange(1),
    metavar="COUNT",
    help="Number of jobs to run before exiting.",
)
@per_line_options(client=False)
@click.argument("command", metavar="[--] [COMMAND [ARGS]...]", nargs=-1, type=click.UNPROCESSED)
def work(
    servers: list[tuple[str, int]],
    functions: tuple[str, ...],
    count: int | None,
    per_line: str | None,
    command: tuple[str, ...],
) -> None:
    """Serve jobs by piping each through COMMAND, like `gearman -w`.

    Each job's workload goes to the stdin of a new COMMAND process, and what it prints on stdout
    is the job's result; its stderr is this program's. A non-zero exit status fails the job
    (WORK_FAIL, after the output as WORK_DATA). Without COMMAND the workload is printed on
    stdout and also sent back as the result.

    One job runs at a time. SIGTERM or SIGINT lets the job in hand finish, then exits with status
    0. A server that cannot be reached is retried, with a warning on stderr.
    """
    if command and shutil.which(command[0]) is None:
        raise CommandError(f"command not found: {command[0]}")
    library_logging()
    worker = Worker(servers)
    runner = CommandRunner(command, per_line, count, worker.stop, binary_stream("stdout"))
    for function in functions:
        worker.register(function, runner.run)
    worker.run_forever(handle_signals=True)


COMMANDS = [work]
