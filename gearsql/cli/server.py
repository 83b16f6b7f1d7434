"""``gearsql server``: run a job server, options from the command line or a config file."""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any
from urllib.parse import urlsplit

import click

from gearsql._limits import (
    DEFAULT_MAX_BUFFER,
    DEFAULT_MAX_FUNCTIONS,
    DEFAULT_MAX_OUTPUT,
    DEFAULT_PACKET_TIMEOUT,
)
from gearsql._sqliteurl import SQLITE_SCHEMES
from gearsql.cli._options import (
    CONTEXT,
    LOG_FILE_OPTION,
    VERBOSE_LEVELS,
    CommandError,
    setup_logging,
)
from gearsql.protocol import DEFAULT_MAX_PACKET_SIZE, HEADER
from gearsql.stores import default_store_url


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


@click.command(cls=_ConfigFileCommand, context_settings=CONTEXT)
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
    "--http-port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Also serve gearmand's HTTP protocol (POST /FUNCTION runs a job), /metrics and the "
    "status page (GET /) on PORT, on the --listen addresses. Off unless given (or -r http).",
)
@click.option(
    "-r",
    "--protocol",
    "protocols",
    multiple=True,
    type=click.Choice(["http"]),
    help="Load a protocol module, as gearmand does: -r http serves HTTP on --http-port, "
    "8080 unless given.",
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
    help="Runs of a job whose worker died or timed out, as in gearmand: N runs in all, then "
    "the job fails to its clients and is dropped; 0 or -1 unlimited.",
)
@click.option(
    "--retries",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    metavar="N",
    help="Runs a failed background job gets in all (WORK_FAIL, WORK_EXCEPTION or a lost "
    "worker), with backoff between them; after the last it is kept as a dead letter. 0: none, "
    "a failure is final. The admin command `retries FUNCTION N` sets it per function.",
)
@click.option(
    "--retry-backoff",
    default="1:300",
    show_default=True,
    metavar="BASE[:MAX]",
    callback=lambda ctx, param, value: _backoff(value),
    help="Seconds before the first retry, doubling for each further failure up to MAX; each "
    "wait is jittered down to between half and all of it.",
)
@click.option(
    "--unique-window",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, max_open=False, max=10**9),
    metavar="SECONDS",
    help="Remember the unique of a background job that completed for this long: a new "
    "submission of the same function and unique within it is acknowledged and not run again. "
    "0: off. The admin command `uniquewindow FUNCTION SECONDS` sets it per function.",
)
@click.option(
    "--keep-results",
    is_flag=True,
    help="With --unique-window, keep each remembered job's result: a foreground submission "
    "of its unique gets it at once (WORK_COMPLETE) instead of running the job again.",
)
@click.option(
    "--unconfirmed-runs",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    metavar="N",
    help="With a durable store: jobs a worker may finish before the removal of the first is "
    "committed; its next job waits past that. 1 means a crash runs again at most the jobs in "
    "flight; more lets fast workers drain faster, at the cost of up to N re-runs per worker.",
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
    "--max-buffer",
    default=None,
    show_default="256 MiB, or 4 x --max-packet-size if that is more",
    type=click.IntRange(1024),
    metavar="BYTES",
    help="Bytes of incomplete packets all connections together may hold; past it, a "
    "connection that adds to them is not read until they fall back under it. At least "
    "--max-packet-size.",
)
@click.option(
    "--packet-timeout",
    default=DEFAULT_PACKET_TIMEOUT,
    show_default=True,
    type=click.FloatRange(0),
    metavar="SECONDS",
    help="Seconds a packet or admin line may take from its first byte to its last before the "
    "connection is closed (slow senders); 0 is no limit.",
)
@click.option(
    "--idle-timeout",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    metavar="SECONDS",
    help="Close a connection that sent nothing for this long and has nothing under way (no "
    "function it works on, no job it waits for or runs); 0 never does.",
)
@click.option(
    "--max-output",
    default=None,
    show_default="128 MiB, or 2 x --max-packet-size if that is more",
    type=click.IntRange(1024),
    metavar="BYTES",
    help="Close a connection whose unread output passes this many bytes (a client that does "
    "not read the work data sent to it). More than --max-packet-size.",
)
@click.option(
    "--max-functions",
    default=DEFAULT_MAX_FUNCTIONS,
    show_default=True,
    type=click.IntRange(0),
    help="Most function names at once; a CAN_DO or submission that would add one more gets "
    "ERROR TOO_MANY_FUNCTIONS. A name with no worker and no job is forgotten. 0 is no limit.",
)
@click.option(
    "-b",
    "--backlog",
    default=1024,
    show_default=True,
    type=click.IntRange(1),
    help="Listen backlog: connections the kernel queues until the server accepts them (capped "
    "by net.core.somaxconn). Past it new connections wait for TCP's SYN retries (1 s, 3 s).",
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
    "--ssl",
    is_flag=True,
    help="Speak TLS on every port (the Gearman port and --http-port); plaintext connections "
    "fail the handshake and are closed. Needs --ssl-certificate and --ssl-key.",
)
@click.option(
    "--ssl-certificate",
    metavar="FILE",
    help="The server's certificate (PEM), with --ssl.",
)
@click.option(
    "--ssl-key",
    metavar="FILE",
    help="The private key of --ssl-certificate (PEM).",
)
@click.option(
    "--ssl-ca-file",
    metavar="FILE",
    help="CA certificates (PEM) that client certificates are checked against; a client that "
    "presents one is known to --acl-file by its name.",
)
@click.option(
    "--ssl-verify-client",
    is_flag=True,
    help="Refuse clients without a certificate signed by --ssl-ca-file (mutual TLS).",
)
@click.option(
    "--acl-file",
    metavar="FILE",
    help="Which functions each client-certificate identity may submit to and work on, and "
    "whether it may run mutating admin commands (docs/security.md); read again on SIGHUP.",
)
@click.option(
    "--allow-insecure-remote",
    is_flag=True,
    help="Allow listening on non-loopback addresses without TLS (not needed with --ssl and "
    "--acl-file).",
)
@click.option(
    "--remote-admin",
    is_flag=True,
    help="Accept mutating admin commands (cancel, drop, create, maxqueue, retries, "
    "uniquewindow, schedule add/remove, retry and purge dead) from non-loopback peers.",
)
@click.option(
    "--relay",
    multiple=True,
    metavar="DSN",
    help="Also drain this database's outbox into this server, as `gearsql relay --dsn DSN` "
    "does; repeat for several.",
)
@click.option(
    "--schedule",
    "schedules",
    multiple=True,
    metavar="'NAME M H DOM MON DOW [catch-up=MODE] FUNCTION [DATA]'",
    help="A recurring background job of FUNCTION at each UTC minute the cron expression "
    "matches, as `gearsql schedule add` defines it; repeat for several (the last of a NAME "
    "counts). A stored schedule of the same name and definition keeps its next tick; one left "
    "out later stays until `gearsql schedule remove`.",
)
@LOG_FILE_OPTION
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

    Speaks the Gearman binary protocol and the text admin protocol on one port, like C gearmand,
    and with --http-port gearmand's HTTP protocol on another. SIGTERM or SIGINT stops it cleanly.
    """
    from gearsql.server import ServerConfig, run_server

    if "http" in options.pop("protocols") and options["http_port"] is None:
        options["http_port"] = 8080  # gearmand's default
    options["store"] = _checked_store(options["store"])
    options["schedules"] = _checked_schedules(options["schedules"])
    _check_limits(options)
    _check_security(options)
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


def _checked_schedules(lines: tuple[str, ...]) -> tuple[str, ...]:
    """``--schedule`` lines that parse, the last of each name only."""
    from gearsql._cron import CronError, parse_schedule

    by_name: dict[bytes, str] = {}
    for line in lines:
        try:
            name = parse_schedule(line)[0]
        except CronError as exc:
            raise CommandError(f"--schedule: {exc}") from None
        by_name.pop(name, None)
        by_name[name] = line
    return tuple(by_name.values())


def _backoff(value: str) -> tuple[float, float]:
    from gearsql.admin import parse_backoff

    try:
        return parse_backoff(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--retry-backoff") from None


def _check_limits(options: dict[str, Any]) -> None:
    """Fill in the buffer limits' defaults, which follow --max-packet-size; CommandError unless
    the limits given can hold a packet of --max-packet-size."""
    if options["max_buffer"] is None:
        options["max_buffer"] = max(DEFAULT_MAX_BUFFER, 4 * options["max_packet_size"])
    if options["max_output"] is None:
        options["max_output"] = max(DEFAULT_MAX_OUTPUT, 2 * options["max_packet_size"])
    packet = options["max_packet_size"] + HEADER
    if options["max_buffer"] < packet:
        raise CommandError(
            f"--max-buffer ({options['max_buffer']}) must hold one packet of --max-packet-size"
            f" ({options['max_packet_size']}) and its {HEADER}-byte header"
        )
    if options["max_output"] <= packet:
        raise CommandError(
            f"--max-output ({options['max_output']}) must be larger than a packet of"
            f" --max-packet-size ({options['max_packet_size']}) and its {HEADER}-byte header"
        )


def _checked_store(url: str | None) -> str:
    """The ``--store`` URL (the default when None), after checking that it names a store
    gearsql has and, for SQLite, that the file's directory exists; CommandError otherwise.
    Nothing is connected: a database that is down is the server's to report and retry."""
    from gearsql.stores import StoreError, open_store

    url = url or default_store_url()
    try:
        store = open_store(url)
    except ValueError as exc:
        raise CommandError(f"--store: {exc}") from None
    except ImportError as exc:  # the driver of the postgres or mysql extra
        raise CommandError(
            f"--store: {exc}; install gearsql[postgres] or gearsql[mysql] for that store"
        ) from None
    # Imported for an SQLite URL only: with it come sqlite3 and a thread pool.
    if urlsplit(url).scheme in SQLITE_SCHEMES:
        from gearsql.stores.sqlite import SQLiteStore

        assert isinstance(store, SQLiteStore)  # what open_store makes of the scheme
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


def _check_security(options: dict[str, Any]) -> None:
    """CommandError unless the TLS files can be used together and the ACL file can be read."""
    from gearsql._tls import TlsError, server_context
    from gearsql.acl import AclError, parse_acl

    files = [
        name
        for name in ("ssl_certificate", "ssl_key", "ssl_ca_file", "ssl_verify_client")
        if options[name]
    ]
    if files and not options["ssl"]:
        raise CommandError(f"--{files[0].replace('_', '-')} needs --ssl")
    if options["ssl"]:
        try:
            server_context(
                options["ssl_certificate"],
                options["ssl_key"],
                options["ssl_ca_file"],
                options["ssl_verify_client"],
            )
        except TlsError as exc:
            raise CommandError(str(exc)) from None
    path = options["acl_file"]
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                parse_acl(handle.read(), path)
        except OSError as exc:
            raise CommandError(f"--acl-file: cannot read {path}: {exc.strerror or exc}") from None
        except (AclError, UnicodeDecodeError) as exc:
            raise CommandError(f"--acl-file: {exc}") from None


COMMANDS = [server]
