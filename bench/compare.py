"""Benchmark gearsql against C gearmand side by side: same load generator, same machine, one run.

Each scenario runs on a freshly started server of each kind, alternating between them, so that no
scenario inherits another's queue or memory. The first table gives each figure for both servers
and the ratio gearsql/gearmand; the second shows, per measured phase, the CPU time of the load
generator and of the server against wall time, which is how a reader can tell which side was the
bottleneck. See bench/README.md.

    python bench/compare.py                       # every scenario, 200k jobs, both servers
    python bench/compare.py --quick               # a smoke run with small counts
    python bench/compare.py --scenarios drain,foreground --servers gearsql --json out.json
    python bench/compare.py --scenarios submit-bg-no-unique --servers gearmand,gearsql,python-floor

``python-floor`` (``floor.py``) is the least a pure-Python server can do per background
submission, and ``python-floor-parser`` the same framed by gearsql's sans-IO parser; beside the
other two they show what the interpreter alone costs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
from loadgen import SCENARIOS, LoadConfig, ScenarioError
from ports import free_port

from gearsql.protocol import RES, Packet, PacketType, Parser, pack_request

SERVERS = ("gearmand", "gearsql")
#: Servers run only when ``--servers`` names them: ``python-floor`` is ``floor.py``, the least a
#: pure-Python server can do per job (in a few scenarios only).
EXTRA_SERVERS = ("python-floor", "python-floor-parser")
#: The scenarios each of them runs.
FLOOR_SCENARIOS = {
    "python-floor": ("submit-bg", "submit-bg-no-unique", "foreground"),
    "python-floor-parser": ("submit-bg", "submit-bg-no-unique"),
}
QUICK_JOBS = 2000
MIB = 1024 * 1024
#: The RSS allowed with 200k queued 100-byte jobs (issue 17).
MEMORY_TARGET_MIB = 80


# ---------------------------------------------------------------------------------------------
# Servers


def server_command(kind: str, port: int, extra: Sequence[str] = ()) -> list[str]:
    """The command line of a benchmarked server listening on 127.0.0.1:``port``."""
    if kind == "gearsql":
        return [
            sys.executable,
            "-m",
            "gearsql",
            "server",
            "--port",
            str(port),
            "--listen",
            "127.0.0.1",
            "--store",
            "memory",
            "--verbose",
            "ERROR",
            "--log-file",
            "/dev/null",
            *extra,
        ]
    if kind == "gearmand":
        gearmand = shutil.which("gearmand") or "/usr/sbin/gearmand"
        return [gearmand, "-p", str(port), "-L", "127.0.0.1", "-t", "0", "-l", "/dev/null", *extra]
    if kind in ("python-floor", "python-floor-parser"):
        floor = Path(__file__).resolve().parent / "floor.py"
        parser = ["--parser"] if kind == "python-floor-parser" else []
        return [sys.executable, str(floor), "--port", str(port), *parser, *extra]
    raise ValueError(f"unknown server {kind!r}")


@dataclass
class RunningServer:
    kind: str
    port: int
    proc: subprocess.Popen[bytes]
    stderr_path: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_tail(self) -> str:
        try:
            with open(self.stderr_path, errors="replace") as handle:
                return handle.read()[-2000:].strip()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.unlink(self.stderr_path)
        except OSError:
            pass


def _echo_once(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(pack_request(PacketType.ECHO_REQ, b"ready"))
            parser = Parser(expect_magic=RES)
            while True:
                data = sock.recv(4096)
                if not data:
                    return False
                for event in parser.feed(data):
                    return isinstance(event, Packet) and event.type is PacketType.ECHO_RES
    except OSError:
        return False


def start_server(
    kind: str, extra: Sequence[str], cpu: int | None, timeout: float = 20.0
) -> RunningServer:
    """Start a server on a free loopback port and wait until it answers ECHO."""
    port = free_port()
    command = server_command(kind, port, extra)
    fd, stderr_path = tempfile.mkstemp(prefix=f"bench-{kind}-", suffix=".stderr")
    with os.fdopen(fd, "wb") as stderr:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
        )
    server = RunningServer(kind, port, proc, stderr_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            detail = server.stderr_tail()
            server.stop()
            raise ScenarioError(
                f"{shlex.join(command)} exited with {proc.returncode}"
                + (f": {detail}" if detail else "")
            )
        if _echo_once(port):
            return server
        time.sleep(0.05)
    server.stop()
    raise ScenarioError(f"{kind} did not answer ECHO within {timeout:.0f} s")


# ---------------------------------------------------------------------------------------------
# The table


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _fixed(digits: int) -> Callable[[float], str]:
    return lambda value: f"{value:,.{digits}f}"


def _jobs_label(count: int) -> str:
    return f"{count // 1000}k" if count >= 1000 and count % 1000 == 0 else str(count)


@dataclass
class Row:
    scenario: str
    key: str
    label: str
    fmt: Callable[[float], str]


def table_rows(cfg: LoadConfig) -> list[Row]:
    half, full = _jobs_label(cfg.jobs // 2), _jobs_label(cfg.jobs)
    return [
        Row("echo", "echo_per_s", "ECHO round trips/s", _rate),
        Row(
            "submit-bg",
            "jobs_per_s",
            "jobs/s, 36-byte uniques" if cfg.unique == "uuid" else "jobs/s, empty uniques",
            _rate,
        ),
        Row("submit-bg", "cpu_per_100k", "server CPU s per 100k jobs", _fixed(2)),
        Row("submit-bg-no-unique", "jobs_per_s", "jobs/s, empty uniques", _rate),
        Row("submit-bg-no-unique", "cpu_per_100k", "server CPU s per 100k jobs", _fixed(2)),
        Row("drain", "jobs_per_s", f"jobs/s, {full} queued, {cfg.workers} workers", _rate),
        Row("drain", "seconds", "seconds to last WORK_COMPLETE", _fixed(2)),
        Row("drain", "cpu_per_100k", "server CPU s per 100k jobs", _fixed(2)),
        Row(
            "foreground",
            "jobs_per_s",
            f"jobs/s, {cfg.clients} clients, {cfg.workers} workers",
            _rate,
        ),
        Row("foreground", "p50_ms", "p50 submit->WORK_COMPLETE ms", _fixed(2)),
        Row("foreground", "p99_ms", "p99 submit->WORK_COMPLETE ms", _fixed(2)),
        Row("foreground", "cpu_per_100k", "server CPU s per 100k jobs", _fixed(2)),
    ] + [
        row
        for scenario in ("memory", "memory-no-unique")
        for row in (
            Row(scenario, "rss_idle_mib", "RSS idle, MiB", _fixed(1)),
            Row(scenario, "rss_half_mib", f"RSS {half} jobs queued, MiB", _fixed(1)),
            Row(scenario, "rss_full_mib", f"RSS {full} jobs queued, MiB", _fixed(1)),
            Row(scenario, "rss_drained_mib", "RSS after drain, MiB", _fixed(1)),
            Row(scenario, "bytes_per_job", "RSS growth per queued job, bytes", _rate),
            Row(scenario, "given_back_pct", "% of that growth given back", _fixed(0)),
        )
    ]


def _cell(result: dict[str, Any] | None, row: Row) -> tuple[str, float | None]:
    if result is None:
        return "-", None
    if "error" in result:
        return "error", None
    value = result["metrics"].get(row.key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a", None
    return row.fmt(value), float(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 2) -> str:
    widths = [max(len(str(line[n])) for line in [headers, *rows]) for n in range(len(headers))]
    out = []
    for number, line in enumerate([headers, *rows]):
        cells = [
            str(cell).rjust(widths[n]) if n >= right_from else str(cell).ljust(widths[n])
            for n, cell in enumerate(line)
        ]
        out.append("  ".join(cells).rstrip())
        if number == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def comparison_table(
    results: dict[str, dict[str, dict[str, Any]]],
    scenarios: Sequence[str],
    cfg: LoadConfig,
    extra_servers: Sequence[str] = (),
) -> str:
    """Each figure for gearmand and gearsql and their ratio, then for each of
    ``extra_servers`` its figure and its ratio to gearmand's."""
    rows = []
    for row in table_rows(cfg):
        if row.scenario not in scenarios:
            continue
        by_server = results.get(row.scenario, {})
        gearmand_text, gearmand_value = _cell(by_server.get("gearmand"), row)
        line = [row.scenario, row.label, gearmand_text]
        for kind in ("gearsql", *extra_servers):
            text, value = _cell(by_server.get(kind), row)
            ratio = "-"
            if gearmand_value and value is not None:
                ratio = f"{value / gearmand_value:.2f}"
            line += [text, ratio]
        rows.append(line)
    headers = ["scenario", "figure", "gearmand"]
    for kind in ("gearsql", *extra_servers):
        headers += [kind, f"{kind}/gearmand"]
    return format_table(headers, rows)


