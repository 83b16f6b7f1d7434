"""The ``gearsql`` command line: ``gearsql server``, ``submit``, ``work`` and the admin commands."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Literal

import click

from gearsql import __version__
from gearsql._servers import (
    DEFAULT_PORT,
    format_address,
    function_bytes,
    parse_server,
    parse_servers,
    unique_bytes,
)
from gearsql.admin import escape_name
from gearsql.adminclient import AdminClient, PriorityStatus
from gearsql.client import Client, Priority, SyncTask
from gearsql.errors import (
    AdminError,
    GearmanError,
    JobException,
    JobFailed,
    JobTimeout,
    ServerError,
)
from gearsql.protocol import DEFAULT_MAX_PACKET_SIZE
from gearsql.relay import SOURCES
from gearsql.stores import default_store_url
from gearsql.worker import Worker, WorkerJob

__all__ = ["cli", "main"]

CONTEXT = {"help_option_names": ["--help"], "max_content_width": 100}

VERBOSE_LEVELS = {
    "FATAL": logging.CRITICAL,
    "ALERT": logging.CRITICAL,
    "CRITICAL": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "NOTICE": 25,
    "INFO": logging.INFO,
    "DEBUG": logging.DEBUG,
}


def read_config_file(path: str) -> list[str]:
    """Options from a gearmand-style configuration file: whitespace-separated, ``#`` comments."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {path}: {exc.strerror}", param_hint="--config-file"
        ) from exc
    return shlex.split(text, comments=True)


