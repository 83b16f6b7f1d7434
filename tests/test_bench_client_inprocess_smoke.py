"""bench/client_inprocess.py runs end to end on small counts, on both event loops.

The script checks itself that every job got its result through the client's code; here only
that it completes and prints a figure. Figures are never asserted on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "client_inprocess.py"


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_client_inprocess_bench_runs(loop: str) -> None:
    pytest.importorskip(loop)
    command = [sys.executable, str(SCRIPT), "--jobs", "3000", "--window", "7", "--repeat", "2"]
    result = subprocess.run(
        [*command, "--loop", loop],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"window 7 on {loop}: 3000 jobs, CPU µs per job best "), line
    figures = line.split("all ")[1].rstrip(")").split(", ")
    assert len(figures) == 2 and all(float(figure) > 0 for figure in figures), line
