"""The ``gearsql`` command line: ``gearsql server``, ``submit``, ``work``, the admin commands,
``retries``, ``unique-window``, ``dead``, ``schedule``, ``relay`` and ``install``/``uninstall``.

One module per command family; this one holds the click group and the console script's entry
point, and adds each family's commands to the group. What the families share (help settings,
the server options, the error that becomes one ``gearsql: ...`` line) is in ``_options``.
"""

from __future__ import annotations

import click

from gearsql import __version__
from gearsql.cli import admin, install, relay, retries, schedule, server, submit, work
from gearsql.cli._options import CONTEXT

__all__ = ["cli", "main"]


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="gearsql")
def cli() -> None:
    """gearsql: a Gearman job server, client and SQL bridge.

    Start a job server with `gearsql server`; every command has --help.
    """


for _command in (
    server.server,
    *admin.COMMANDS,
    *retries.COMMANDS,
    *schedule.COMMANDS,
    submit.submit,
    work.work,
    relay.relay,
    install.install,
    install.uninstall,
):
    cli.add_command(_command)


def main() -> None:
    """Entry point of the ``gearsql`` console script."""
    cli(prog_name="gearsql")