class _ConfigFileCommand(click.Command):
    """A command whose ``--config-file FILE`` (or ``@FILE``) options are read first, so that
    options given on the command line override the file's."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        expanded: list[str] = []
        from_files: list[str] = []
        index = 0
        while index < len(args):
            arg = args[index]
            if arg == "--config-file" and index + 1 < len(args):
                from_files += read_config_file(args[index + 1])
                index += 2
                continue
            if arg.startswith("--config-file="):
                from_files += read_config_file(arg.split("=", 1)[1])
            elif arg.startswith("@") and len(arg) > 1:
                from_files += read_config_file(arg[1:])
            else:
                expanded.append(arg)
            index += 1
        return super().parse_args(ctx, from_files + expanded)


def setup_logging(log_file: str, verbose: str) -> None:
    level = VERBOSE_LEVELS[verbose.upper()]
    root = logging.getLogger("gearsql")
    root.setLevel(level)
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if log_file == "none":
        handler = logging.NullHandler()
    elif log_file in ("stderr", "-", ""):
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.propagate = False


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="gearsql")
def cli() -> None:
    """gearsql: a Gearman job server, client and SQL bridge.

    Start a job server with `gearsql server`; every command has --help.
    """


_LOG_FILE_OPTION = click.option(
    "-l",
    "--log-file",
    default="stderr",
    show_default=True,
    metavar="FILE",
    help="Log file; 'stderr', or 'none' for no log.",
)


@cli.command(cls=_ConfigFileCommand, context_settings=CONTEXT)
@click.option(
    "--config-file",
    metavar="FILE",
    help="Read options from FILE first (whitespace-separated, # comments); "
    "also @FILE. Command-line options override the file.",
)
@click.option(
    "-p",
    "--port",
    default=4730,
    show_default=True,
    envvar="GEARMAND_PORT",
    help="TCP port to listen on (also $GEARMAND_PORT).",
)
@click.option(
    "-L",
    "--listen",
    "listen",
    multiple=True,
    metavar="ADDRESS",
    help="Address to listen on; repeat for several. Default 127.0.0.1.",
)
@click.option(
    "-j",
    "--job-retries",
    default=-1,
    show_default=True,
    type=click.IntRange(-1),
    help="Retries of a job whose worker died or timed out: -1 unlimited, 0 none, "
    "N retries; then the job fails to its clients and is dropped.",
)
@click.option(
    "-w",
    "--worker-wakeup",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Sleeping workers to wake (NOOP) per new job; 0 wakes all of them.",
)
@click.option(
    "--exceptions",
    is_flag=True,
    help="Forward WORK_EXCEPTION to every client, not only those that asked.",
)
@click.option(
    "--job-handle-prefix",
    default="",
    metavar="PREFIX",
    help="Job handle prefix; default H:<hostname>.",
)
@click.option(
    "--max-packet-size",
    default=DEFAULT_MAX_PACKET_SIZE,
    show_default=True,
    type=click.IntRange(1024, 512 * 1024 * 1024),
    help="Largest packet body in bytes; larger ones are refused on the header.",
)
@click.option(
    "--max-connections",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Close new connections beyond this many; 0 is no limit.",
)
@click.option(
    "-b",
    "--backlog",
    default=128,
    show_default=True,
    type=click.IntRange(1),
    help="Listen backlog.",
)
@click.option("--keepalive", is_flag=True, help="Enable TCP keepalive on connections.")
@click.option(
    "--keepalive-idle",
    default=-1,
    show_default=True,
    help="Seconds idle before keepalive probes (-1: OS default).",
)
@click.option(
    "--keepalive-interval",
    default=-1,
    show_default=True,
    help="Seconds between keepalive probes (-1: OS default).",
)
@click.option(
    "--keepalive-count",
    default=-1,
    show_default=True,
    help="Unanswered probes before the connection is dropped (-1: OS default).",
)
@click.option(
    "--store",
    default=None,
    metavar="URL",
    help="Where background jobs are kept: sqlite:///RELATIVE/PATH or sqlite:////ABSOLUTE/PATH "
    "(an SQLite file; its directory must exist), postgresql://USER@HOST/DB or "
    "mysql://USER:PASSWORD@HOST/DB (a table in that database; ?table=NAME picks it), or memory "
    "(lost on restart). Default: " + default_store_url(),
)
@click.option(
    "--allow-insecure-remote",
    is_flag=True,
    help="Allow listening on non-loopback addresses without TLS.",
)
@click.option(
    "--remote-admin",
    is_flag=True,
    help="Accept mutating admin commands (cancel, drop, create, maxqueue) from non-loopback peers.",
)
@click.option(
    "--relay",
    multiple=True,
    metavar="DSN",
    help="Also drain this database's outbox into this server, as `gearsql relay --dsn DSN` "
    "does; repeat for several.",
)
@_LOG_FILE_OPTION
@click.option(
    "--verbose",
    default="NOTICE",
    show_default=True,
    type=click.Choice(list(VERBOSE_LEVELS), case_sensitive=False),
    help="Log level.",
)
@click.option("-P", "--pid-file", metavar="FILE", help="Write the process id to FILE.")
def server(
    config_file: str | None,
    listen: tuple[str, ...],
    pid_file: str | None,
    log_file: str,
    verbose: str,
    **options: Any,
) -> None:
    """Run a Gearman job server.

    Speaks the Gearman binary protocol and the text admin protocol on one port, like C gearmand.
    SIGTERM or SIGINT stops it cleanly.
    """
    from gearsql.server import ServerConfig, run_server

    options["store"] = _checked_store(options["store"])
    if pid_file:
        _check_writable(pid_file, "-P/--pid-file")
    try:
        setup_logging(log_file, verbose)
    except OSError as exc:
        raise CommandError(
            f"-l/--log-file: cannot open {log_file}: {exc.strerror or exc}; create its directory "
            "or give another file ('stderr' logs to the terminal or the journal)"
        ) from None
    config = ServerConfig(listen=listen or ("127.0.0.1",), verbose=verbose.upper(), **options)
    sys.exit(run_server(config, pid_file=pid_file))


def _checked_store(url: str | None) -> str:
    """The ``--store`` URL (the default when None), after checking that it names a store
    gearsql has and, for SQLite, that the file's directory exists; CommandError otherwise.
    Nothing is connected: a database that is down is the server's to report and retry."""
    from gearsql.stores import StoreError, open_store
    from gearsql.stores.sqlite import SQLiteStore

    url = url or default_store_url()
    try:
        store = open_store(url)
    except ValueError as exc:
        raise CommandError(f"--store: {exc}") from None
    except ImportError as exc:  # the driver of the postgres or mysql extra
        raise CommandError(
            f"--store: {exc}; install gearsql[postgres] or gearsql[mysql] for that store"
        ) from None
    if isinstance(store, SQLiteStore):
        try:
            store.check_directory()
        except StoreError as exc:
            raise CommandError(f"--store: {exc}") from None
    return url


