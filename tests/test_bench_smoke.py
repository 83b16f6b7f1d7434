"""The benchmark harness (bench/compare.py) runs every scenario end to end on small counts.

Only that it completes and prints its table is checked: benchmark figures are never asserted on.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import need_tool

COMPARE = Path(__file__).resolve().parent.parent / "bench" / "compare.py"

#: Every scenario and one figure of it that must be in the table.
EXPECTED_ROWS = [
    ("echo", "ECHO round trips/s"),
    ("submit-bg", "jobs/s, 36-byte uniques"),
    ("submit-bg-no-unique", "jobs/s, empty uniques"),
    ("drain", "jobs/s, 1k queued, 4 workers"),
    ("foreground", "p99 submit->WORK_COMPLETE ms"),
    ("memory", "RSS 1k jobs queued, MiB"),
    ("memory-no-unique", "RSS growth per queued job, bytes"),
]
COLUMNS = ["scenario", "figure", "gearmand", "gearsql", "gearsql/gearmand"]


def run_quick_comparison(server: str) -> dict[tuple[str, str], dict[str, str]]:
    """Run ``compare.py --quick`` against one kind of server; return its table by row."""
    result = subprocess.run(
        [sys.executable, str(COMPARE), "--quick", "--jobs", "1000", "--servers", server],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    header = next(n for n, line in enumerate(lines) if line.split() == COLUMNS)
    table: dict[tuple[str, str], dict[str, str]] = {}
    for line in lines[header + 2 :]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(COLUMNS), line
        row = dict(zip(COLUMNS, cells, strict=True))
        table[row["scenario"], row["figure"]] = row
    return table


def assert_every_scenario_measured(
    table: dict[tuple[str, str], dict[str, str]], server: str
) -> None:
    for key in EXPECTED_ROWS:
        assert key in table, f"no row {key} in {sorted(table)}"
    for (scenario, figure), row in table.items():
        # A number; "n/a" only where a figure is undefined (no RSS growth to give back).
        assert re.fullmatch(r"-?[\d,]*\.?\d+|n/a", row[server]), f"{scenario} {figure}: {row}"
        assert row[server] != "n/a" or scenario.startswith("memory"), f"{scenario} {figure}: {row}"


@pytest.mark.slow
@pytest.mark.interop
def test_bench_quick_run_against_gearmand_prints_every_scenario() -> None:
    need_tool("gearmand")
    assert_every_scenario_measured(run_quick_comparison("gearmand"), "gearmand")


@pytest.mark.slow
def test_bench_quick_run_against_gearsql_prints_every_scenario() -> None:
    server_help = subprocess.run(
        [sys.executable, "-m", "gearsql", "server", "--help"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    if server_help.returncode != 0:
        pytest.skip("this checkout has no `gearsql server` yet")
    assert_every_scenario_measured(run_quick_comparison("gearsql"), "gearsql")


def test_bench_python_floor_runs_its_scenarios_in_its_own_columns() -> None:
    """floor.py, the pure-Python lower bound, is a server kind of its own: the submit and
    foreground scenarios run against it (the load generator checks it holds every job it
    acknowledged, and that every foreground job completes) and its figures get their own
    columns; any other scenario is refused with a clear message."""
    result = subprocess.run(
        [
            sys.executable,
            str(COMPARE),
            "--quick",
            "--jobs",
            "1000",
            "--servers",
            "python-floor",
            "--scenarios",
            "submit-bg,submit-bg-no-unique,foreground",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    columns = [*COLUMNS, "python-floor", "python-floor/gearmand"]
    lines = result.stdout.splitlines()
    header = next(n for n, line in enumerate(lines) if line.split() == columns)
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[header + 2 : header + 10]]
    assert [row[:2] for row in rows] == [
        ["submit-bg", "jobs/s, 36-byte uniques"],
        ["submit-bg", "server CPU s per 100k jobs"],
        ["submit-bg-no-unique", "jobs/s, empty uniques"],
        ["submit-bg-no-unique", "server CPU s per 100k jobs"],
        ["foreground", "jobs/s, 16 clients, 4 workers"],
        ["foreground", "p50 submit->WORK_COMPLETE ms"],
        ["foreground", "p99 submit->WORK_COMPLETE ms"],
        ["foreground", "server CPU s per 100k jobs"],
    ]
    for row in rows:
        # gearmand and gearsql did not run, so there is no ratio either
        assert row[2:5] == ["-", "-", "-"] and row[6] == "-", row
        assert re.fullmatch(r"[\d,]*\.?\d+", row[5]), row
        # (1,000 jobs' CPU may round to 0.00 at the clock's 10 ms ticks; a rate may not)
        assert not row[1].startswith("jobs/s") or float(row[5].replace(",", "")) > 0, row

    refused = subprocess.run(
        [sys.executable, str(COMPARE), "--servers", "python-floor", "--scenarios", "drain"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert refused.returncode == 2
    assert (
        "python-floor runs only submit-bg, submit-bg-no-unique, foreground, not drain"
        in refused.stderr
    )


def test_bench_memory_floor_prints_a_figure_per_variant() -> None:
    """memory_floor.py measures each way of keeping a queued job in a process of its own."""
    script = COMPARE.parent / "memory_floor.py"
    result = subprocess.run(
        [sys.executable, str(script), "--jobs", "2000"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = dict(line.split() for line in result.stdout.splitlines()[1:])
    assert set(rows) == {"none", "unique-key", "hash-key"}
    # Whatever the allocator does, a job keeps at least its 100-byte payload.
    assert all(int(figure) >= 100 for figure in rows.values()), rows
