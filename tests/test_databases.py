"""tests/databases.py keeps its word: a DSN that does not answer stops the run once, with one
clear line, whether or not GEARSQL_TEST_REQUIRE_DB is set; it is never skipped per test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import databases
import pytest
from conftest import free_port

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a developer's run without GEARSQL_TEST_REQUIRE_DB=1, where "no database" is a skip."""
    monkeypatch.setattr(databases, "REQUIRE_DB", False)


@pytest.mark.usefixtures("lenient")
def test_an_unreachable_postgresql_dsn_stops_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/postgres"
    monkeypatch.setenv("GEARSQL_TEST_PG_DSN", dsn)
    with pytest.raises(pytest.exit.Exception) as stopped:
        with databases.postgres_database():
            pytest.fail("a database that does not answer was handed out")
    message = str(stopped.value)
    assert message.startswith("cannot connect to the PostgreSQL server at postgresql://postgres:")
    assert "secret" not in message, "the password is not shown"
    assert "\n" not in message


@pytest.mark.usefixtures("lenient")
def test_an_unreachable_mysql_dsn_stops_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mysql.connector")
    monkeypatch.setenv("GEARSQL_TEST_MYSQL_DSN", f"mysql://root@127.0.0.1:{free_port()}/test")
    with pytest.raises(pytest.exit.Exception, match="cannot connect to the MySQL/MariaDB server"):
        with databases.mysql_database():
            pytest.fail("a database that does not answer was handed out")


def test_a_run_against_an_unreachable_dsn_ends_with_one_message(tmp_path: Path) -> None:
    """Two tests need the database: the run stops at the first, says why once, and the
    second never runs (neither failed nor skipped)."""
    (tmp_path / "test_needs_pg.py").write_text(
        "def test_first(pg_dsn):\n    assert pg_dsn\n\n\n"
        "def test_second(pg_dsn):\n    assert pg_dsn\n"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("GEARSQL_TEST_REQUIRE_DB", "PYTEST_ADDOPTS")
    }
    env["GEARSQL_TEST_PG_DSN"] = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "conftest",
            "-p",
            "no:cacheprovider",
            "-c",
            str(TESTS.parent / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_needs_pg.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert output.count("cannot connect to the PostgreSQL server at") == 1, output
    assert "skipped" not in output and "test_second" not in output, output
