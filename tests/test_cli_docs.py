"""docs/cli.md is generated from the commands' --help and must match them (sqlite-utils style):
every command and subcommand, nested groups included, with every option. Shell completion,
which the reference documents, must produce its scripts and complete subcommands."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import click
import pytest

from gearsql.cli import cli
from gearsql.stores import default_store_url

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_cli_docs", DOCS / "generate_cli_docs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def all_commands() -> list[tuple[str, click.Command]]:
    """("gearsql install postgres", command) for every command and subcommand, walked here
    independently of the generator."""
    found: list[tuple[str, click.Command]] = []

    def walk(command: click.Command, path: str) -> None:
        found.append((path, command))
        if isinstance(command, click.Group):
            context = click.Context(command, info_name=path.rsplit(" ", 1)[-1])
            for name in command.list_commands(context):
                sub = command.get_command(context, name)
                assert sub is not None, f"{path} lists {name} but has no such command"
                walk(sub, f"{path} {name}")

    walk(cli, "gearsql")
    return found


COMMANDS = all_commands()
COMMAND_IDS = [path for path, _ in COMMANDS]


@pytest.fixture(scope="module")
def documented() -> str:
    return (DOCS / "cli.md").read_text(encoding="utf-8")


def section_of(documented: str, path: str) -> str:
    """The text of the ``## gearsql ...`` section of ``path``, up to the next section."""
    head = f"\n## {path}\n"
    assert head in documented, (
        f"`{path}` is missing from docs/cli.md: run `python docs/generate_cli_docs.py`"
    )
    rest = documented.split(head, 1)[1]
    return rest.split("\n## ", 1)[0]


def test_cli_reference_matches_the_commands_help(documented: str) -> None:
    generated = load_generator().generate()
    assert generated == documented, (
        "docs/cli.md is out of date: run `python docs/generate_cli_docs.py`"
    )


def test_the_generator_walks_every_nested_subcommand() -> None:
    paths = load_generator().command_paths()
    assert sorted(paths) == sorted(COMMAND_IDS)
    assert {
        "gearsql install postgres",
        "gearsql install mysql",
        "gearsql uninstall postgres",
        "gearsql uninstall mysql",
    } <= set(paths)


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=COMMAND_IDS)
def test_every_command_and_option_is_documented(
    path: str, command: click.Command, documented: str
) -> None:
    section = section_of(documented, path)
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            for opt in param.opts:
                assert opt in section, (
                    f"`{path} {opt}` is missing from docs/cli.md: "
                    "run `python docs/generate_cli_docs.py`"
                )


@pytest.mark.parametrize(
    ("path", "option"),
    [
        ("gearsql install postgres", "--role"),
        ("gearsql install postgres", "--background-mode"),
        ("gearsql install mysql", "--grant-to"),
        ("gearsql install mysql", "--timeout"),
        ("gearsql install mysql", "--relay-account"),
        ("gearsql uninstall postgres", "--force"),
        ("gearsql uninstall mysql", "--force"),
    ],
)
def test_the_install_options_a_newcomer_looked_for_are_documented(
    path: str, option: str, documented: str
) -> None:
    assert option in section_of(documented, path)


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=COMMAND_IDS)
def test_every_command_has_a_help_text(path: str, command: click.Command) -> None:
    assert command.help and command.get_short_help_str(), f"`{path}` has no help text"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"`{path} {param.opts[0]}` has no help text"


def test_the_reference_does_not_depend_on_this_machine(documented: str) -> None:
    # gearsql server's --store default is a path under this user's home directory.
    assert default_store_url() not in documented


def test_the_reference_and_the_readme_document_shell_completion(documented: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for shell in ("bash", "zsh", "fish"):
        line = f"_GEARSQL_COMPLETE={shell}_source gearsql"
        assert line in documented
        assert line in readme


# ------------------------------------------------------------------------- shell completion


def completion(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the command line the way a shell's completion hook does (``python -m gearsql``
    names itself ``gearsql``, so it answers to the same variable as the installed script)."""
    return subprocess.run(
        [sys.executable, "-m", "gearsql"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o nosort -F _gearsql_completion gearsql"),
        ("zsh", "compdef _gearsql_completion gearsql"),
        ("fish", "complete --no-files --command gearsql"),
    ],
)
def test_completion_script_is_produced_for_each_shell(shell: str, marker: str) -> None:
    done = completion({"_GEARSQL_COMPLETE": f"{shell}_source"})
    assert done.returncode == 0, done.stderr
    assert marker in done.stdout
    assert "_GEARSQL_COMPLETE" in done.stdout


def test_completion_offers_subcommands_and_their_options() -> None:
    done = completion(
        {"_GEARSQL_COMPLETE": "bash_complete", "COMP_WORDS": "gearsql install ", "COMP_CWORD": "2"}
    )
    assert done.returncode == 0, done.stderr
    assert {"plain,mysql", "plain,postgres"} <= set(done.stdout.split())
    done = completion(
        {
            "_GEARSQL_COMPLETE": "bash_complete",
            "COMP_WORDS": "gearsql install postgres --background-mode ",
            "COMP_CWORD": "4",
        }
    )
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == {"plain,transactional", "plain,immediate"}


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_sourcing_the_bash_script_completes_a_subcommand(tmp_path: Path) -> None:
    # The script calls `gearsql` from PATH: point that at this checkout's code.
    program = tmp_path / "gearsql"
    program.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m gearsql "$@"\n')
    program.chmod(0o755)
    script = completion({"_GEARSQL_COMPLETE": "bash_source"}).stdout
    session = (
        script
        + "\nCOMP_WORDS=(gearsql uninstall p); COMP_CWORD=2; _gearsql_completion gearsql"
        + '\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile"],
        input=session,
        env={**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["postgres"]


def test_every_family_module_holds_exactly_the_commands_the_table_sends_to_it() -> None:
    """COMMAND_MODULES says where each command lives without importing it; a command added to a
    family but not to the table would be missing from `gearsql`, one in the wrong family would
    load the wrong module."""
    from gearsql.cli import COMMAND_MODULES

    for module_name in set(COMMAND_MODULES.values()):
        module = importlib.import_module(module_name)
        names = {command.name for command in module.COMMANDS}
        expected = {name for name, where in COMMAND_MODULES.items() if where == module_name}
        assert names == expected, module_name


def test_a_command_loads_its_own_family_only() -> None:
    """`gearsql server` does not import the relay, the SQL bridges or the other families, nor
    does `gearsql status` import the job server (a fresh interpreter: this one has them all)."""
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from gearsql.cli import cli\n"
        "result = CliRunner().invoke(cli, [sys.argv[1], '--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('gearsql'))))\n"
    )
    loaded = {}
    for command in ("server", "status"):
        result = subprocess.run(
            [sys.executable, "-c", script, command], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        loaded[command] = set(result.stdout.split())
    assert "gearsql.cli.server" in loaded["server"]
    assert (
        not {"gearsql.relay", "gearsql.bridges", "gearsql.cli.admin", "gearsql.cli.relay"}
        & (loaded["server"])
    )
    assert "gearsql.cli.admin" in loaded["status"]
    assert not {"gearsql.server", "gearsql.core", "gearsql.cli.server"} & loaded["status"]
