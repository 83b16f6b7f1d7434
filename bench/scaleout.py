"""Scaling out: one gearsql server against two (or more) on the same machine, C gearmand beside.

One Python process runs on one core, so one ``gearsql server`` does what one core allows
(bench/README.md gives the figures). More throughput comes from more servers: clients spread
their jobs over all of them (gearsql's client picks the server by hashing the unique, so a
unique always reaches the same server and still coalesces; jobs without a unique go round
robin), and every worker connects to every server. This script measures that arrangement with
the load generator of ``bench/compare.py``:

- ``submit-bg``: the submitting connections are shared out over the servers (what hashing
  distinct 36-byte uniques does), each server gets its share of the jobs;
- ``drain``: each server holds its share of the queued jobs, and the workers, connected to
  every server, empty them all;
- ``foreground``: the 16 clients are shared out over the servers; 4 workers, each connected to
  every server.

Each figure is the total over the servers, and the server CPU is the sum of their CPU times. On
a machine with fewer cores than servers plus load generator, the servers share cores and the
second one adds little: the CPU columns show it. A C ``gearmand -t 0`` (one server, the same
load) is measured beside for reference.

    python bench/scaleout.py                    # 1 and 2 gearsql servers, gearmand, best of 3
    python bench/scaleout.py --counts 1,2,4 --scenarios foreground
    python bench/scaleout.py --quick            # a smoke run, not a measurement
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
from compare import QUICK_JOBS, RunningServer, format_table, start_server
from loadgen import LoadConfig, PhaseResult, ProcessSpec, ScenarioError
from loadgen import _percentile as percentile
from loadgen import _split as shares

HOST = "127.0.0.1"
SCENARIOS = ("submit-bg", "drain", "foreground")


def _cpu(servers: Sequence[RunningServer]) -> float:
    return sum(loadgen.process_cpu_seconds(server.pid) for server in servers)


def _timed(
    specs: list[ProcessSpec], servers: Sequence[RunningServer], cfg: LoadConfig
) -> tuple[PhaseResult, float]:
    """Run one phase; its result and the CPU seconds all the servers used meanwhile."""
    before = _cpu(servers)
    phase = loadgen.run_phase(specs, None, cfg.timeout)
    return phase, _cpu(servers) - before


def _submitters(
    servers: Sequence[RunningServer], cfg: LoadConfig, function: bytes, jobs: int, tag: str
) -> list[ProcessSpec]:
    specs: list[ProcessSpec] = []
    connections = shares(max(cfg.submit_connections, len(servers)), len(servers))
    for number, (server, share, conns) in enumerate(
        zip(servers, shares(jobs, len(servers)), connections, strict=True)
    ):
        specs.append(
            ProcessSpec(
                "submit",
                HOST,
                server.port,
                conns,
                shares(share, conns),
                window=cfg.submit_window,
                function=function,
                unique_tag=f"{tag}{number}" if cfg.unique == "uuid" else None,
            )
        )
    return specs


def _workers(
    servers: Sequence[RunningServer], cfg: LoadConfig, function: bytes, target: int = 0
) -> list[ProcessSpec]:
    """``cfg.workers`` workers connected to every server: one connection each per server."""
    return [
        ProcessSpec("worker", HOST, server.port, cfg.workers, function=function, target=target)
        for server in servers
    ]


def submit_bg(servers: Sequence[RunningServer], cfg: LoadConfig) -> dict[str, float]:
    phase, cpu = _timed(_submitters(servers, cfg, b"scale_bg", cfg.jobs, "s"), servers, cfg)
    return {"jobs_per_s": phase.count / phase.wall, "server_cpu_per_100k": cpu * 1e5 / phase.count}


def drain(servers: Sequence[RunningServer], cfg: LoadConfig) -> dict[str, float]:
    function = b"scale_drain"
    loadgen.run_phase(_submitters(servers, cfg, function, cfg.jobs, "d"), None, cfg.timeout)
    for server, share in zip(servers, shares(cfg.jobs, len(servers)), strict=True):
        held = loadgen.queued_jobs(HOST, server.port, function)
        if held < share:
            raise ScenarioError(f"server on port {server.port} holds {held} jobs, not {share}")
    phase, cpu = _timed(_workers(servers, cfg, function, target=cfg.jobs), servers, cfg)
    return {"jobs_per_s": cfg.jobs / phase.wall, "server_cpu_per_100k": cpu * 1e5 / cfg.jobs}


def foreground(servers: Sequence[RunningServer], cfg: LoadConfig) -> dict[str, float]:
    function = b"scale_fg"
    specs = _workers(servers, cfg, function)
    for server, clients, jobs in zip(
        servers,
        shares(cfg.clients, len(servers)),
        shares(cfg.fg_total, len(servers)),
        strict=True,
    ):
        specs.append(
            ProcessSpec(
                "client", HOST, server.port, clients, shares(jobs, clients), function=function
            )
        )
    phase, cpu = _timed(specs, servers, cfg)
    return {
        "jobs_per_s": phase.count / phase.wall,
        "server_cpu_per_100k": cpu * 1e5 / phase.count,
        "p99_ms": percentile(phase.latencies, 0.99) * 1000,
    }


MEASURES = {"submit-bg": submit_bg, "drain": drain, "foreground": foreground}


def measure(kind: str, count: int, scenario: str, cfg: LoadConfig) -> dict[str, float]:
    """One run of ``scenario`` on ``count`` fresh servers of ``kind``."""
    servers: list[RunningServer] = []
    try:
        for _ in range(count):
            servers.append(start_server(kind, (), None))
        result = MEASURES[scenario](servers, cfg)
        for server in servers:
            if server.proc.poll() is not None:
                raise ScenarioError(f"{kind} on port {server.port} exited during the run")
        return result
    finally:
        for server in servers:
            server.stop()


def run(
    counts: Sequence[int], scenarios: Sequence[str], cfg: LoadConfig, repeat: int, peer: bool
) -> list[tuple[str, str, dict[str, float]]]:
    """Best of ``repeat`` runs of every (servers, scenario), alternating between setups so that
    they share the machine's background load alike."""
    setups = [("gearsql", count) for count in counts] + ([("gearmand", 1)] if peer else [])
    results = []
    for scenario in scenarios:
        runs: dict[tuple[str, int], list[dict[str, float]]] = {setup: [] for setup in setups}
        for _ in range(repeat):
            for setup in setups:
                got = measure(*setup, scenario, cfg)
                runs[setup].append(got)
                print(
                    f"  {scenario:<11} {setup[0]} x{setup[1]}: {got['jobs_per_s']:,.0f} jobs/s",
                    flush=True,
                )
        for (kind, count), got in runs.items():
            best = max(got, key=lambda metrics: metrics["jobs_per_s"])
            results.append((scenario, f"{kind} x{count}", best))
    return results


