"""bench/hostile.py runs end to end on small sizes and prints a row for each figure.

Only that it completes is checked, and the outcomes that are not figures (the ERROR a client
reads, nothing left listed): benchmark figures are never asserted on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HOSTILE = Path(__file__).resolve().parent.parent / "bench" / "hostile.py"


@pytest.mark.slow
def test_hostile_bench_quick_run_prints_its_table() -> None:
    result = subprocess.run(
        [sys.executable, str(HOSTILE), "--quick", "--scenarios", "abandoned,oversize,unread"],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split("  ")[0].strip(): line for line in result.stdout.splitlines()[2:]}
    assert set(rows) == {"abandoned", "oversize", "unread"}
    assert "ARGUMENT_TOO_LARGE packet too large (limit 67108864 bytes)" in result.stdout
    assert any(
        line.startswith("abandoned") and line.rstrip().endswith("  0")
        for line in result.stdout.splitlines()
    ), result.stdout
