"""server/gearsql.service: systemd accepts it, and its command line starts a server that keeps
its queue in the unit's StateDirectory=, not under the home directory ProtectHome= hides."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REQUIRE_TOOLS, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "server" / "gearsql.service"
#: Where the unit expects the program and the configuration file (its install comment).
PROGRAM = "/usr/local/bin/gearsql"
CONFIG = "/etc/gearsql/gearsql.conf"


def service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        message = "systemd-analyze is not installed (Debian package systemd)"
        if REQUIRE_TOOLS:
            pytest.fail(message + "; GEARSQL_TEST_REQUIRE_TOOLS=1 forbids skipping")
        pytest.skip(message)
    # verify insists that ExecStart's program exists: point it at this interpreter instead of
    # the installed script, leaving the rest of the unit as it is.
    text = UNIT.read_text()
    assert f"ExecStart={PROGRAM} " in text
    unit = tmp_path / "gearsql.service"
    here = f"ExecStart={sys.executable} -m gearsql "
    unit.write_text(text.replace(f"ExecStart={PROGRAM} ", here))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120
    )
    # verify exits 0 even for a setting it ignores; that warning goes to stderr.
    assert (done.returncode, done.stderr, done.stdout) == (0, "", "")


def test_the_units_command_keeps_the_queue_in_its_state_directory(tmp_path: Path) -> None:
    settings = service()
    assert settings["StateDirectory"] == "gearsql"
    assert settings["ProtectHome"] == "yes"
    argv = shlex.split(settings["ExecStart"])
    assert argv[0] == PROGRAM
    assert "--store" in argv
    assert argv[argv.index("--store") + 1] == "sqlite:////var/lib/gearsql/queue.sqlite3"
    # Run the same command here: the program from this checkout, the repository's example
    # configuration for the installed copy, and a directory of the test for /var/lib/gearsql.
    state = tmp_path / "state"
    state.mkdir()
    home = tmp_path / "home"
    command = [sys.executable, "-m", "gearsql"] + [
        arg.replace(CONFIG, str(ROOT / "server" / "gearsql.conf")).replace(
            "/var/lib/gearsql", str(state)
        )
        for arg in argv[1:]
    ]
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "XDG_STATE_HOME"}
    env["HOME"] = str(home)
    with subprocess.Popen(
        [*command, "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            wait_for_port(port, proc, timeout=60)  # type: ignore[arg-type]
        finally:
            proc.terminate()
            _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert f"store: sqlite {state}/queue.sqlite3 " in stderr
    assert (state / "queue.sqlite3").exists()
    assert not home.exists()  # nothing under the (hidden) home directory