def table(results: list[tuple[str, str, dict[str, float]]]) -> str:
    base: dict[str, float] = {}
    rows = []
    for scenario, setup, metrics in results:
        rate = metrics["jobs_per_s"]
        if setup == "gearsql x1":
            base[scenario] = rate
        scale = f"{rate / base[scenario]:.2f}" if scenario in base else "-"
        p99 = f"{metrics['p99_ms']:.1f}" if "p99_ms" in metrics else "-"
        rows.append(
            [scenario, setup, f"{rate:,.0f}", scale, f"{metrics['server_cpu_per_100k']:.2f}", p99]
        )
    headers = ["scenario", "servers", "jobs/s", "vs 1 gearsql", "server CPU s/100k", "p99 ms"]
    return format_table(headers, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1,2", help="gearsql server counts to measure")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--jobs", type=int, default=None, help="jobs per scenario (200k)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per setup; best kept")
    parser.add_argument("--no-gearmand", action="store_true", help="leave C gearmand out")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    args = parser.parse_args(argv)
    scenarios = [name for name in args.scenarios.split(",") if name]
    for name in scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    try:
        counts = [int(value) for value in args.counts.split(",") if value]
    except ValueError:
        parser.error(f"--counts {args.counts!r}: comma-separated numbers, e.g. 1,2")
    if not counts or min(counts) < 1:
        parser.error("--counts: at least one server")
    jobs = args.jobs or (QUICK_JOBS if args.quick else LoadConfig.jobs)
    cfg = replace(LoadConfig(jobs=jobs), timeout=60.0 if args.quick else 300.0)
    print(
        f"scale-out: {', '.join(scenarios)}; {jobs} jobs; gearsql x{args.counts}; best of "
        f"{args.repeat}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    try:
        results = run(counts, scenarios, cfg, args.repeat, not args.no_gearmand)
    except ScenarioError as exc:
        print(f"scaleout: {exc}", file=sys.stderr)
        return 1
    print()
    print(table(results))
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
