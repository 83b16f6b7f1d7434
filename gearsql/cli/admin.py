"""The admin commands: ``status``, ``workers``, ``jobs``, ``cancel``, ``maxqueue``, ``version``
and ``top``.

They talk to running job servers (gearsql or C gearmand) over the text admin protocol through
:mod:`gearsql.adminclient`; the tables they print are built in :mod:`gearsql._admintables`.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import click

from gearsql._admintables import (
    RateMemory,
    dead_counts,
    display_name,
    table_lines,
    top_frame,
)
from gearsql._servers import format_address
from gearsql.admin import escape_name
from gearsql.adminclient import AdminClient, FunctionStatus
from gearsql.cli._options import CONTEXT, CommandError, json_option, server_options
from gearsql.errors import GearmanError


def _echo_records(
    records: list[dict[str, Any]], headers: list[str], as_json: bool, many: bool
) -> None:
    """Print records as JSON (always with their ``server``) or as a table (with a SERVER column
    only when several servers were asked)."""
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    keys = list(records[0]) if records else []
    columns = [key for key in keys if many or key != "server"]
    shown = headers if many else [h for h in headers if h != "SERVER"]
    rows: list[list[str | int]] = []
    for record in records:
        row: list[str | int] = []
        for key in columns:
            value = record[key]
            if isinstance(value, bool):
                value = "yes" if value else "no"
            elif value is None:
                value = "-"
            elif isinstance(value, list):
                value = " ".join(value)
            row.append(value)
        rows.append(row)
    click.echo("\n".join(table_lines(shown, rows)))


def _each_server(
    servers: list[tuple[str, int]], timeout: float
) -> Iterator[tuple[str, AdminClient]]:
    """``(host:port, open client)`` for each server in turn, closing each afterwards."""
    for address in servers:
        with AdminClient(*address, timeout=timeout) as client:
            yield client.server, client


@click.command(context_settings=CONTEXT)
@server_options
@json_option
def status(servers: list[tuple[str, int]], timeout: float, as_json: bool) -> None:
    """Show every function's jobs and workers.

    TOTAL counts queued and running jobs; WORKERS counts the workers registered for the
    function, busy or idle; DEAD its dead letters (gearsql; `-` from C gearmand). A function
    stays listed after its workers leave.
    """
    records = []
    for server, client in _each_server(servers, timeout):
        dead = dead_counts(client)
        listed = client.status()
        known = {fn.name for fn in listed}
        listed += [FunctionStatus(name, 0, 0, 0) for name in sorted(set(dead or ()) - known)]
        records += [
            {
                "server": server,
                "function": display_name(fn.name),
                "total": fn.total,
                "running": fn.running,
                "workers": fn.workers,
                "dead": None if dead is None else dead.get(fn.name, 0),
            }
            for fn in listed
        ]
    headers = ["SERVER", "FUNCTION", "TOTAL", "RUNNING", "WORKERS", "DEAD"]
    _echo_records(records, headers, as_json, len(servers) > 1)


@click.command(context_settings=CONTEXT)
@server_options
@json_option
def workers(servers: list[tuple[str, int]], timeout: float, as_json: bool) -> None:
    """Show the connections to the job server and the functions each can do.

    Clients and admin connections (this one too) are listed with no functions. CLIENT-ID is
    `-` when the connection set none.
    """
    records = [
        {
            "server": server,
            "fd": worker.fd,
            "ip": worker.ip,
            "client_id": None if worker.client_id is None else display_name(worker.client_id),
            "functions": [display_name(name) for name in worker.functions],
        }
        for server, client in _each_server(servers, timeout)
        for worker in client.workers()
    ]
    headers = ["SERVER", "FD", "IP", "CLIENT-ID", "FUNCTIONS"]
    _echo_records(records, headers, as_json, len(servers) > 1)


@click.command(context_settings=CONTEXT)
@server_options
@json_option
@click.option("--unique", is_flag=True, help="List the unique ids of the jobs instead.")
def jobs(servers: list[tuple[str, int]], timeout: float, as_json: bool, unique: bool) -> None:
    """Show the jobs the job server holds, queued or running.

    IGNORED marks a cancelled job the server has not dropped yet; QUEUED marks a background job
    held by the queue. From gearsql also ATTEMPTS (runs so far, the one under way included),
    STATE (queued, running, retrying...) and ERROR (the last failed run's); `-` from C
    gearmand. With --unique, list the unique ids of the jobs that have one.
    """
    records: list[dict[str, Any]]
    if unique:
        records = [
            {"server": server, "unique": display_name(name)}
            for server, client in _each_server(servers, timeout)
            for name in client.show_unique_jobs()
        ]
        headers = ["SERVER", "UNIQUE"]
    else:
        records = [
            {
                "server": server,
                "handle": display_name(job.handle),
                "retries": job.retries,
                "ignored": job.ignore,
                "queued": job.queued,
                "attempts": job.attempts,
                "state": job.state,
                "error": None if job.error is None else display_name(job.error),
            }
            for server, client in _each_server(servers, timeout)
            for job in client.show_jobs()
        ]
        headers = ["SERVER", "HANDLE", "RETRIES", "IGNORED", "QUEUED", "ATTEMPTS", "STATE", "ERROR"]
    _echo_records(records, headers, as_json, len(servers) > 1)


@click.command(context_settings=CONTEXT)
@server_options
@click.argument("handles", metavar="HANDLE...", nargs=-1, required=True)
def cancel(servers: list[tuple[str, int]], timeout: float, handles: tuple[str, ...]) -> None:
    """Cancel queued jobs by their handles.

    A job a worker is running cannot be cancelled. On gearsql this also covers a background job
    waiting for its retry, and a dead letter (by the handle it had; it is purged). With several
    servers, each handle is tried on each server until one knows it. Exits with status 1 if
    any handle was unknown.
    """
    unknown = list(handles)
    for _server, client in _each_server(servers, timeout):
        for handle in list(unknown):
            if client.cancel_job(handle):
                click.echo(f"cancelled {handle}")
                unknown.remove(handle)
    if unknown:
        where = ", ".join(format_address(address) for address in servers)
        raise CommandError(f"no job {', '.join(unknown)} on {where}")


def _describe_limits(limits: tuple[int, ...]) -> str:
    words = [str(limit) if limit else "unlimited" for limit in limits]
    if len(set(words)) == 1:
        return words[0]
    return f"high {words[0]}, normal {words[1]}, low {words[2]}"


@click.command(context_settings=CONTEXT)
@server_options
@click.argument("function")
@click.argument("limits", metavar="N [N N]", nargs=-1, required=True, type=click.IntRange(0))
def maxqueue(
    servers: list[tuple[str, int]], timeout: float, function: str, limits: tuple[int, ...]
) -> None:
    """Limit how many jobs FUNCTION may hold; 0 is unlimited.

    One N applies to every priority; three set the high, normal and low limits. A submission
    beyond the limit is refused. The function must be known to the server (a worker registered
    it, a job was submitted for it, or it was created), or the server ignores the limit: that is
    reported as an error.
    """
    if len(limits) not in (1, 3):
        raise click.UsageError("give one limit, or three (high normal low)")
    limit: int | tuple[int, int, int] = (
        limits[0] if len(limits) == 1 else (limits[0], limits[1], limits[2])
    )
    name = function.encode("utf-8")
    for server, client in _each_server(servers, timeout):
        client.maxqueue(name, limit)
        listed = {fn.name for fn in client.status()}
        if name not in listed and escape_name(name) not in listed:
            raise CommandError(
                f"{server} does not know function {function!r}, so it ignored the limit"
            )
        prefix = f"{server}: " if len(servers) > 1 else ""
        click.echo(f"{prefix}maxqueue {function}: {_describe_limits(limits)}")


@click.command(context_settings=CONTEXT)
@server_options
def version(servers: list[tuple[str, int]], timeout: float) -> None:
    """Print the job server's version (`gearsql --version` prints this program's)."""
    for server, client in _each_server(servers, timeout):
        prefix = f"{server}: " if len(servers) > 1 else ""
        click.echo(prefix + client.version())


@click.command(context_settings=CONTEXT)
@server_options
@click.option(
    "-n",
    "--interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0.1),
    metavar="SECONDS",
    help="Time between refreshes.",
)
@click.option("--once", is_flag=True, help="Print one frame and exit.")
def top(servers: list[tuple[str, int]], timeout: float, interval: float, once: bool) -> None:
    """Watch queue depths per function, refreshed until Ctrl-C.

    QUEUED counts jobs waiting for a worker (or for their retry), and HIGH, NORMAL and LOW split
    them by priority; RUNNING counts jobs a worker holds; WORKERS the workers registered for the
    function; DEAD the function's dead letters (gearsql; `-` from C gearmand). From the second
    frame on (gearsql only), since the previous frame: DONE/S jobs completed and FAIL/S runs
    failed or raised per second, WAIT_MS the mean wait of the jobs that started, RUN_MS the mean
    run of those that ended. If a server stops answering after the first frame, the error is
    shown and `top` keeps trying.
    """
    # Ctrl-C (and SIGTERM) must stop it even when it was started with SIGINT ignored, as a
    # non-interactive shell starts a background job: Python then installs no KeyboardInterrupt
    # handler of its own, and the signal would be lost. The handlers are put back afterwards.
    saved = (
        {}
        if once
        else {
            sig: signal.signal(sig, signal.default_int_handler)
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
    )
    try:
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(AdminClient(*a, timeout=timeout)) for a in servers]
            live = not once and sys.stdout.isatty()
            _top_loop(clients, len(servers) > 1, interval, once, live)
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _top_loop(
    clients: list[AdminClient], many: bool, interval: float, once: bool, live: bool
) -> None:
    """Print frames of `top` every ``interval`` seconds (one with ``once``), redrawing the
    screen when ``live``; until KeyboardInterrupt."""
    where = ", ".join(client.server for client in clients)
    memory: RateMemory = {}
    lines = top_frame(clients, many, memory, time.monotonic())
    while True:
        title = f"gearsql top  {where}  {time.strftime('%H:%M:%S')}"
        if live:
            click.clear()
            title += "  (Ctrl-C quits)"
        click.echo("\n".join([title, *lines]))
        if once:
            return
        time.sleep(interval)
        if not live:
            click.echo()
        try:
            lines = top_frame(clients, many, memory, time.monotonic())
        except GearmanError as exc:
            lines = [f"gearsql: {exc}"]


#: The admin commands, for the ``gearsql`` group.
COMMANDS = [status, workers, jobs, cancel, maxqueue, version, top]
