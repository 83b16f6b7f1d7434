"""bench/durable.py runs end to end on small counts and prints every row of its table.

Only that it completes is checked: benchmark figures are never asserted on. PostgreSQL and MySQL
are added only when GEARSQL_TEST_PG_DSN / GEARSQL_TEST_MYSQL_DSN name a server to use.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import need_tool

DURABLE = Path(__file__).resolve().parent.parent / "bench" / "durable.py"
COLUMNS = ["store", "figure", "gearmand", "gearsql", "gearsql/gearmand"]
FIGURES = [
    "submit jobs/s",
    "submit server CPU s/100k",
    "drain jobs/s",
    "drain jobs/s to empty table",
    "drain server CPU s/100k",
]
NUMBER = r"-?[\d,]*\.?\d+"


@pytest.mark.slow
@pytest.mark.interop
def test_durable_bench_quick_run_prints_every_row() -> None:
    need_tool("gearmand")
    stores = ["memory", "sqlite"]
    command = [sys.executable, str(DURABLE), "--quick", "--jobs", "1000", "--slow-jobs", "100"]
    if os.environ.get("GEARSQL_TEST_PG_DSN"):
        stores.append("postgresql")
        command += ["--pg-dsn", os.environ["GEARSQL_TEST_PG_DSN"]]
    if os.environ.get("GEARSQL_TEST_MYSQL_DSN"):
        stores.append("mysql")
        command += ["--mysql-dsn", os.environ["GEARSQL_TEST_MYSQL_DSN"]]
    result = subprocess.run(
        [*command, "--stores", ",".join(stores)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    header = next(n for n, line in enumerate(lines) if line.split() == COLUMNS)
    table = {}
    for line in lines[header + 2 :]:
        if not line.strip() or line.startswith("memory ="):
            break
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(COLUMNS), line
        table[cells[0], cells[1]] = cells
    for store in stores:
        for figure in FIGURES:
            if store == "memory" and figure == "drain jobs/s to empty table":
                continue
            row = table.get((store, figure))
            assert row is not None, f"no row {store} / {figure} in {sorted(table)}"
            assert re.fullmatch(NUMBER, row[3]), row  # gearsql
            assert re.fullmatch(NUMBER, row[2]), row  # gearmand
    assert re.search(r"batches of 64: +" + NUMBER + " rows/s", result.stdout)
    assert "gearsql default SQLite store >= 50,000 background jobs/s" in result.stdout
    assert "of gearsql's in-memory rate" in result.stdout