def _user_share(phase: dict[str, Any]) -> str:
    """The share of the server's CPU spent in its own code (the rest is the kernel's)."""
    total, user = phase.get("server_cpu"), phase.get("server_user_cpu")
    if not total or user is None:
        return "-"
    return f"{100 * user / total:.0f}%"


def cpu_table(
    results: dict[str, dict[str, dict[str, Any]]], scenarios: Sequence[str], servers: Sequence[str]
) -> str:
    rows = []
    for scenario in scenarios:
        for server in servers:
            result = results.get(scenario, {}).get(server)
            if not result or "error" in result:
                continue
            for phase_name, phase in result["phases"].items():
                wall = phase["wall"]
                server_cpu = phase["server_cpu"]
                others = (
                    None
                    if server_cpu is None
                    else max(0.0, phase["machine_cpu"] - server_cpu - phase["gen_cpu"])
                )
                rows.append(
                    [
                        scenario,
                        f"{server} {phase_name}",
                        f"{wall:.2f}",
                        f"{phase['gen_cpu']:.2f}",
                        f"{phase['gen_cpu'] / wall:.2f}",
                        f"{100 * phase['gen_cpu_busiest']:.0f}%",
                        str(phase["processes"]),
                        "-" if server_cpu is None else f"{server_cpu:.2f}",
                        _user_share(phase),
                        "-" if server_cpu is None else f"{server_cpu / wall:.2f}",
                        "-" if others is None else f"{others / wall:.2f}",
                    ]
                )
    return format_table(
        [
            "scenario",
            "server phase",
            "wall s",
            "gen CPU s",
            "gen cores",
            "busiest gen proc",
            "procs",
            "server CPU s",
            "server user",
            "server cores",
            "others cores",
        ],
        rows,
    )


