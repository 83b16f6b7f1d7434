"""The ``gearsql`` command line: ``gearsql server``, ``submit``, ``work``, the admin commands,
``retries``, ``unique-window``, ``dead``, ``schedule``, ``relay`` and ``install``/``uninstall``.

One module per command family, each listing its commands in ``COMMANDS``; this one holds the
click group and the console script's entry point. A family is imported when one of its commands
is looked up (to run it or show its help), so that ``gearsql server`` does not load the relay,
the admin client or the SQL bridges, nor ``gearsql status`` the job server. What the families
share (help settings, the server options, the error that becomes one ``gearsql: ...`` line) is
in ``_options``.
"""

from __future__ import annotations

import importlib

import click

from gearsql import __version__
from gearsql.cli._options import CONTEXT

__all__ = ["COMMAND_MODULES", "cli", "main"]

#: The module of each command (tests/test_cli_docs.py checks it against the modules' COMMANDS).
COMMAND_MODULES = {
    "server": "gearsql.cli.server",
    **dict.fromkeys(
        ["status", "workers", "jobs", "cancel", "maxqueue", "version", "top"], "gearsql.cli.admin"
    ),
    **dict.fromkeys(["retries", "unique-window", "dead"], "gearsql.cli.retries"),
    "schedule": "gearsql.cli.schedule",
    "submit": "gearsql.cli.submit",
    "work": "gearsql.cli.work",
    "relay": "gearsql.cli.relay",
    "install": "gearsql.cli.install",
    "uninstall": "gearsql.cli.install",
}


class _Families(click.Group):
    """The gearsql group: its commands come from their families' modules on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            for command in importlib.import_module(module).COMMANDS:
                self.add_command(command)
        return self.commands.get(cmd_name)


@click.group(cls=_Families, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="gearsql")
def cli() -> None:
    """gearsql: a Gearman job server, client and SQL bridge.

    Start a job server with `gearsql server`; every command has --help.
    """


def main() -> None:
    """Entry point of the ``gearsql`` console script."""
    cli(prog_name="gearsql")
