"""bench/sql_bridges.py and bench/sql_first_call.py run end to end on a few calls and print their
tables. Only that they complete is checked: benchmark figures are never asserted on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

pytestmark = pytest.mark.pg


def _run(*args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def test_sql_bridges_bench_prints_row_by_row_against_gman_map(pg_dsn: str) -> None:
    lines = _run(
        str(BENCH / "sql_bridges.py"),
        *("--calls", "20", "--map-jobs", "4", "--job-ms", "10", "--workers", "4"),
        *("--pg-dsn", pg_dsn),
    )
    assert [line.split()[0] for line in lines if line.startswith(("SQLite", "PostgreSQL"))] == [
        "SQLite",
        "PostgreSQL",
        "SQLite",
        "PostgreSQL",
    ]
    assert lines[-1].endswith("x")


def test_sql_first_call_bench_prints_first_second_and_the_floor(pg_dsn: str) -> None:
    lines = _run(str(BENCH / "sql_first_call.py"), "--connections", "2", "--pg-dsn", pg_dsn)
    assert [line.split()[0] for line in lines[2:]] == ["first", "second", "plpython"]
    # p50, min and max ms, then the backend's CPU p50 and min when its /proc entry is readable
    cpu = lines[1].split()[-2:] == ["cpu", "min"]
    assert all(len(line.split()) == (6 if cpu else 4) for line in lines[2:])