def check_targets(results: dict[str, dict[str, dict[str, Any]]], cfg: LoadConfig) -> list[str]:
    """The project's performance targets, judged on this run's figures."""

    def metric(scenario: str, server: str, key: str) -> float | None:
        result = results.get(scenario, {}).get(server)
        if not result or "error" in result:
            return None
        value = result["metrics"].get(key)
        return None if value is None else float(value)

    def ratio(scenario: str, key: str) -> float | None:
        ours, theirs = metric(scenario, "gearsql", key), metric(scenario, "gearmand", key)
        return None if ours is None or not theirs else ours / theirs

    lines = []

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "NOT met")

    bg = ratio("submit-bg", "jobs_per_s")
    lines.append(
        f"background submit >= 50% of gearmand: "
        f"{verdict(None if bg is None else bg >= 0.5)}"
        + ("" if bg is None else f" ({100 * bg:.0f}%)")
    )
    bg_plain = ratio("submit-bg-no-unique", "jobs_per_s")
    lines.append(
        "background submit with empty uniques >= 0.6 x gearmand: "
        f"{verdict(None if bg_plain is None else bg_plain >= 0.6)}"
        + ("" if bg_plain is None else f" ({bg_plain:.2f}x)")
    )
    drain = ratio("drain", "jobs_per_s")
    lines.append(
        f"drain by {cfg.workers} workers >= gearmand: "
        f"{verdict(None if drain is None else drain >= 1.0)}"
        + ("" if drain is None else f" ({100 * drain:.0f}%)")
    )
    fg = ratio("foreground", "jobs_per_s")
    p99 = metric("foreground", "gearsql", "p99_ms")
    fg_ok = None if fg is None or p99 is None else (fg >= 1.0 and p99 < 5.0)
    lines.append(
        f"foreground >= 1.0 x gearmand with p99 < 5 ms (issue 17): {verdict(fg_ok)}"
        + ("" if fg is None or p99 is None else f" ({100 * fg:.0f}%, p99 {p99:.2f} ms)")
    )
    for scenario, uniques in (("memory", "36-byte"), ("memory-no-unique", "empty")):
        full = metric(scenario, "gearsql", "rss_full_mib")
        if full is None and scenario == "memory-no-unique":
            continue  # not run: the verdict is the one of memory
        per_job = metric(scenario, "gearsql", "bytes_per_job")
        given_back = metric(scenario, "gearsql", "given_back_pct")
        lines.append(
            f"{_jobs_label(cfg.jobs)} queued jobs ({uniques} uniques) at most"
            f" {MEMORY_TARGET_MIB} MiB RSS: "
            + verdict(None if full is None else full <= MEMORY_TARGET_MIB)
            + ("" if full is None else f" ({full:.1f} MiB, {per_job:.0f} bytes per job)")
            + ("" if cfg.jobs == 200_000 else " [target is for 200k jobs]")
        )
        lines.append(
            f"memory given back after drain ({uniques} uniques, >= 50% of the growth): "
            + verdict(None if given_back is None else given_back >= 50.0)
            + ("" if given_back is None else f" ({given_back:.0f}%)")
        )
    return lines


