"""bench/relay.py runs end to end on small counts (--quick) and prints a row per case.

Only that it completes is checked: benchmark figures are never asserted on. PostgreSQL and MariaDB
are added when GEARSQL_TEST_PG_DSN / GEARSQL_TEST_MYSQL_DSN name a server to use, MariaDB's
binlog when ``mariadbd`` is installed (the bench starts a private server for it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RELAY = Path(__file__).resolve().parent.parent / "bench" / "relay.py"


def _mariadbd() -> bool:
    return bool(shutil.which("mariadb-install-db")) and (
        bool(shutil.which("mariadbd")) or os.path.exists("/usr/sbin/mariadbd")
    )


@pytest.mark.slow
def test_relay_bench_quick_run_prints_every_case(tmp_path: Path) -> None:
    figures = tmp_path / "relay.json"
    command = [sys.executable, str(RELAY), "--quick", "--json", str(figures)]
    expected = [("sqlite", "change counter"), ("sqlite", "poll")]
    if os.environ.get("GEARSQL_TEST_PG_DSN"):
        command += ["--pg-dsn", os.environ["GEARSQL_TEST_PG_DSN"]]
        expected += [("postgresql", "listen"), ("postgresql", "poll")]
    else:
        command += ["--pg-dsn", ""]
    if os.environ.get("GEARSQL_TEST_MYSQL_DSN"):
        command += ["--mysql-dsn", os.environ["GEARSQL_TEST_MYSQL_DSN"]]
        expected += [("mariadb", "poll")]
    else:
        command += ["--mysql-dsn", ""]
    if _mariadbd():
        command += ["--binlog"]
        expected += [("mariadb", "binlog"), ("mariadb", "poll")]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    header = next(n for n, line in enumerate(lines) if line.split()[:2] == ["database", "source"])
    rows = [line for line in lines[header + 2 :] if line.strip()]
    assert len(rows) == len(expected)
    for line, (database, source) in zip(rows, expected, strict=True):
        assert line.startswith(f"{database:<12}{source:<16}")
        assert len(line.split()) == 1 + len(source.split()) + 5  # rows/s ... busy cores
    written = json.loads(figures.read_text())
    assert [(r["database"], r["source"]) for r in written["results"]] == expected
    assert all(r["rows_per_s"] > 0 and r["p50_ms"] >= 0 for r in written["results"])
    assert all(r["relay_us_per_row"] >= 0 and r["busy_cores"] >= 0 for r in written["results"])
