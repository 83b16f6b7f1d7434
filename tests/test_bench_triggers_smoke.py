"""bench/triggers.py runs end to end on a few rows and prints a line of figures per database.

Only that it completes, with the trigger's outbox rows all written, is checked: benchmark figures
are never asserted on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TRIGGERS = Path(__file__).resolve().parent.parent / "bench" / "triggers.py"

pytestmark = pytest.mark.pg


def test_trigger_bench_prints_both_times_and_the_ratio(pg_dsn: str) -> None:
    command = [sys.executable, str(TRIGGERS), "--rows", "200", "--pg-dsn", pg_dsn, "--sqlite"]
    expected = ["postgresql"]
    if os.environ.get("GEARSQL_TEST_MYSQL_DSN"):
        command += ["--mysql-dsn", os.environ["GEARSQL_TEST_MYSQL_DSN"]]
        expected.append("mariadb")
    expected.append("sqlite")
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stdout + result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["database", "rows", "plain", "INSERT", "with", "trigger", "ratio"]
    assert [row.split()[0] for row in rows] == expected
    for row in rows:
        fields = row.split()
        assert fields[1] == "200" and fields[3] == fields[5] == "s" and fields[6].endswith("x")