def _check_writable(path: str, option: str) -> None:
    """CommandError unless ``path``'s directory exists and the file can be written there."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CommandError(f"{option}: {directory} does not exist; create it or give another path")
    if not os.access(directory, os.W_OK | os.X_OK) or (
        os.path.exists(path) and not os.access(path, os.W_OK)
    ):
        raise CommandError(f"{option}: cannot write {path}: permission denied")


# ---------------------------------------------------------------------------- admin commands
#
# `status`, `workers`, `jobs`, `cancel`, `maxqueue`, `version` and `top` talk to running job
# servers (gearsql or C gearmand) over the text admin protocol through gearsql.adminclient.


class CommandError(click.ClickException):
    """A command failed for a reason the user can act on: shown as one ``gearsql: ...`` line
    on stderr, exit status 1, no traceback."""

    def show(self, file: Any = None) -> None:
        click.echo(f"gearsql: {self.message}", err=True)


class ConfigurationError(CommandError):
    """What a command was pointed at cannot work and waiting will not change that (a database
    without the outbox): shown like CommandError, with exit status 2."""

    exit_code = 2


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Turn gearsql errors (admin client, client, worker) into :class:`CommandError`."""
    try:
        yield
    except GearmanError as exc:
        raise CommandError(str(exc)) from None


def _resolve_servers(
    ctx: click.Context, host: str, port: int, servers: str | None
) -> list[tuple[str, int]]:
    """The servers a command talks to: ``--servers`` (or ``$GEARMAN_SERVERS``), else -h/-p.

    -h/-p given on the command line win over ``$GEARMAN_SERVERS``; given together with
    ``--servers`` they are a usage error.
    """
    explicit = click.core.ParameterSource.COMMANDLINE
    host_or_port = explicit in (ctx.get_parameter_source("host"), ctx.get_parameter_source("port"))
    if servers is not None and ctx.get_parameter_source("servers") == explicit and host_or_port:
        raise click.UsageError("give either --servers or -h/--host and -p/--port, not both")
    if servers is not None and not host_or_port:
        try:
            return parse_servers(servers)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param_hint="--servers") from None
    try:
        return [parse_server(host, port)]
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param_hint="-h/--host") from None


_ADDRESS_OPTIONS = [
    click.option(
        "-h",
        "--host",
        default="127.0.0.1",
        show_default=True,
        metavar="HOST",
        help="Job server host, or HOST:PORT.",
    ),
    click.option(
        "-p",
        "--port",
        default=DEFAULT_PORT,
        show_default=True,
        type=click.IntRange(1, 65535),
        metavar="PORT",
        help="Job server port.",
    ),
    click.option(
        "--servers",
        metavar="HOST:PORT[,...]",
        envvar="GEARMAN_SERVERS",
        help="Several job servers, comma-separated (also $GEARMAN_SERVERS; -h/-p win over "
        "the variable).",
    ),
]

_TIMEOUT_OPTION = click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    metavar="SECONDS",
    help="How long to wait for a server to connect and reply.",
)


def _with_servers(
    command: Callable[..., Any], options: list[Callable[[Any], Any]]
) -> Callable[..., Any]:
    @functools.wraps(command)
    def wrapper(*args: Any, host: str, port: int, servers: str | None, **kwargs: Any) -> Any:
        kwargs["servers"] = _resolve_servers(click.get_current_context(), host, port, servers)
        with reported_errors():
            return command(*args, **kwargs)

    decorated: Callable[..., Any] = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


