"""The client benchmark (bench/clients.py) runs every client row end to end on small counts.

Only that it completes and prints a row per client and mode is checked: benchmark figures are
never asserted on.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import need_tool

CLIENTS = Path(__file__).resolve().parent.parent / "bench" / "clients.py"

#: (client, the start of its mode) of every row the table must hold.
EXPECTED_ROWS = [
    ("gearsql AsyncClient", "submit_task, window"),
    ("gearsql AsyncClient", "submit_task x"),
    ("gearsql AsyncClient", "submit, one at a time"),
    ("gearsql Client", "submit_task x"),
    ("gearsql Client", "submit, one at a time"),
    ("gear", "submitJob, window"),
    ("gear", "submitJob, one at a time"),
    ("gearman3", "submit_multiple_jobs x"),
    ("gearman3", "submit_job, one at a time"),
    ("python floor", "raw SUBMIT_JOB, window"),
]


@pytest.mark.slow
@pytest.mark.interop
def test_bench_clients_quick_run_prints_every_client_row() -> None:
    need_tool("gearmand")
    result = subprocess.run(
        [sys.executable, str(CLIENTS), "--quick"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    header = next(n for n, line in enumerate(lines) if line.startswith("client "))
    rows = []
    for line in lines[header + 2 :]:
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    for client, mode in EXPECTED_ROWS:
        matching = [r for r in rows if r[0] == client and r[1].startswith(mode)]
        assert matching, f"no row {client} / {mode} in:\n{result.stdout}"
        # A rate, not "error".
        assert re.fullmatch(r"[\d,]+", matching[0][2]), matching[0]
    assert "target (gearsql AsyncClient" in result.stdout
