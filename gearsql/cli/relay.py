"""``gearsql relay``: drain the outbox that the gman_*_background functions fill in
transactional mode (:mod:`gearsql.relay`); ``gearsql server --relay DSN`` runs the same inside
the job server. ``gearsql relay status`` shows an outbox's backlog and dead letters.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import click

from gearsql._log import reason
from gearsql._servers import parse_servers
from gearsql.cli._options import (
    CONTEXT,
    LOG_FILE_OPTION,
    CommandError,
    ConfigurationError,
    setup_logging,
    tls_options,
)
from gearsql.relay import SOURCES

#: Where the PostgreSQL functions live: the same option for relay, relay status and relay adopt.
SCHEMA_OPTION = click.option(
    "--schema",
    default="gearsql",
    show_default=True,
    help="PostgreSQL schema the functions were installed into.",
)


@click.group(context_settings=CONTEXT, invoke_without_command=True)
@click.option(
    "--dsn",
    "dsns",
    multiple=True,
    metavar="DSN",
    help="Database whose outbox to drain: postgresql://..., mysql://..., or an SQLite file, "
    "sqlite:///RELATIVE/PATH or sqlite:////ABSOLUTE/PATH; repeat for several.",
)
@click.option(
    "--servers",
    metavar="HOST:PORT[,...]",
    envvar="GEARMAN_SERVERS",
    help="Job servers to submit to, instead of the database's own `servers` setting (also "
    "$GEARMAN_SERVERS); logged when the two differ.  [default: the servers setting; "
    "127.0.0.1:4730 for SQLite]",
)
@SCHEMA_OPTION
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
@LOG_FILE_OPTION
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Log more: -v each batch, -vv debugging detail.  [default: start, stop, outages]",
)
@tls_options
@click.pass_context
def relay(
    ctx: click.Context,
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
    relay with exit status 2, as does a database (or SQLite file) that is a copy of the one its
    outbox rows were written in (`gearsql relay adopt` says what to do with them). SIGTERM or
    SIGINT stops it cleanly.

    The jobs go where the database's gman_* functions send theirs: the `servers` setting that
    `gearsql install` keeps (read again at every reconnect). --servers overrides it. A function
    given servers of its own in the database (gman_servers_set(servers, function)) goes to
    those, as far as they are among the relay's servers (else to the relay's, with a warning).

    A row no job server will ever take (larger than the server's maximum packet, say) is
    moved to the table gman_outbox_dead with the reason and logged once, so that it never
    holds up the rows behind it. `gearsql relay status --dsn DSN` shows the backlog and the
    dead letters.
    """
    if ctx.invoked_subcommand is not None:
        return
    if not dsns:
        raise click.UsageError("Missing option '--dsn'.")
    from gearsql.relay import run_relays

    setup_logging(log_file, ("NOTICE", "INFO", "DEBUG")[min(verbose, 2)])
    try:
        targets = None if servers is None else parse_servers(servers)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--servers") from None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_relays(
            dsns,
            targets,
            stop=stop,
            schema=schema,
            source=source,
            batch=batch,
            poll_interval=poll_interval,
            unique_prefix=unique_prefix,
        )

    try:  # uvloop when installed, as the server: cheaper per batch (the database thread's hops)
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - uvloop is the optional 'fast' extra
        uvloop = None  # type: ignore[assignment,unused-ignore]
    try:
        if uvloop is not None:
            uvloop.run(main())
        else:
            asyncio.run(main())  # type: ignore[unreachable,unused-ignore]
    except ValueError as exc:
        # A configuration error, such as a database without the outbox or a restored copy:
        # waiting will not heal it, so stop with status 2 (a database that is down is retried
        # instead). A log file gets the reason too, since stderr may go nowhere.
        if log_file not in ("stderr", "-", "", "none"):
            logging.getLogger("gearsql.relay").error("stopped: %s", exc)
        raise ConfigurationError(str(exc)) from None


@relay.command(context_settings=CONTEXT)
@click.option(
    "--dsn",
    "dsns",
    multiple=True,
    required=True,
    metavar="DSN",
    help="Database whose outbox to show (as for `gearsql relay`); repeat for several.",
)
@SCHEMA_OPTION
def status(dsns: tuple[str, ...], schema: str) -> None:
    """Show each outbox's backlog (rows, the oldest one's age) and its dead letters (how many,
    the newest reasons).

    Exit status 1 when a database cannot be reached, 2 when it has no outbox.
    """
    from gearsql.relay.status import pipeline_status

    for dsn in dsns:
        try:
            found = pipeline_status(dsn, schema)
        except ValueError as exc:  # no outbox there, or not a DSN gearsql knows
            raise ConfigurationError(str(exc)) from None
        except Exception as exc:  # the driver's error: the database cannot be reached
            raise CommandError(f"{dsn}: {reason(exc)}") from None
        click.echo("\n".join(found.lines()))


@relay.command(context_settings=CONTEXT)
@click.option(
    "--dsn",
    required=True,
    metavar="DSN",
    help="PostgreSQL or MariaDB database, or SQLite file, to record as its outbox's own "
    "(postgresql://..., mysql://..., sqlite:///relative.db, sqlite:////absolute.db).",
)
@SCHEMA_OPTION
@click.option(
    "--discard",
    is_flag=True,
    help='First move the rows now in the outbox to gman_outbox_dead (reason "discarded: '
    'database copied from ..."), so that they are never submitted from this database.',
)
def adopt(dsn: str, schema: str, discard: bool) -> None:
    """Record this database as its outbox's own, after a restore or copy.

    The install records which database the outbox belongs to (PostgreSQL and MariaDB); in an
    SQLite file the relay records the file (its device and inode) when it first relays it. A
    relay started on a copy (a dump restored as staging, CREATE DATABASE ... TEMPLATE, a
    mariadb-dump restored into another database, an SQLite file copied with cp, .backup or
    VACUUM INTO) whose outbox holds rows stops with exit status 2, because the original may
    have submitted them already. Adopt tells it what to do: without --discard the rows stay and
    the relay submits them from here; with --discard they move to the dead letters. Either way
    the relay starts again.

    Exit status 1 when the database cannot be reached, 2 when it (or the SQLite file) has no
    outbox.
    """
    from gearsql.relay.origin import adopt as adopt_outbox

    try:
        done = adopt_outbox(dsn, schema, discard)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    except Exception as exc:  # the driver's error: the database cannot be reached
        raise CommandError(f"{dsn}: {reason(exc)}") from None
    click.echo(done)


COMMANDS = [relay]