def server_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that name the job servers a command talks to: ``-h/--host``, ``-p/--port``,
    ``--servers`` and ``--timeout``. The command receives ``servers`` (a list of
    ``(host, port)``) and ``timeout``; a GearmanError it raises becomes a ``gearsql: ...``
    line on stderr and exit status 1."""
    return _with_servers(command, [*_ADDRESS_OPTIONS, _TIMEOUT_OPTION])


def server_address_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """:func:`server_options` without ``--timeout``, for the commands that take ``gearman``'s
    ``-t MS`` instead (``submit``)."""
    return _with_servers(command, _ADDRESS_OPTIONS)


def json_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: print a JSON array of objects instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help="Output JSON, not a table.")(
        command
    )


def _text(name: bytes) -> str:
    """A name for display: UTF-8, with other bytes as ``\\xNN``."""
    return name.decode("utf-8", "backslashreplace")


def _table_lines(headers: list[str], rows: list[list[str | int]]) -> list[str]:
    """Rows under headers, columns padded; columns holding numbers are right-aligned."""
    widths = [len(header) for header in headers]
    numeric = [False] * len(headers)
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(str(cell)))
            numeric[index] = numeric[index] or isinstance(cell, int)
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        cells = [
            str(cell).rjust(width) if right else str(cell).ljust(width)
            for cell, width, right in zip(row, widths, numeric, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


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
    click.echo("\n".join(_table_lines(shown, rows)))


def _each_server(
    servers: list[tuple[str, int]], timeout: float
) -> Iterator[tuple[str, AdminClient]]:
    """``(host:port, open client)`` for each server in turn, closing each afterwards."""
    for address in servers:
        with AdminClient(*address, timeout=timeout) as client:
            yield client.server, client


@cli.command(context_settings=CONTEXT)
@server_options
@json_option
def status(servers: list[tuple[str, int]], timeout: float, as_json: bool) -> None:
    """Show every function's jobs and workers.

    TOTAL counts queued and running jobs; WORKERS counts the workers registered for the
    function, busy or idle. A function stays listed after its workers leave.
    """
    records = [
        {
            "server": server,
            "function": _text(fn.name),
            "total": fn.total,
            "running": fn.running,
            "workers": fn.workers,
        }
        for server, client in _each_server(servers, timeout)
        for fn in client.status()
    ]
    headers = ["SERVER", "FUNCTION", "TOTAL", "RUNNING", "WORKERS"]
    _echo_records(records, headers, as_json, len(servers) > 1)


@cli.command(context_settings=CONTEXT)
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
            "client_id": None if worker.client_id is None else _text(worker.client_id),
            "functions": [_text(name) for name in worker.functions],
        }
        for server, client in _each_server(servers, timeout)
        for worker in client.workers()
    ]
    headers = ["SERVER", "FD", "IP", "CLIENT-ID", "FUNCTIONS"]
    _echo_records(records, headers, as_json, len(servers) > 1)


@cli.command(context_settings=CONTEXT)
@server_options
@json_option
@click.option("--unique", is_flag=True, help="List the unique ids of the jobs instead.")
def jobs(servers: list[tuple[str, int]], timeout: float, as_json: bool, unique: bool) -> None:
    """Show the jobs the job server holds, queued or running.

    IGNORED marks a cancelled job the server has not dropped yet; QUEUED marks a background job
    held by the queue. With --unique, list the unique ids of the jobs that have one.
    """
    records: list[dict[str, Any]]
    if unique:
        records = [
            {"server": server, "unique": _text(name)}
            for server, client in _each_server(servers, timeout)
            for name in client.show_unique_jobs()
        ]
        headers = ["SERVER", "UNIQUE"]
    else:
        records = [
            {
                "server": server,
                "handle": _text(job.handle),
                "retries": job.retries,
                "ignored": job.ignore,
                "queued": job.queued,
            }
            for server, client in _each_server(servers, timeout)
            for job in client.show_jobs()
        ]
        headers = ["SERVER", "HANDLE", "RETRIES", "IGNORED", "QUEUED"]
    _echo_records(records, headers, as_json, len(servers) > 1)


@cli.command(context_settings=CONTEXT)
@server_options
@click.argument("handles", metavar="HANDLE...", nargs=-1, required=True)
def cancel(servers: list[tuple[str, int]], timeout: float, handles: tuple[str, ...]) -> None:
    """Cancel queued jobs by their handles.

    A job a worker is running cannot be cancelled. With several servers, each handle is tried on
    each server until one knows it. Exits with status 1 if any handle was unknown.
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


@cli.command(context_settings=CONTEXT)
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


@cli.command(context_settings=CONTEXT)
@server_options
def version(servers: list[tuple[str, int]], timeout: float) -> None:
    """Print the job server's version (`gearsql --version` prints this program's)."""
    for server, client in _each_server(servers, timeout):
        prefix = f"{server}: " if len(servers) > 1 else ""
        click.echo(prefix + client.version())


def _top_rows(server: str, client: AdminClient) -> list[list[str | int]]:
    """One row per function: queued (in all and per priority), running, workers."""
    by_priority: dict[bytes, PriorityStatus] = {}
    try:
        by_priority = {row.name: row for row in client.priority_status()}
    except AdminError as exc:
        if exc.code != "UNKNOWN_COMMAND":  # gearmand before 1.1.15
            raise
    rows: list[list[str | int]] = []
    for fn in sorted(client.status(), key=lambda fn: fn.name):
        ranked = by_priority.get(fn.name)
        rows.append(
            [
                server,
                _text(fn.name),
                fn.queued,
                *((ranked.high, ranked.normal, ranked.low) if ranked else ("-", "-", "-")),
                fn.running,
                fn.workers,
            ]
        )
    return rows


