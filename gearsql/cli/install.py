"""``gearsql install`` and ``uninstall``: put the gman_* SQL functions into a database and take
them out again.

``install postgres`` / ``uninstall postgres`` do it over an ordinary connection to PostgreSQL
(:mod:`gearsql.bridges.postgres`); nothing goes onto the database host. ``install mysql`` /
``uninstall mysql`` do the same for MariaDB (:mod:`gearsql.bridges.mysql`).
"""

from __future__ import annotations

from collections.abc import Callable

import click

from gearsql.cli._options import CONTEXT, CommandError


@click.group(context_settings=CONTEXT)
def install() -> None:
    """Install the gman_* SQL functions into a database.

    `gearsql install postgres --dsn DSN` installs them into PostgreSQL (PL/Python), `gearsql
    install mysql --dsn DSN` into MariaDB (stored functions and an outbox for the relay). Run it
    as a PostgreSQL superuser, or as MariaDB's root or the database's owner; it can be run again
    to upgrade, keeping the settings.
    """


@click.group(context_settings=CONTEXT)
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


def _bridge_sql(
    dsn: str | None,
    print_sql: bool,
    sql: Callable[[], str],
    run: Callable[[str], None],
    envvar: str = "GEARSQL_PG_DSN",
) -> None:
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
    help="Job servers the database may reach, where `gearsql relay` also sends its jobs (the "
    "'servers' setting; default on first install 127.0.0.1:4730).",
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
@click.option(
    "--no-plpython",
    is_flag=True,
    help="Install without PL/Python (default: use it when the role is a superuser and the "
    "server offers plpython3u). Background calls then work in transactional mode; the other "
    "functions fail with SQLSTATE 0A000 saying they need PL/Python.",
)
@click.option(
    "--ssl/--no-ssl",
    default=None,
    help="Reach the job servers over TLS (the 'ssl' setting; any of the files below turns it "
    "on too). Default on first install: off.",
)
@click.option(
    "--ssl-ca-file",
    metavar="PATH",
    help="CA (PEM) the job servers' certificates are checked against (the 'ssl_ca_file' "
    "setting). Paths are on the database server's host, readable by its operating-system user.",
)
@click.option(
    "--ssl-certificate",
    metavar="PATH",
    help="Certificate (PEM) the functions present to job servers that verify their clients "
    "(the 'ssl_certificate' setting).",
)
@click.option(
    "--ssl-key",
    metavar="PATH",
    help="Private key (PEM) of --ssl-certificate (the 'ssl_key' setting).",
)
@_PRINT_SQL_OPTION
def install_postgres(
    dsn: str | None,
    schema: str,
    role: str | None,
    servers: str | None,
    background_mode: str | None,
    timeout: str | None,
    no_plpython: bool,
    ssl: bool | None,
    ssl_ca_file: str | None,
    ssl_certificate: str | None,
    ssl_key: str | None,
    print_sql: bool,
) -> None:
    """Install the gman_* functions into PostgreSQL.

    Creates (or upgrades) in SCHEMA: the gman_do*, gman_servers_set, gman_job_status functions
    and the gman_sum aggregate (PL/Python, plpython3u), the gman_settings table that only the
    installing role can change, the gman_outbox table, the gman_outbox_dead table of rows no
    job server will take and the gman_pipeline() summary of both, and the gman_function_servers
    table of functions with job servers of their own (gman_servers_set(servers, function)).
    PL/Python needs a superuser (it
    is an untrusted language) and the server's PL/Python package (Debian:
    postgresql-plpython3-VERSION). Where the server offers no PL/Python (managed services), or
    with --no-plpython, the gman_do*_background functions (PL/pgSQL, transactional mode) work
    and the others say they need PL/Python; no superuser is needed then.

    It also records which database this is (the table gman_origin), so that a relay started on
    a restored copy does not submit the original's pending jobs again (`gearsql relay adopt`).
    """
    from gearsql.bridges import postgres

    tls = {
        name: value
        for name, value in (
            ("ssl_ca_file", ssl_ca_file),
            ("ssl_certificate", ssl_certificate),
            ("ssl_key", ssl_key),
        )
        if value is not None
    }
    if ssl is not None or tls:
        tls["ssl"] = "off" if ssl is False else "on"
    used: list[bool] = []
    _bridge_sql(
        dsn,
        print_sql,
        lambda: postgres.install_sql(
            schema, role, servers, background_mode, timeout, plpython=not no_plpython, tls=tls
        ),
        lambda url: used.append(
            postgres.install(
                url,
                schema,
                role,
                servers,
                background_mode,
                timeout,
                plpython=False if no_plpython else None,
                tls=tls,
            )
        ),
    )
    if not print_sql:
        if used and not used[0]:
            click.echo(
                f"installed the gman_* functions into schema {schema} without PL/Python: "
                "only gman_do*_background works (transactional mode, through the relay)"
            )
        else:
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
    help="Job servers `gearsql relay` sends this database's jobs to and gman_servers_set "
    "accepts (the 'servers' setting; default on first install 127.0.0.1:4730).",
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
    gman_do_background_unique, ...), gman_job_status for outbox:<id> handles, the gman_settings
    table that only the installing account can change, the gman_outbox table, the
    gman_outbox_dead table of rows no job server will take, the gman_pipeline view of both, and
    the tables through which `gearsql relay` answers foreground calls, and the
    gman_function_servers table of functions with job servers of their own
    (gman_servers_set_function, the old UDF's two-argument gman_servers_set). The functions only
    write rows: run `gearsql relay --dsn ...` to submit them. Needs MariaDB 10.3 or later, and
    the database's owner or root (at least CREATE, INSERT, CREATE ROUTINE and ALTER ROUTINE on
    it; GRANT OPTION for --grant-to and --relay-account).

    It also records which database this is (the table gman_origin), so that a relay started on
    a restored copy does not submit the original's pending jobs again (`gearsql relay adopt`).
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


COMMANDS = [install, uninstall]
