"""The project holds up on a machine nobody prepared: version ranges that lint at both ends,
tests that keep out of the user's own state, optional test dependencies that skip cleanly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import conftest
import pytest
from conftest import ServerProcess, wait_for_port
from packaging.requirements import Requirement
from packaging.version import Version

from gearsql.stores.sqlite import default_sqlite_path

ROOT = Path(__file__).resolve().parent.parent

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - CI runs 3.11
    tomllib = pytest.importorskip("tomli")


def lower_bounds() -> dict[str, Version]:
    """Each requirement of pyproject.toml (extras included) with a ``>=`` bound, by name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements.extend(extra)
    bounds = {}
    for text in requirements:
        requirement = Requirement(text)
        for spec in requirement.specifier:
            if spec.operator == ">=":
                bounds[requirement.name.lower()] = Version(spec.version)
                # psycopg[binary] brings psycopg-binary of the same release.
                if "binary" in requirement.extras:
                    bounds[f"{requirement.name.lower()}-binary"] = Version(spec.version)
    return bounds


def oldest_pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / ".ci" / "oldest.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = Version(version)
    return pins


def test_oldest_pins_are_the_lower_bounds_of_pyproject() -> None:
    bounds, pins = lower_bounds(), oldest_pins()

    assert pins, ".ci/oldest.txt pins nothing"
    for name, version in pins.items():
        assert bounds.get(name) == version, f"{name}: oldest.txt {version}, {bounds.get(name)}"


def test_every_dependency_the_linters_read_is_pinned_at_its_oldest() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    linted = list(project["dependencies"])
    for extra in ("lint", "fast", "postgres", "mysql"):
        linted.extend(project["optional-dependencies"][extra])

    names = {Requirement(text).name.lower() for text in linted}

    assert names <= set(oldest_pins())


def test_every_requirement_states_a_lower_bound() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for items in project["optional-dependencies"].values():
        requirements.extend(item for item in items if not item.startswith("gearsql["))

    unbounded = [text for text in requirements if ">=" not in text]

    assert unbounded == []


# ---------------------------------------------------------------------------- the user's state


def test_the_session_has_a_home_of_its_own() -> None:
    home = Path(os.environ["HOME"])

    assert str(home) != conftest.REAL_HOME
    assert home.name.startswith("gearsql-test-home-")
    assert Path(os.environ["XDG_STATE_HOME"]).is_relative_to(home)
    assert Path(default_sqlite_path()).is_relative_to(home)


def test_a_server_without_store_keeps_its_queue_in_the_sessions_home(tmp_path: Path) -> None:
    # The default store is one file per state directory, so this test gives the server a state
    # directory of its own inside the session's HOME.
    state = Path(os.environ["HOME"]) / "server-default-store"
    server = ServerProcess("gearsql", tmp_path / "server.log")
    server.proc = subprocess.Popen(
        server.command(), stdin=subprocess.DEVNULL, env={**os.environ, "XDG_STATE_HOME": str(state)}
    )
    try:
        wait_for_port(server.port, server.proc)
        assert (state / "gearsql" / "queue.sqlite3").exists()
    finally:
        server.stop()
    assert re.search(r"queue\.sqlite3", server.log())


# ---------------------------------------------------------------------------- optional modules


def test_a_missing_test_dependency_skips_the_module_with_a_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conftest, "REQUIRE_TOOLS", False)

    with pytest.raises(pytest.skip.Exception, match=r"no_such_module_gearsql.*pip install"):
        conftest.need_module("no_such_module_gearsql", "a module")


def test_a_missing_test_dependency_fails_when_tools_are_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conftest, "REQUIRE_TOOLS", True)

    with pytest.raises(pytest.fail.Exception, match="GEARSQL_TEST_REQUIRE_TOOLS=1"):
        conftest.need_module("no_such_module_gearsql", "a module")
