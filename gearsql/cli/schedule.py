"""``gearsql schedule add|list|remove``: recurring jobs (cron expressions, UTC) of a gearsql job
server, through the admin protocol (:meth:`gearsql.adminclient.AdminClient.add_schedule` and
the rest). C gearmand has no schedules and answers that it knows no such command.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import click

from gearsql._admintables import display_name, table_lines
from gearsql.adminclient import AdminClient
from gearsql.cli._options import CONTEXT, CommandError, json_option, server_options
from gearsql.errors import AdminError


@click.group(context_settings=CONTEXT)
def schedule() -> None:
    """Add, list or remove recurring jobs (cron expressions, in UTC)."""


def _not_gearsql(client: AdminClient, exc: AdminError) -> CommandError:
    return CommandError(
        f"{client.server} has no schedules (is it C gearmand? it answered {exc.code})"
    )


def _when(epoch: int) -> str:
    if not epoch:
        return "-"
    moment = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


@schedule.command("add", context_settings=CONTEXT)
@server_options
@click.argument("name")
@click.argument("function")
@click.argument("spec", metavar="'M H DOM MON DOW'")
@click.option("-d", "--data", default="", help="The jobs' payload (words, single spaces).")
@click.option(
    "--catch-up",
    type=click.Choice(["one", "none", "all"]),
    default="one",
    show_default=True,
    help="Ticks missed while the server was down: submit the one that was due (one), none "
    "more than a minute late (none), or each of them, at most 100 (all).",
)
def add(
    servers: list[tuple[str, int]],
    timeout: float,
    name: str,
    function: str,
    spec: str,
    data: str,
    catch_up: str,
) -> None:
    """Submit a background job of FUNCTION at each UTC minute the cron expression matches.

    The expression has cron's five fields (minute, hour, day of month, month, weekday; `*`,
    N, A-B, */N and lists). The server keeps the schedule in its store and submits each tick
    once, with the unique NAME@EPOCH. Ticks missed while it was down are not made up, only the
    one that was due, unless --catch-up says otherwise. Adding a NAME again replaces it.
    """
    from gearsql._cron import CronError, next_tick, parse_cron

    if "catch-up=" in spec:
        raise CommandError("give the catch-up mode with --catch-up, not in the expression")
    try:
        parsed = parse_cron(f"{spec} catch-up={catch_up}")
    except CronError as exc:
        raise CommandError(str(exc)) from None
    if next_tick(parsed, 0) is None:
        raise CommandError(f"cron expression {spec!r} never matches")
    for client in [AdminClient(*address, timeout=timeout) for address in servers]:
        with client:
            try:
                due = client.add_schedule(name, function, parsed.text, data)
            except AdminError as exc:
                if exc.code == "UNKNOWN_COMMAND":
                    raise _not_gearsql(client, exc) from None
                raise CommandError(
                    f"{client.server} refused the schedule ({exc.code}): a name of 1 to 40 "
                    "bytes without @, and a function name within the server's limit"
                ) from None
            prefix = f"{client.server}: " if len(servers) > 1 else ""
            click.echo(f"{prefix}{name}: next {_when(due)}")


@schedule.command("list", context_settings=CONTEXT)
@server_options
@json_option
def list_schedules(servers: list[tuple[str, int]], timeout: float, as_json: bool) -> None:
    """Show the recurring schedules and their next tick."""
    records: list[dict[str, Any]] = []
    for client in [AdminClient(*address, timeout=timeout) for address in servers]:
        with client:
            try:
                found = client.schedules()
            except AdminError as exc:
                if exc.code in ("UNKNOWN_COMMAND", "INVALID_ARGUMENTS"):
                    raise _not_gearsql(client, exc) from None
                raise
            records += [
                {
                    "server": client.server,
                    "name": display_name(item.name),
                    "function": display_name(item.function),
                    "spec": item.spec,
                    "next": item.due,
                    "size": item.size,
                }
                for item in found
            ]
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    headers = ["SERVER", "NAME", "FUNCTION", "SPEC", "NEXT", "SIZE"]
    rows: list[list[str | int]] = [
        [r["server"], r["name"], r["function"], r["spec"], _when(r["next"]), r["size"]]
        for r in records
    ]
    if len(servers) == 1:
        headers, rows = headers[1:], [row[1:] for row in rows]
    click.echo("\n".join(table_lines(headers, rows)))


@schedule.command("remove", context_settings=CONTEXT)
@server_options
@click.argument("name")
def remove(servers: list[tuple[str, int]], timeout: float, name: str) -> None:
    """Remove schedule NAME (jobs it submitted already stay). Exits with status 1 when no
    server has it."""
    found = 0
    for client in [AdminClient(*address, timeout=timeout) for address in servers]:
        with client:
            try:
                client.remove_schedule(name)
                found += 1
            except AdminError as exc:
                if exc.code == "UNKNOWN_SCHEDULE":
                    continue
                if exc.code == "UNKNOWN_COMMAND":
                    raise _not_gearsql(client, exc) from None
                raise
    if not found:
        raise CommandError(f"no schedule {name!r}")
    click.echo(f"removed {name}")


#: The commands of this family, for the ``gearsql`` group.
COMMANDS = [schedule]