# ---------------------------------------------------------------------------------------------


#: The figure that picks the reported run of a repeated scenario, and whether higher is better.
PRIMARY = {
    "echo": ("echo_per_s", True),
    "submit-bg": ("jobs_per_s", True),
    "submit-bg-no-unique": ("jobs_per_s", True),
    "drain": ("jobs_per_s", True),
    "foreground": ("jobs_per_s", True),
    "memory": ("rss_full_mib", False),
    "memory-no-unique": ("rss_full_mib", False),
}


def measure(
    scenario: str, kind: str, extra: Sequence[str], server_cpu: int | None, cfg: LoadConfig
) -> dict[str, Any]:
    """Run one scenario on a fresh server of ``kind``; a failure comes back as ``{"error"}``."""
    started = time.monotonic()
    try:
        server = start_server(kind, extra, server_cpu)
    except ScenarioError as exc:
        print(f"  {scenario:<19} {kind:<9} error: {exc}", file=sys.stderr, flush=True)
        return {"error": str(exc)}
    try:
        result = loadgen.run_scenario(scenario, "127.0.0.1", server.port, server.pid, cfg)
        if server.proc.poll() is not None:
            raise ScenarioError(
                f"{kind} exited with {server.proc.returncode} during the run: "
                f"{server.stderr_tail()}"
            )
    except ScenarioError as exc:
        print(f"  {scenario:<19} {kind:<9} error: {exc}", file=sys.stderr, flush=True)
        return {"error": str(exc)}
    finally:
        server.stop()
    summary = ", ".join(
        f"{key} {value:,.2f}"
        for key, value in result["metrics"].items()
        if isinstance(value, float)
    )
    print(f"  {scenario:<19} {kind:<9} {time.monotonic() - started:5.1f} s  {summary}", flush=True)
    return result


