"""What retries and the unique window cost: gearsql with and without them, side by side.

The same load generator and scenarios as ``bench/compare.py`` (read its docstring), run on a
fresh ``gearsql server`` each time, alternating between a plain server and one started with the
failure-handling options, so both see the same background load:

- ``submit-bg``: background submissions with 36-byte uniques (the unique window only acts on jobs
  with a unique, so this is the case it costs most in);
- ``drain``: the queued jobs emptied by 4 workers; with the window on, every completion is
  remembered, and with retries on every job carries its attempt count.

The target (issue 13) is each figure within 10 % of the plain server's (ratio at least 0.90).

    python bench/features.py                     # 200k jobs, best of 3
    python bench/features.py --quick             # a smoke run, not a measurement
    python bench/features.py --options '--retries 5 --unique-window 3600 --keep-results'
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import QUICK_JOBS, format_table, measure, representative
from loadgen import LoadConfig

#: The options measured against a plain server, unless --options says otherwise.
DEFAULT_OPTIONS = "--retries 3 --retry-backoff 1:60 --unique-window 600"
SCENARIOS = ("submit-bg", "drain")
TARGET = 0.90


def run(
    scenarios: Sequence[str], options: Sequence[str], cfg: LoadConfig, repeat: int
) -> dict[str, dict[str, dict[str, Any]]]:
    """{scenario: {"plain" | "features": the best run}}."""
    variants = {"plain": [], "features": list(options)}
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for scenario in scenarios:
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for _ in range(repeat):
            for name, extra in variants.items():
                runs[name].append(measure(scenario, "gearsql", extra, None, cfg))
        results[scenario] = {name: representative(scenario, got) for name, got in runs.items()}
    return results


def rows(results: dict[str, dict[str, dict[str, Any]]]) -> list[list[str]]:
    table = []
    for scenario, by_variant in results.items():
        plain, features = by_variant["plain"], by_variant["features"]
        if "error" in plain or "error" in features:
            problem = plain.get("error") or features.get("error")
            table.append([scenario, "jobs/s", "error", "error", "-", str(problem)[:60]])
            continue
        ours, theirs = features["metrics"]["jobs_per_s"], plain["metrics"]["jobs_per_s"]
        ratio = ours / theirs
        verdict = "met" if ratio >= TARGET else "NOT met"
        table.append(
            [scenario, "jobs/s", f"{theirs:,.0f}", f"{ours:,.0f}", f"{ratio:.2f}", verdict]
        )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--options", default=DEFAULT_OPTIONS, help="the options measured")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--jobs", type=int, default=None, help="jobs per scenario (200k)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant; best kept")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    args = parser.parse_args(argv)
    scenarios = [name for name in args.scenarios.split(",") if name]
    for name in scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    jobs = args.jobs or (QUICK_JOBS if args.quick else LoadConfig.jobs)
    cfg = LoadConfig(jobs=jobs, timeout=60.0 if args.quick else 300.0, unique="uuid")
    print(
        f"gearsql plain vs gearsql {args.options}: {', '.join(scenarios)}; {jobs} jobs; "
        f"best of {args.repeat}; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results = run(scenarios, shlex.split(args.options), cfg, args.repeat)
    print()
    headers = ["scenario", "figure", "plain", "with options", "ratio", f"target >= {TARGET}"]
    print(format_table(headers, rows(results)))
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")
    failed = any("error" in run for by in results.values() for run in by.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
