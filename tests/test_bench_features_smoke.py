"""bench/features.py runs end to end on small counts and prints both rows.

Only that it completes and prints a figure per variant is checked: benchmark figures are never
asserted on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FEATURES = Path(__file__).resolve().parent.parent / "bench" / "features.py"


@pytest.mark.slow
def test_features_bench_quick_run_prints_both_scenarios() -> None:
    result = subprocess.run(
        [sys.executable, str(FEATURES), "--quick", "--repeat", "1", "--jobs", "1000"],
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {
        line.split()[0]: line.split()
        for line in result.stdout.splitlines()
        if line.startswith(("submit-bg ", "drain "))
    }
    assert set(rows) == {"submit-bg", "drain"}, result.stdout
    for cells in rows.values():
        plain, features = (float(cell.replace(",", "")) for cell in cells[2:4])
        assert plain > 0 and features > 0, result.stdout
