"""``gearsql retries``, ``gearsql unique-window`` and ``gearsql dead list|retry|purge``: retry
policies, unique windows and dead letters of a gearsql job server.

A background job that used all the runs its retry policy gives it (``gearsql server --retries``,
or a function's own policy, ``gearsql retries FUNCTION N``) is kept as a dead letter; these
commands read and act on them through the admin protocol (:meth:`gearsql.adminclient.AdminClient.
show_dead` and the rest). C gearmand keeps neither and answers that it knows no such command.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from typing import Any

import click

from gearsql._admintables import display_name, table_lines
from gearsql._servers import format_address
from gearsql.adminclient import AdminClient
from gearsql.cli._options import CONTEXT, CommandError, json_option, server_options
from gearsql.errors import AdminError


@click.group(context_settings=CONTEXT)
def dead() -> None:
    """List, retry or purge dead letters: background jobs that used all their attempts."""


def _when(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch).isoformat(sep=" ", timespec="seconds")


def _clients(servers: list[tuple[str, int]], timeout: float) -> list[AdminClient]:
    return [AdminClient(*address, timeout=timeout) for address in servers]


def _not_gearsql(client: AdminClient, exc: AdminError) -> CommandError:
    """The error for a server that does not know the retry commands (C gearmand)."""
    return CommandError(
        f"{client.server} keeps no dead letters or retry policies (is it C gearmand? it "
        f"answered {exc.code})"
    )


_UNKNOWN = ("UNKNOWN_COMMAND", "UNKNOWN_SHOW_ARGUMENTS")


@dead.command("list", context_settings=CONTEXT)
@server_options
@json_option
@click.option("-f", "--function", metavar="FUNCTION", help="Only this function's dead letters.")
def list_dead(
    servers: list[tuple[str, int]], timeout: float, as_json: bool, function: str | None
) -> None:
    """Show the dead letters, oldest first.

    ID is the server's number for a dead letter (what `retry` and `purge` take); ATTEMPTS the
    runs it had; DIED when its last run failed; SIZE its payload in bytes; ERROR the last run's
    error (a worker's exception text, `failed` or `worker lost`).
    """
    records: list[dict[str, Any]] = []
    for client in _clients(servers, timeout):
        with client:
            try:
                letters = client.show_dead(function)
            except AdminError as exc:
                if exc.code in _UNKNOWN:
                    raise _not_gearsql(client, exc) from None
                raise
            for letter in letters:
                records.append(
                    {
                        "server": client.server,
                        "id": letter.id,
                        "handle": display_name(letter.handle),
                        "function": display_name(letter.function),
                        "unique": display_name(letter.unique),
                        "attempts": letter.attempts,
                        "died": letter.died,
                        "size": letter.size,
                        "error": None if letter.error is None else display_name(letter.error),
                    }
                )
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    many = len(servers) > 1
    headers = ["SERVER", "ID", "FUNCTION", "UNIQUE", "ATTEMPTS", "DIED", "SIZE", "ERROR"]
    rows: list[list[str | int]] = [
        [
            record["server"],
            record["id"],
            record["function"],
            record["unique"] or "-",
            record["attempts"],
            _when(record["died"]),
            record["size"],
            record["error"] or "-",
        ]
        for record in records
    ]
    if not many:
        headers, rows = headers[1:], [row[1:] for row in rows]
    click.echo("\n".join(table_lines(headers, rows)))


def _act(
    servers: list[tuple[str, int]],
    timeout: float,
    target: int | None,
    action: Callable[[AdminClient], int],
    verb: str,
) -> None:
    """Run ``action`` on each server; a dead letter number unknown to every server is an
    error."""
    done = 0
    for client in _clients(servers, timeout):
        with client:
            try:
                count = action(client)
            except AdminError as exc:
                if exc.code == "UNKNOWN_JOB":
                    continue
                if exc.code in _UNKNOWN:
                    raise _not_gearsql(client, exc) from None
                raise
            done += count
            prefix = f"{client.server}: " if len(servers) > 1 else ""
            click.echo(f"{prefix}{verb} {count} dead letter{'s' if count != 1 else ''}")
    if target is not None and not done:
        where = ", ".join(format_address(address) for address in servers)
        raise CommandError(f"no dead letter {target} on {where}")


def _dead_targets(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of ``dead retry`` and ``dead purge``: the servers, and ID or --all [-f]."""
    options: tuple[Callable[[Callable[..., Any]], Callable[..., Any]], ...] = (
        server_options,
        click.argument("ident", metavar="ID", required=False, type=click.IntRange(1)),
        click.option(
            "--all", "every", is_flag=True, help="All dead letters (of -f FUNCTION only)."
        ),
        click.option(
            "-f", "--function", metavar="FUNCTION", help="With --all: only this function's."
        ),
    )
    for option in reversed(options):
        command = option(command)
    return command


def _target(ident: int | None, every: bool, function: str | None) -> int | None:
    if (ident is None) == (not every):
        raise CommandError("give a dead letter ID or --all (not both)")
    if ident is not None and function is not None:
        raise CommandError("-f/--function goes with --all, not with an ID")
    return ident


@dead.command("retry", context_settings=CONTEXT)
@_dead_targets
def retry_dead(
    servers: list[tuple[str, int]],
    timeout: float,
    ident: int | None,
    every: bool,
    function: str | None,
) -> None:
    """Submit dead letter ID (or --all of them) again as new background jobs.

    Each gets all the attempts of its function's retry policy afresh. Exits with status 1 when
    no server has dead letter ID.
    """
    target = _target(ident, every, function)
    _act(
        servers,
        timeout,
        target,
        lambda client: client.retry_dead(target, function),
        "resubmitted",
    )


@dead.command("purge", context_settings=CONTEXT)
@_dead_targets
def purge_dead(
    servers: list[tuple[str, int]],
    timeout: float,
    ident: int | None,
    every: bool,
    function: str | None,
) -> None:
    """Delete dead letter ID (or --all of them) for good.

    Exits with status 1 when no server has dead letter ID.
    """
    target = _target(ident, every, function)
    _act(
        servers,
        timeout,
        target,
        lambda client: client.purge_dead(target, function),
        "purged",
    )


@click.command(context_settings=CONTEXT)
@server_options
@click.argument("function")
@click.argument("attempts", metavar="[N", required=False, type=click.IntRange(0))
@click.argument("backoff", metavar="[BASE[:MAX]]]", required=False)
@click.option("--default", "reset", is_flag=True, help="Put FUNCTION back on the server's policy.")
def retries(
    servers: list[tuple[str, int]],
    timeout: float,
    function: str,
    attempts: int | None,
    backoff: str | None,
    reset: bool,
) -> None:
    """Show or set FUNCTION's retry policy.

    N is how many runs a failed background job of FUNCTION gets in all (0: none, a failure is
    final); BASE and MAX the backoff in seconds (default: the server's). The server keeps the
    policy in its store. Without N, print the policy in force: `N BASE:MAX`, followed by
    `(server default)` when FUNCTION has none of its own.
    """
    if reset and attempts is not None:
        raise CommandError("give N or --default, not both")
    if backoff is not None:
        from gearsql.admin import parse_backoff

        try:
            parse_backoff(backoff)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    for client in _clients(servers, timeout):
        with client:
            try:
                if reset or attempts is not None:
                    limits = None
                    if backoff is not None:
                        base, _, top = backoff.partition(":")
                        limits = (float(base), float(top)) if top else float(base)
                    client.set_retries(function, None if reset else attempts, limits)
                policy = client.retries(function)
            except AdminError as exc:
                if exc.code == "UNKNOWN_COMMAND":
                    raise _not_gearsql(client, exc) from None
                raise
            prefix = f"{client.server}: " if len(servers) > 1 else ""
            note = " (server default)" if policy.default else ""
            shown = f"{policy.attempts} {policy.base:g}:{policy.limit:g}{note}"
            click.echo(f"{prefix}{function}: {shown}")


@click.command("unique-window", context_settings=CONTEXT)
@server_options
@click.argument("function")
@click.argument("seconds", metavar="[SECONDS]", required=False, type=click.FloatRange(0, 1e9))
@click.option("--default", "reset", is_flag=True, help="Put FUNCTION back on the server's window.")
def unique_window(
    servers: list[tuple[str, int]],
    timeout: float,
    function: str,
    seconds: float | None,
    reset: bool,
) -> None:
    """Show or set FUNCTION's unique window.

    For SECONDS after a background job of FUNCTION with a unique completed, a new submission of
    the same unique is acknowledged and not run again (0: off for FUNCTION). The server keeps
    the window in its store. Without SECONDS, print the window in force, followed by
    `(server default)` when FUNCTION has none of its own (the server's --unique-window).
    """
    if reset and seconds is not None:
        raise CommandError("give SECONDS or --default, not both")
    for client in _clients(servers, timeout):
        with client:
            try:
                if reset or seconds is not None:
                    client.set_unique_window(function, None if reset else seconds)
                window, default = client.unique_window(function)
            except AdminError as exc:
                if exc.code == "UNKNOWN_COMMAND":
                    raise CommandError(
                        f"{client.server} has no unique window (is it C gearmand? it "
                        f"answered {exc.code})"
                    ) from None
                raise
            prefix = f"{client.server}: " if len(servers) > 1 else ""
            note = " (server default)" if default else ""
            click.echo(f"{prefix}{function}: {window:g}{note}")


#: The commands of this family, for the ``gearsql`` group.
COMMANDS = [retries, unique_window, dead]
