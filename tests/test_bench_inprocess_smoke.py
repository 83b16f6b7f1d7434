"""bench/inprocess.py runs every scenario end to end on small counts.

The script checks itself that the jobs went through the server's code (queued after a submit
run, none left after a foreground run or a drain, every foreground job answered with its
WORK_COMPLETE); here only that it completes and prints a figure per scenario. Figures are never
asserted on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

INPROCESS = Path(__file__).resolve().parent.parent / "bench" / "inprocess.py"


@pytest.mark.parametrize("scenario", ["submit-bg-no-unique", "submit-bg", "foreground", "drain"])
def test_inprocess_bench_runs(scenario: str) -> None:
    result = subprocess.run(
        [sys.executable, str(INPROCESS), scenario, "--jobs", "2000", "--repeat", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"{scenario}: 2000 jobs, CPU µs per job best "), line
    figures = line.split("all ")[1].split(", ")
    assert len(figures) == 2 and all(float(figure) > 0 for figure in figures), line


def test_inprocess_bench_counts_the_servers_bytecodes() -> None:
    result = subprocess.run(
        [sys.executable, str(INPROCESS), "foreground", "--jobs", "200", "--bytecodes"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    first, *rows = result.stdout.splitlines()
    assert first.startswith("foreground: ") and first.endswith(" bytecodes of the server's per job")
    assert int(first.split()[1]) > 0, first
    functions = {row.split()[-1] for row in rows}
    # The connection's read and the core's submission are the server's; none of the script's.
    assert {"_Connection.data_received", "ClientRules.submit"} <= functions, result.stdout
    assert not any(row.split()[1] == "inprocess.py" for row in rows), result.stdout