def _top_frame(clients: list[AdminClient], many: bool) -> list[str]:
    """The lines of one frame of `gearsql top`; raises GearmanError."""
    rows = [row for client in clients for row in _top_rows(client.server, client)]
    headers = ["SERVER", "FUNCTION", "QUEUED", "HIGH", "NORMAL", "LOW", "RUNNING", "WORKERS"]
    if not many:
        headers, rows = headers[1:], [row[1:] for row in rows]
    return _table_lines(headers, rows)


@cli.command(context_settings=CONTEXT)
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

    QUEUED counts jobs waiting for a worker, and HIGH, NORMAL and LOW split them by priority;
    RUNNING counts jobs a worker holds; WORKERS the workers registered for the function. If a
    server stops answering after the first frame, the error is shown and `top` keeps trying.
    """
    # Ctrl-C (and SIGTERM) must stop it even when it was started with SIGINT ignored, as a
    # non-interactive shell starts a background job: Python then installs no KeyboardInterrupt
    # handler of its own, and the signal would be lost. The handlers are put back afterwards.
    saved = {} if once else {
        sig: signal.signal(sig, signal.default_int_handler)
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
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
    lines = _top_frame(clients, many)
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
            lines = _top_frame(clients, many)
        except GearmanError as exc:
            lines = [f"gearsql: {exc}"]


# ---------------------------------------------------------------------------- submit and work
#
# `submit` and `work` are the `gearman` program's client and worker modes (PROTOCOL.md section
# 10) on top of gearsql.Client and gearsql.Worker, with the same one-letter flags, so that shell
# pipelines written for `gearman` read the same with `gearsql`.

# Longest line `work -n` reads from its command (asyncio's default limit is 64 KiB).
MAX_OUTPUT_LINE = 64 * 1024 * 1024


def _library_logging() -> None:
    """Show the library's warnings (a server that cannot be reached, a retry) as ``gearsql: ...``
    lines on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("gearsql: %(message)s"))
    root = logging.getLogger("gearsql")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    root.propagate = False


