"""docs/cli.md is generated from the commands' --help and must match them (sqlite-utils style)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import click
import pytest

from gearsql.cli import cli
from gearsql.stores import default_store_url

DOCS = Path(__file__).resolve().parent.parent / "docs"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_cli_docs", DOCS / "generate_cli_docs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def documented() -> str:
    return (DOCS / "cli.md").read_text(encoding="utf-8")


def test_cli_reference_matches_the_commands_help(documented: str) -> None:
    generated = load_generator().generate()
    assert generated == documented, (
        "docs/cli.md is out of date: run `python docs/generate_cli_docs.py`"
    )


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_is_documented(name: str, documented: str) -> None:
    assert f"\n## gearsql {name}\n" in documented, (
        f"`gearsql {name}` is missing from docs/cli.md: run `python docs/generate_cli_docs.py`"
    )


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_a_help_text(name: str) -> None:
    command = cli.commands[name]
    assert command.help and command.get_short_help_str(), f"`gearsql {name}` has no help text"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"`gearsql {name} {param.opts[0]}` has no help text"


def test_the_reference_does_not_depend_on_this_machine(documented: str) -> None:
    # gearsql server's --store default is a path under this user's home directory.
    assert default_store_url() not in documented
