"""bench/triggers.py runs end to end on a few rows and prints its line of figures.

Only that it completes, with the trigger's outbox rows all written, is checked: benchmark figures
are never asserted on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TRIGGERS = Path(__file__).resolve().parent.parent / "bench" / "triggers.py"

pytestmark = pytest.mark.pg


def test_trigger_bench_prints_both_times_and_the_ratio(pg_dsn: str) -> None:
    result = subprocess.run(
        [sys.executable, str(TRIGGERS), "--rows", "200", "--pg-dsn", pg_dsn],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    header, row = result.stdout.splitlines()
    assert header.split() == ["rows", "plain", "INSERT", "with", "trigger", "ratio"]
    fields = row.split()
    assert fields[0] == "200" and fields[2] == fields[4] == "s" and fields[5].endswith("x")