def _per_line_options(client: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``-n`` and ``-N``, which mean different things in client and worker mode (as in
    `gearman`); the command receives ``per_line``: None, ``"keep"`` or ``"strip"``."""
    if client:
        keep = "One job per line of stdin, newline included; each sent as soon as it is read."
    else:
        keep = (
            "Send each line COMMAND prints as a WORK_DATA packet as soon as it is printed; the "
            "result is then empty."
        )
    options = [
        click.option("-n", "--lines", "per_line", flag_value="keep", default=None, help=keep),
        click.option(
            "-N",
            "--stripped-lines",
            "per_line",
            flag_value="strip",
            help="Same as -n, but strip off the newline.",
        ),
    ]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _binary_stream(name: Literal["stdin", "stdout", "stderr"]) -> BinaryIO:
    """The byte stream under sys.stdin/stdout/stderr. Not click.get_binary_stream: its return type
    differs between click releases (``object`` in 8.5), and on POSIX it is this same buffer."""
    stream = {"stdin": sys.stdin, "stdout": sys.stdout, "stderr": sys.stderr}[name]
    return stream.buffer


def _strip(line: bytes, per_line: str | None) -> bytes:
    return line[:-1] if per_line == "strip" and line.endswith(b"\n") else line


class _Printer:
    """Writes to stdout and stderr from the main thread and the client's thread alike; notes a
    closed pipe (``| head``) instead of raising, so the command can stop quietly."""

    def __init__(self) -> None:
        self.stdout = _binary_stream("stdout")
        self.stderr = _binary_stream("stderr")
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
        stdin = _binary_stream("stdin")
        if per_line is None:
            yield stdin.read()
            return
        # readline returns as soon as a whole line is in the pipe, not when the buffer fills.
        for line in iter(stdin.readline, b""):
            yield _strip(line, per_line)


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
            "(Ctrl-C stops; -t MS sets a timeout)" if timeout_ms is None
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
                f"no worker is registered for {function!r} on {where}; still waiting "
                + self.until
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


@cli.command(context_settings=CONTEXT)
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
@_per_line_options(client=True)
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
    _library_logging()
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
                    client, functions, workload, options, printer, prefix, verbose, timeout_ms,
                    notice,
                )
            if printer.broken_pipe:
                break
    if failures or printer.broken_pipe:
        sys.exit(1)


class _CommandRunner:
    """The job handler of `gearsql work`: pipes each workload through COMMAND (or echoes it), and
    stops the worker after ``count`` jobs."""

    def __init__(
        self,
        command: tuple[str, ...],
        per_line: str | None,
        count: int | None,
        stop: Callable[[], None],
    ) -> None:
        self.command = command
        self.per_line = per_line
        self.count = count
        self.stop = stop
        self.done = 0
        self.log = logging.getLogger("gearsql.work")

    async def run(self, job: WorkerJob) -> bytes:
        try:
            if not self.command:
                # gearman -w prints the workload; gearsql also sends it back as the result.
                stdout = _binary_stream("stdout")
                stdout.write(job.data)
                stdout.flush()
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
                job.send_data(_strip(line, self.per_line))
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


@cli.command(context_settings={**CONTEXT, "allow_interspersed_args": False})
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
@_per_line_options(client=False)
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
    _library_logging()
    worker = Worker(servers)
    runner = _CommandRunner(command, per_line, count, worker.stop)
    for function in functions:
        worker.register(function, runner.run)
    worker.run_forever(handle_signals=True)


# ------------------------------------------------------------------------------------ relay
#
# `relay` drains the outbox that the gman_*_background functions fill in transactional mode
# (gearsql.relay); `server --relay DSN` runs the same inside the job server.


@cli.command(context_settings=CONTEXT)
@click.option(
    "--dsn",
    "dsns",
    multiple=True,
    required=True,
    metavar="DSN",
    help="Database whose outbox to drain: postgresql://..., mysql://..., or an SQLite file, "
    "sqlite:///RELATIVE/PATH or sqlite:////ABSOLUTE/PATH; repeat for several.",
)
@click.option(
    "--servers",
    metavar="HOST:PORT[,...]",
    envvar="GEARMAN_SERVERS",
    help="Job servers to submit to (also $GEARMAN_SERVERS).  [default: 127.0.0.1:4730]",
)
@click.option(
    "--schema",
    default="gearsql",
    show_default=True,
    help="PostgreSQL schema the functions were installed into.",
)
@click.option(
    "--source",
    default="auto",
    show_default=True,
    type=click.Choice(SOURCES),
    help="How to hear of new rows: auto (LISTEN in PostgreSQL, the binlog in MySQL where it "
    "can be read), listen, binlog, or poll.",
)
@click.option(
    "--poll-interval",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    metavar="SECONDS",
    help="Longest wait between two looks at the outbox.",
)
@click.option(
    "--batch",
    default=500,
    show_default=True,
    type=click.IntRange(1),
    help="Most rows claimed, held in memory and in flight at once.",
)
@click.option(
    "--unique-prefix",
    metavar="PREFIX",
    help="Unique of rows without one: PREFIX + outbox id (at most 44 bytes).  [default: "
    "outbox:<hash of the database>:]",
)
@_LOG_FILE_OPTION
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Log more: -v each batch, -vv debugging detail.  [default: start, stop, outages]",
)
def relay(
    dsns: tuple[str, ...],
    servers: str | None,
    schema: str,
    source: str,
    poll_interval: float,
    batch: int,
    unique_prefix: str | None,
    log_file: str,
    verbose: int,
) -> None:
    """Submit the outbox rows of committed transactions as background jobs.

    The gman_*_background SQL functions (transactional mode) write an outbox row in the
    caller's transaction; this submits each committed row with its priority and a unique made
    from the outbox id, then deletes it. Rows are claimed so that several relays can run at
    once; while no job server answers they stay in the outbox, and a database that cannot be
    reached is retried. A database without the outbox (or a missing SQLite file) stops the
    relay with exit status 2. SIGTERM or SIGINT stops it cleanly.
    """
    from gearsql.relay import run_relays

    setup_logging(log_file, ("NOTICE", "INFO", "DEBUG")[min(verbose, 2)])
    try:
        targets = parse_servers(servers)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--servers") from None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_relays(
            dsns, targets, stop=stop, schema=schema, source=source, batch=batch,
            poll_interval=poll_interval, unique_prefix=unique_prefix,
        )

    try:
        asyncio.run(main())
    except ValueError as exc:
        # A configuration error, such as a database without the outbox: waiting will not heal
        # it, so stop with status 2 (a database that is down is retried instead).
        raise ConfigurationError(str(exc)) from None


# ---------------------------------------------------------------------------- SQL bridges
#
# `install postgres` / `uninstall postgres` put the gman_* functions into a PostgreSQL database
# over an ordinary connection (gearsql.bridges.postgres); nothing goes onto the database host.
# `install mysql` / `uninstall mysql` do the same for MariaDB (gearsql.bridges.mysql).


@cli.group(context_settings=CONTEXT)
def install() -> None:
    """Install the gman_* SQL functions into a database.

    `gearsql install postgres --dsn DSN` installs them into PostgreSQL (PL/Python), `gearsql
    install mysql --dsn DSN` into MariaDB (stored functions and an outbox for the relay). Run it
    as a PostgreSQL superuser, or as MariaDB's root or the database's owner; it can be run again
    to upgrade, keeping the settings.
    """


@cli.group(context_settings=CONTEXT)
def uninstall() -> None:
    """Remove the gman_* SQL functions from a database (`gearsql uninstall postgres|mysql`)."""


_DSN_OPTION = click.option(
    "--dsn",
    metavar="DSN",
    envvar="GEARSQL_PG_DSN",
    help="PostgreSQL connection string, e.g. postgresql://postgres@localhost/app "
    "(also $GEARSQL_PG_DSN).",
)
_SCHEMA_OPTION = click.option(
    "--schema",
    default="gearsql",
    show_default=True,
    metavar="SCHEMA",
    help="Schema that holds the functions, settings and outbox.",
)
_PRINT_SQL_OPTION = click.option(
    "--print-sql", is_flag=True, help="Print the SQL instead of running it (no --dsn needed)."
)


def _bridge_sql(dsn: str | None, print_sql: bool, sql: Callable[[], str],
                run: Callable[[str], None], envvar: str = "GEARSQL_PG_DSN") -> None:
    try:
        text = sql()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if print_sql:
        click.echo(text, nl=False)
        return
    if not dsn:
        raise click.UsageError(f"give --dsn (or ${envvar}), or --print-sql")
    try:
        run(dsn)
    except Exception as exc:  # psycopg.Error and friends: one readable line
        message = str(exc).strip().splitlines()
        raise CommandError(message[0] if message else type(exc).__name__) from None


@install.command("postgres", context_settings=CONTEXT)
@_DSN_OPTION
@_SCHEMA_OPTION
@click.option(
    "--role",
    metavar="ROLE",
    help="Role granted USAGE on the schema and EXECUTE on the functions (PUBLIC gets nothing).",
)
@click.option(
    "--servers",
    metavar="HOST:PORT[,...]",
    help="Job servers the database may reach (the 'servers' setting; default on first install "
    "127.0.0.1:4730).",
)
@click.option(
    "--background-mode",
    type=click.Choice(["transactional", "immediate"]),
    help="How gman_do*_background submits (default on first install: transactional, an outbox "
    "row that follows the transaction; immediate submits at call time).",
)
@click.option(
    "--timeout",
    metavar="SECONDS",
    help="How long a foreground gman_do* waits for its result (the 'timeout' setting; default "
    "on first install 60).",
)
@_PRINT_SQL_OPTION
def install_postgres(
    dsn: str | None,
    schema: str,
    role: str | None,
    servers: str | None,
    background_mode: str | None,
    timeout: str | None,
    print_sql: bool,
) -> None:
    """Install the gman_* functions into PostgreSQL.

    Creates (or upgrades) in SCHEMA: the gman_do*, gman_servers_set, gman_job_status functions
    and the gman_sum aggregate (PL/Python, plpython3u), the gman_settings table that only the
    installing role can change, and the gman_outbox table. Needs a superuser (PL/Python is an
    untrusted language) and the server's PL/Python package (Debian:
    postgresql-plpython3-VERSION).
    """
    from gearsql.bridges import postgres

    _bridge_sql(
        dsn,
        print_sql,
        lambda: postgres.install_sql(schema, role, servers, background_mode, timeout),
        lambda url: postgres.install(url, schema, role, servers, background_mode, timeout),
    )
    if not print_sql:
        click.echo(f"installed the gman_* functions into schema {schema}")


@uninstall.command("postgres", context_settings=CONTEXT)
@_DSN_OPTION
@_SCHEMA_OPTION
@click.option(
    "--force", is_flag=True, help="Drop the outbox even if it holds jobs not yet relayed."
)
@_PRINT_SQL_OPTION
def uninstall_postgres(dsn: str | None, schema: str, force: bool, print_sql: bool) -> None:
    """Remove the gman_* functions, settings and outbox from PostgreSQL.

    Refuses while the outbox holds jobs not yet relayed, unless --force. The schema is dropped
    too when nothing else is left in it.
    """
    from gearsql.bridges import postgres

    _bridge_sql(
        dsn,
        print_sql,
        lambda: postgres.uninstall_sql(schema, force),
        lambda url: postgres.uninstall(url, schema, force),
    )
    if not print_sql:
        click.echo(f"removed the gman_* functions from schema {schema}")


_MYSQL_DSN_OPTION = click.option(
    "--dsn",
    metavar="DSN",
    envvar="GEARSQL_MYSQL_DSN",
    help="MariaDB URL naming the database to install into, e.g. "
    "mysql://root@127.0.0.1:3306/app (also $GEARSQL_MYSQL_DSN).",
)


@install.command("mysql", context_settings=CONTEXT)
@_MYSQL_DSN_OPTION
@click.option(
    "--grant-to",
    "grant_to",
    metavar="ACCOUNT",
    multiple=True,
    help="Account ('app'@'%' or a role name) granted EXECUTE on the gman_* functions; "
    "repeatable. Nobody gets any privilege on the tables.",
)
@click.option(
    "--servers",
    metavar="HOST:PORT[,...]",
    help="Job servers gman_servers_set accepts (the 'servers' setting; default on first "
    "install 127.0.0.1:4730).",
)
@click.option(
    "--timeout",
    metavar="SECONDS",
    help="How long a foreground gman_do* waits for its result (the 'timeout' setting; default "
    "on first install 60).",
)
@click.option(
    "--relay-account",
    metavar="ACCOUNT",
    help="Account the relay connects as, granted what it needs on the tables (outbox: SELECT, "
    "UPDATE, DELETE; calls and results).",
)
@_PRINT_SQL_OPTION
def install_mysql(
    dsn: str | None,
    grant_to: tuple[str, ...],
    servers: str | None,
    timeout: str | None,
    relay_account: str | None,
    print_sql: bool,
) -> None:
    """Install the gman_* functions into MariaDB.

    Creates (or upgrades) in the DSN's database: the gman_do* and gman_servers_set stored
    functions (the optional unique argument has functions of its own: gman_do_unique,
    gman_do_background_unique, ...), the gman_settings table that only the installing account
    can change, the gman_outbox table and the tables through which `gearsql relay` answers
    foreground calls. The functions only write rows: run `gearsql relay --dsn ...` to submit
    them. Needs MariaDB 10.3 or later, and the database's owner or root (at least CREATE,
    INSERT, CREATE ROUTINE and ALTER ROUTINE on it; GRANT OPTION for --grant-to and
    --relay-account).
    """
    from gearsql.bridges import mysql

    _bridge_sql(
        dsn,
        print_sql,
        lambda: mysql.install_sql(servers, grant_to, timeout, relay_account),
        lambda url: mysql.install(url, servers, grant_to, timeout, relay_account),
        envvar="GEARSQL_MYSQL_DSN",
    )
    if not print_sql:
        click.echo("installed the gman_* functions into the database of the DSN")


@uninstall.command("mysql", context_settings=CONTEXT)
@_MYSQL_DSN_OPTION
@click.option(
    "--force", is_flag=True, help="Drop the outbox even if it holds jobs not yet relayed."
)
@_PRINT_SQL_OPTION
def uninstall_mysql(dsn: str | None, force: bool, print_sql: bool) -> None:
    """Remove the gman_* functions, settings, outbox and call tables from MariaDB.

    Refuses while the outbox holds jobs not yet relayed, unless --force.
    """
    from gearsql.bridges import mysql

    _bridge_sql(
        dsn,
        print_sql,
        lambda: mysql.uninstall_sql(force),
        lambda url: mysql.uninstall(url, force),
        envvar="GEARSQL_MYSQL_DSN",
    )
    if not print_sql:
        click.echo("removed the gman_* functions from the database of the DSN")


def main() -> None:
    """Entry point of the ``gearsql`` console script."""
    cli(prog_name="gearsql")
