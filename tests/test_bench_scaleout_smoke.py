"""bench/scaleout.py runs end to end on small counts: one and two gearsql servers and C gearmand.

Only that it completes and prints a figure per setup and scenario is checked: benchmark figures
are never asserted on. That two servers really share the jobs is checked by the script itself
(the drain fails unless every server holds its share).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCALEOUT = Path(__file__).resolve().parent.parent / "bench" / "scaleout.py"


@pytest.mark.slow
def test_scaleout_bench_quick_run_prints_every_setup() -> None:
    result = subprocess.run(
        [sys.executable, str(SCALEOUT), "--quick", "--repeat", "1", "--jobs", "600"],
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {
        (cells[0], cells[1] + " " + cells[2]): cells
        for cells in (line.split() for line in result.stdout.splitlines())
        if len(cells) >= 6 and cells[0] in ("submit-bg", "drain", "foreground")
    }
    setups = ("gearsql x1", "gearsql x2", "gearmand x1")
    scenarios = ("submit-bg", "drain", "foreground")
    assert set(rows) == {(s, setup) for s in scenarios for setup in setups}, result.stdout
    for cells in rows.values():
        assert float(cells[3].replace(",", "")) > 0, result.stdout