def representative(scenario: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The best run by the scenario's primary figure, every run's figures kept alongside.

    As with ``timeit``, the best of several runs is the one least disturbed by whatever else
    the machine was doing: other load only ever slows a run down.
    """
    good = [run for run in runs if "error" not in run]
    if not good:
        return runs[0]
    key, higher_is_better = PRIMARY[scenario]
    best = max(good, key=lambda run: run["metrics"][key] * (1 if higher_is_better else -1))
    chosen = dict(best)
    if len(runs) > 1:
        chosen["runs"] = [run.get("metrics", run) for run in runs]
    return chosen


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
    }
    try:
        info["uvloop"] = metadata.version("uvloop")
    except metadata.PackageNotFoundError:
        info["uvloop"] = None
    try:
        info["gearmand"] = subprocess.run(
            [shutil.which("gearmand") or "/usr/sbin/gearmand", "--version"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except OSError:
        info["gearmand"] = None
    try:
        from gearsql import __version__

        info["gearsql"] = __version__
    except ImportError:
        info["gearsql"] = None
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


TUNING_HELP = {
    "echo_count": "ECHO round trips; 0 means 2 x --jobs",
    "fg_jobs": "foreground jobs; 0 means --jobs / 4",
    "echo_connections": "connections of the echo scenario",
    "echo_window": "ECHO_REQs in flight per connection",
    "submit_connections": "connections submitting background jobs",
    "submit_window": "SUBMIT_JOB_BGs awaiting JOB_CREATED per connection",
    "workers": "workers of drain, foreground and memory",
    "clients": "foreground clients, one job outstanding each",
    "procs": "load generator processes per phase (foreground: half for clients, half for workers)",
    "unique": "uniques of background jobs: uuid (36 bytes, as libgearman sends) or none",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark gearsql against C gearmand.",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated, from: " + ", ".join(SCENARIOS) + " (default: all)",
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated, from: "
        + ", ".join(SERVERS + EXTRA_SERVERS)
        + " (default: gearmand,gearsql; the python-floor ones are floor.py, some scenarios"
        " only)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help=f"jobs of submit-bg and drain, deepest queue of memory "
        f"(default {LoadConfig.jobs}, or {QUICK_JOBS} with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small counts and short timeouts: a smoke run, not a measurement",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each scenario N times per server, alternating, and report the best run",
    )
    parser.add_argument(
        "--pin", action="store_true", help="pin the server to CPU 0 and the load generator to CPU 1"
    )
    parser.add_argument(
        "--gearmand-args",
        default="",
        metavar="ARGS",
        help="extra gearmand options, e.g. '--hashtable-buckets 200003'",
    )
    parser.add_argument(
        "--gearsql-args", default="", metavar="ARGS", help="extra gearsql server options"
    )
    tuning = parser.add_argument_group("load generator")
    for field in dataclasses.fields(LoadConfig):
        if field.name in ("jobs", "gen_cpu", "timeout"):
            continue
        tuning.add_argument(
            "--" + field.name.replace("_", "-"),
            type=type(field.default),
            default=field.default,
            choices=loadgen.UNIQUE_CHOICES if field.name == "unique" else None,
            help=TUNING_HELP[field.name] + f" (default {field.default})",
        )
    tuning.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds allowed per phase (default 300, or 60 with --quick)",
    )
    args = parser.parse_args(argv)
    args.scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    args.servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    for name in args.scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    known = SERVERS + EXTRA_SERVERS
    for name in args.servers:
        if name not in known:
            parser.error(f"unknown server {name!r}; choose from {', '.join(known)}")
    for name in args.servers:
        served = FLOOR_SCENARIOS.get(name)
        unsupported = [scenario for scenario in args.scenarios if served and scenario not in served]
        if unsupported:
            parser.error(f"{name} runs only {', '.join(served)}, not {', '.join(unsupported)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    jobs = args.jobs or (QUICK_JOBS if args.quick else LoadConfig.jobs)
    timeout = args.timeout or (60.0 if args.quick else 300.0)
    tuning = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(LoadConfig)
        if field.name not in ("jobs", "gen_cpu", "timeout")
    }
    cfg = LoadConfig(jobs=jobs, gen_cpu=1 if args.pin else None, timeout=timeout, **tuning)
    server_cpu = 0 if args.pin else None
    extra = {
        "gearmand": shlex.split(args.gearmand_args),
        "gearsql": shlex.split(args.gearsql_args),
        "python-floor": [],
        "python-floor-parser": [],
    }

    meta = machine_info()
    print(
        f"gearsql vs gearmand: {', '.join(args.scenarios)}; {jobs} jobs; "
        f"{meta['cpus']} CPUs ({meta.get('cpu_model', '?')}); "
        f"load average {meta['loadavg_at_start'][0]:.2f}"
        + ("; server on CPU 0, load generator on CPU 1" if args.pin else ""),
        flush=True,
    )

    results: dict[str, dict[str, dict[str, Any]]] = {}
    failures = 0
    for scenario in args.scenarios:
        runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in args.servers}
        for _ in range(args.repeat):
            for kind in args.servers:  # alternate, so that both see the same background load
                result = measure(scenario, kind, extra[kind], server_cpu, cfg)
                failures += "error" in result
                runs[kind].append(result)
        for kind, kind_runs in runs.items():
            results.setdefault(scenario, {})[kind] = representative(scenario, kind_runs)

    meta["loadavg_at_end"] = os.getloadavg()
    print()
    extra_servers = [kind for kind in args.servers if kind in EXTRA_SERVERS]
    print(comparison_table(results, args.scenarios, cfg, extra_servers))
    print()
    print(
        "CPU per measured phase (cores = CPU seconds / wall seconds; this machine has "
        f"{meta['cpus']}):"
    )
    print(cpu_table(results, args.scenarios, args.servers))
    print(
        "gen = this load generator; server user = the share of the server's CPU in its own code"
        " (the rest is the\nkernel's: socket reads and writes); others = every other program on"
        " the machine. A phase with others above\n~0.3 cores shared the CPUs and its figures are"
        " biased low"
        + ("; --repeat keeps the best run." if args.repeat > 1 else "; --repeat N helps.")
    )
    if set(SERVERS) <= set(args.servers):
        print()
        print(
            "Targets:"
            + (" (--quick: too few jobs for these verdicts to mean anything)" if args.quick else "")
        )
        for line in check_targets(results, cfg):
            print("  " + line)
    print()
    print(f"load average at end {meta['loadavg_at_end'][0]:.2f}")

    if args.json:
        document = {
            "meta": meta,
            "args": {
                "scenarios": args.scenarios,
                "servers": args.servers,
                "pin": args.pin,
                "gearmand_args": args.gearmand_args,
                "gearsql_args": args.gearsql_args,
            },
            "config": dataclasses.asdict(cfg),
            "commands": {
                kind: shlex.join(server_command(kind, 0, extra[kind])) for kind in args.servers
            },
            "results": results,
        }
        with open(args.json, "w") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
