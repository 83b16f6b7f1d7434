"""Seeded fuzzing of a real ``gearsql server`` process (docs/reliability.md case 14).

The generator and the runner are ``bench/fuzz.py``'s (read its docstring): each case is one
connection with malformed or valid input; between cases a well-behaved client and worker make
round trips on connections that stay open. Here a fixed number of cases runs with a fixed seed,
so a failure is replayed exactly with ``python bench/fuzz.py --seed SEED --cases N`` (or one case
with ``--only``); ``GEARSQL_FUZZ_SEED`` picks another seed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

FUZZ = Path(__file__).resolve().parent.parent / "bench" / "fuzz.py"
SEED = int(os.environ.get("GEARSQL_FUZZ_SEED", "14"))


def load_fuzz() -> ModuleType:
    name = "gearsql_bench_fuzz"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, FUZZ)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_generator_is_replayable_from_its_seed() -> None:
    fuzz = load_fuzz()
    first = [case.data for _, case in zip(range(200), fuzz.cases(SEED), strict=False)]
    again = [case.data for _, case in zip(range(200), fuzz.cases(SEED), strict=False)]
    other = [case.data for _, case in zip(range(200), fuzz.cases(SEED + 1), strict=False)]
    assert first == again and first != other
    kinds = {case.kind for _, case in zip(range(200), fuzz.cases(SEED), strict=False)}
    assert kinds == set(fuzz.KINDS)


def test_fuzzed_server_stays_up_and_keeps_answering_a_well_behaved_client(
    tmp_path: Path,
) -> None:
    fuzz = load_fuzz()
    log_path = tmp_path / "gearsql.log"
    # Small limits, so that over-size packets and the function cap are reached too.
    extra = ["--max-packet-size", "65536", "--max-buffer", "1048576", "--max-functions", "50"]
    with fuzz.started_server(log_path, extra) as (address, pid):
        report = fuzz.run(address, pid, SEED, max_cases=2000, probe_every=10, log_path=log_path)
    print("\n" + "\n".join(report.lines()))
    assert report.cases == 2000
    assert not report.server_died
    assert report.not_closed == [], f"replay: bench/fuzz.py --seed {SEED} --only N"
    assert report.probe_failures == []
    assert report.log_anomalies == 0, log_path.read_text()[-3000:]
    assert len(report.round_trips) == 200
    # A few thousand short connections leave the server's memory where it was, give or take
    # the allocator's arenas.
    assert report.rss_end - report.rss_start < 16 * 1024


def test_concurrent_fuzzers_leave_no_anomaly_and_the_probe_measures_both_ways(
    tmp_path: Path,
) -> None:
    """Case 47's load: several fuzzing processes at once, the well-behaved client's round trips
    on a kept connection and on a fresh one meanwhile. How long they take is not asserted (that
    is bench/README.md's figure): that they all come back, and nothing else goes wrong, is."""
    fuzz = load_fuzz()
    log_path = tmp_path / "gearsql.log"
    with fuzz.started_server(log_path, ["--max-functions", "200"]) as (address, pid):
        report = fuzz.run(
            address,
            pid,
            SEED,
            max_cases=1200,
            concurrency=4,
            probe_interval=0.01,
            log_path=log_path,
        )
    print("\n" + "\n".join(report.lines()))
    assert report.cases == 1200
    assert not report.server_died
    assert report.not_closed == [], f"replay: bench/fuzz.py --seed {SEED} --only N"
    assert report.probe_failures == []
    assert report.log_anomalies == 0, log_path.read_text()[-3000:]
    assert report.round_trips and len(report.fresh_trips) == len(report.round_trips)
    assert report.next_case >= 1200


def test_the_fuzz_script_prints_its_report() -> None:
    result = subprocess.run(
        [sys.executable, str(FUZZ), "--cases", "100", "--seed", str(SEED)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["seed", str(SEED)]
    assert any(line.startswith("cases                100 in") for line in lines)
    assert "anomalies            0" in lines
