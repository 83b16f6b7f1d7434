"""Client-side benchmark: foreground jobs/s of Python Gearman clients against C gearmand.

One C gearmand (``-t 0``) on a free loopback port and one set of fast raw-protocol workers (the
``loadgen`` workers, which answer every job at once with a 4-byte WORK_COMPLETE) serve every
client in turn: gearsql's :class:`AsyncClient` and blocking :class:`Client`, PyPI's ``gear`` and
``gearman3``, and last a "python floor" row, the least any Python client does per job (raw
pre-built packets, no API): the most this machine gives a Python client. Every row submits the
same number of foreground jobs with a 100-byte payload and waits for their results. Each row
runs in its own forked child process, which connects and warms up first, then starts on a
barrier; the CPU time of the client, of gearmand and of the workers is read over the measured
window, so a reader can see which side was full. See bench/README.md.

    python bench/clients.py                   # 20k jobs per row
    python bench/clients.py --jobs 50000 --repeat 3 --json bench/results/clients.json
    python bench/clients.py --quick           # a smoke run with small counts (not a measurement)
"""

from __future__ import annotations

import argparse
import array
import asyncio
import gc
import json
import multiprocessing
import os
import platform
import re
import resource
import struct
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
from compare import RunningServer, format_table, start_server
from loadgen import (
    PAYLOAD_SIZE,
    ProcessSpec,
    ScenarioError,
    machine_busy_seconds,
    process_cpu_seconds,
)

FUNCTION = "bench_client"
PAYLOAD = b"x" * PAYLOAD_SIZE
QUICK_JOBS = 300
WARMUP_JOBS = 20
TARGET_RATIO = 2.0

#: Rows whose rate is the yardstick: the other Python clients.
OTHERS = ("gear", "gearman3")


# ---------------------------------------------------------------------------------------------
# The clients under test. Each runner does ``jobs`` foreground jobs after ``ready()`` returns and
# gives back one latency per job (seconds from submitting the job to its result in the caller's
# hands; in batch modes, where the API only hands back the whole batch, the batch's duration).


Ready = Callable[[], None]
Runner = Callable[[str, int, int, int, Ready], list[float]]


def _run_loop(coro: Coroutine[Any, Any, list[float]], loop_kind: str) -> list[float]:
    if loop_kind == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def gearsql_async(mode: str, loop_kind: str) -> Runner:
    def run(host: str, port: int, jobs: int, window: int, ready: Ready) -> list[float]:
        from gearsql import AsyncClient

        async def main() -> list[float]:
            latencies: list[float] = []
            clock = time.perf_counter
            async with AsyncClient(f"{host}:{port}") as client:
                for _ in range(WARMUP_JOBS):
                    await client.submit(FUNCTION, PAYLOAD, timeout=30)
                ready()
                if mode == "one":
                    for _ in range(jobs):
                        start = clock()
                        await client.submit(FUNCTION, PAYLOAD)
                        latencies.append(clock() - start)
                elif mode == "window":
                    # ``window`` lanes, each with one task outstanding: a sliding window.
                    counts = [
                        jobs // window + (1 if n < jobs % window else 0) for n in range(window)
                    ]

                    async def lane(count: int) -> None:
                        for _ in range(count):
                            start = clock()
                            await client.submit_task(FUNCTION, PAYLOAD)
                            latencies.append(clock() - start)

                    await asyncio.gather(*(lane(count) for count in counts if count))
                else:  # gather: batches of ``window`` tasks
                    left = jobs
                    while left:
                        size = min(window, left)
                        start = clock()
                        tasks = [client.submit_task(FUNCTION, PAYLOAD) for _ in range(size)]
                        await client.gather(tasks)
                        latencies.extend([clock() - start] * size)
                        left -= size
            return latencies

        return _run_loop(main(), loop_kind)

    return run


def gearsql_sync(mode: str) -> Runner:
    def run(host: str, port: int, jobs: int, window: int, ready: Ready) -> list[float]:
        from gearsql import Client

        latencies: list[float] = []
        clock = time.perf_counter
        with Client(f"{host}:{port}") as client:
            for _ in range(WARMUP_JOBS):
                client.submit(FUNCTION, PAYLOAD, timeout=30)
            ready()
            if mode == "one":
                for _ in range(jobs):
                    start = clock()
                    client.submit(FUNCTION, PAYLOAD)
                    latencies.append(clock() - start)
            else:  # batches of ``window`` submit_task, then gather
                left = jobs
                while left:
                    size = min(window, left)
                    start = clock()
                    tasks = [client.submit_task(FUNCTION, PAYLOAD) for _ in range(size)]
                    client.gather(tasks)
                    latencies.extend([clock() - start] * size)
                    left -= size
        return latencies

    return run


def gear_client(mode: str) -> Runner:
    """gear's Client: submitJob() returns at JOB_CREATED; the result arrives on its poll thread,
    so completion is signalled from its WORK_COMPLETE handler."""

    def run(host: str, port: int, jobs: int, window: int, ready: Ready) -> list[float]:
        import gear

        on_end: list[Callable[[Any], None]] = [lambda job: None]

        class SignallingClient(gear.Client):  # type: ignore[misc]
            def handleWorkComplete(self, packet: Any) -> Any:
                job = super().handleWorkComplete(packet)
                on_end[0](job)
                return job

            def handleWorkFail(self, packet: Any) -> Any:
                job = super().handleWorkFail(packet)
                on_end[0](job)
                return job

        client = SignallingClient("bench-client")
        latencies: list[float] = []
        clock = time.perf_counter
        try:
            client.addServer(host, port)
            client.waitForServer(30)
            if mode == "one":
                finished = threading.Event()
                on_end[0] = lambda job: finished.set()

                def one() -> None:
                    finished.clear()
                    job = gear.Job(FUNCTION, PAYLOAD)
                    client.submitJob(job, timeout=30)
                    if not finished.wait(30) or job.failure:
                        raise ScenarioError(f"gear job {job} did not complete")

                for _ in range(WARMUP_JOBS):
                    one()
                ready()
                for _ in range(jobs):
                    start = clock()
                    one()
                    latencies.append(clock() - start)
            else:
                # submitJob blocks until JOB_CREATED, so jobs are submitted one after the other,
                # but up to ``window`` of them run and wait for their results at once.
                slots = threading.Semaphore(window)
                all_done = threading.Event()
                started: dict[int, float] = {}
                target = [0]
                failures: list[Any] = []

                def ended(job: Any) -> None:
                    latencies.append(clock() - started.pop(id(job)))
                    if job.failure:
                        failures.append(job)
                    slots.release()
                    if len(latencies) >= target[0]:
                        all_done.set()

                on_end[0] = ended

                def batch(count: int) -> None:
                    all_done.clear()
                    target[0] = len(latencies) + count
                    held = []
                    for _ in range(count):
                        slots.acquire()
                        job = gear.Job(FUNCTION, PAYLOAD)
                        held.append(job)  # gear keeps jobs by handle only while they run
                        started[id(job)] = clock()
                        client.submitJob(job, timeout=30)
                    if not all_done.wait(60) or failures:
                        raise ScenarioError("gear jobs did not complete")

                batch(WARMUP_JOBS)
                latencies.clear()
                ready()
                batch(jobs)
        finally:
            client.shutdown()
        return latencies

    return run


class _ReceiveBuffer(array.array):  # type: ignore[type-arg]
    """gearman3's receive buffer with array.fromstring(), which Python 3.9 removed, put back
    (as tests/interop/test_python_clients.py does; slices stay _ReceiveBuffers because gearman3
    replaces its buffer with a slice of itself after every packet)."""

    def fromstring(self, data: bytes) -> None:
        self.frombytes(data)

    def __getitem__(self, index: Any) -> Any:
        item = super().__getitem__(index)
        return _ReceiveBuffer(self.typecode, item) if isinstance(index, slice) else item


def gearman3_client(mode: str) -> Runner:
    """gearman3's GearmanClient; function names go as bytes (docs/protocol.md §11)."""

    def run(host: str, port: int, jobs: int, window: int, ready: Ready) -> list[float]:
        import gearman
        import gearman.connection
        from gearman.constants import JOB_COMPLETE

        gearman.connection.array = SimpleNamespace(array=_ReceiveBuffer)
        name = FUNCTION.encode()
        client = gearman.GearmanClient([f"{host}:{port}"])
        latencies: list[float] = []
        clock = time.perf_counter

        def check(requests: Sequence[Any]) -> None:
            for request in requests:
                if request.state != JOB_COMPLETE:
                    raise ScenarioError(f"gearman3 job ended in state {request.state}")

        def one() -> None:
            check([client.submit_job(name, PAYLOAD, poll_timeout=30)])

        def batch(size: int) -> None:
            jobs_ = [{"task": name, "data": PAYLOAD} for _ in range(size)]
            check(client.submit_multiple_jobs(jobs_, poll_timeout=60))

        try:
            for _ in range(WARMUP_JOBS):
                one()
            ready()
            if mode == "one":
                for _ in range(jobs):
                    start = clock()
                    one()
                    latencies.append(clock() - start)
            else:
                left = jobs
                while left:
                    size = min(window, left)
                    start = clock()
                    batch(size)
                    latencies.extend([clock() - start] * size)
                    left -= size
        finally:
            client.shutdown()
        return latencies

    return run


def floor_client(loop_kind: str) -> Runner:
    """Not a client library: the least any Python client does for pipelined foreground jobs.
    Pre-built SUBMIT_JOB packets on one connection, ``window`` of them in flight, each reply
    read with one header unpack, a job's start time found by its handle; no API, no checks.
    Its rate is the most this machine gives a Python client of this gearmand and workers."""

    def run(host: str, port: int, jobs: int, window: int, ready: Ready) -> list[float]:
        header = struct.Struct(">4sII")
        packet = loadgen.pack_request(loadgen.P.SUBMIT_JOB, FUNCTION.encode(), b"", PAYLOAD)
        clock = time.perf_counter

        class Floor(asyncio.Protocol):
            def __init__(self) -> None:
                self.rest = b""
                self.starts: deque[float] = deque()  # of jobs not yet acknowledged, in order
                self.started: dict[bytes, float] = {}
                self.latencies: list[float] = []
                self.left = 0
                self.outstanding = 0
                self.done: asyncio.Future[None] | None = None
                self.transport: Any = None

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def run(self, count: int) -> asyncio.Future[None]:
                self.done = asyncio.get_running_loop().create_future()
                self.left = count
                first = min(window, count)
                self.send(first)
                return self.done

            def send(self, count: int) -> None:
                now = clock()
                self.starts.extend([now] * count)
                self.left -= count
                self.outstanding += count
                self.transport.write(packet * count)

            def data_received(self, data: bytes) -> None:
                buf = self.rest + data if self.rest else data
                pos, end, finished = 0, len(buf), 0
                while end - pos >= 12:
                    _magic, kind, size = header.unpack_from(buf, pos)
                    if end - pos - 12 < size:
                        break
                    body = buf[pos + 12 : pos + 12 + size]
                    pos += 12 + size
                    if kind == loadgen.P.JOB_CREATED:
                        self.started[body] = self.starts.popleft()
                    elif kind == loadgen.P.WORK_COMPLETE:
                        handle = body.split(b"\0", 1)[0]
                        self.latencies.append(clock() - self.started.pop(handle))
                        finished += 1
                    else:
                        raise ScenarioError(f"floor client got packet type {kind}")
                self.rest = buf[pos:]
                self.outstanding -= finished
                more = min(finished, self.left)
                if more:
                    self.send(more)
                if not self.outstanding and not self.left and self.done is not None:
                    self.done.set_result(None)

        async def main() -> list[float]:
            loop = asyncio.get_running_loop()
            transport, floor = await loop.create_connection(Floor, host, port)
            try:
                await asyncio.wait_for(floor.run(WARMUP_JOBS), 30)
                floor.latencies.clear()
                ready()
                await floor.run(jobs)
            finally:
                transport.close()
            return floor.latencies

        return _run_loop(main(), loop_kind)

    return run


@dataclass(frozen=True)
class ClientRow:
    client: str
    mode: str
    runner: Runner
    #: True for rows that count towards the target (gearsql's async client).
    async_gearsql: bool = False


def client_rows(window: int, loop_kind: str) -> list[ClientRow]:
    return [
        ClientRow(
            "gearsql AsyncClient",
            f"submit_task, window {window}",
            gearsql_async("window", loop_kind),
            True,
        ),
        ClientRow(
            "gearsql AsyncClient",
            f"submit_task x{window}, gather",
            gearsql_async("gather", loop_kind),
            True,
        ),
        ClientRow(
            "gearsql AsyncClient", "submit, one at a time", gearsql_async("one", loop_kind), True
        ),
        *(
            [
                ClientRow(
                    "gearsql AsyncClient",
                    f"submit_task, window {window}, asyncio loop",
                    gearsql_async("window", "asyncio"),
                    True,
                )
            ]
            if loop_kind != "asyncio"
            else []
        ),
        ClientRow("gearsql Client", f"submit_task x{window}, gather", gearsql_sync("gather")),
        ClientRow("gearsql Client", "submit, one at a time", gearsql_sync("one")),
        ClientRow("gear", f"submitJob, window {window}", gear_client("window")),
        ClientRow("gear", "submitJob, one at a time", gear_client("one")),
        ClientRow("gearman3", f"submit_multiple_jobs x{window}", gearman3_client("batch")),
        ClientRow("gearman3", "submit_job, one at a time", gearman3_client("one")),
        ClientRow("python floor", f"raw SUBMIT_JOB, window {window}", floor_client(loop_kind)),
    ]


# ---------------------------------------------------------------------------------------------
# Running one row in a child process


def _child(
    row: ClientRow,
    host: str,
    port: int,
    jobs: int,
    window: int,
    ready: Any,
    go: Any,
    results: Any,
    timeout: float,
) -> None:
    timing: dict[str, float] = {}

    def on_ready() -> None:
        gc.collect()
        ready.wait(timeout)
        go.wait(timeout)
        timing["start"] = time.perf_counter()
        timing["cpu"] = time.process_time()
        timing["sys"] = resource.getrusage(resource.RUSAGE_SELF).ru_stime

    try:
        latencies = row.runner(host, port, jobs, window, on_ready)
        wall = time.perf_counter() - timing["start"]
        cpu = time.process_time() - timing["cpu"]
        sys_cpu = resource.getrusage(resource.RUSAGE_SELF).ru_stime - timing["sys"]
        if len(latencies) != jobs:
            raise ScenarioError(f"{len(latencies)} results for {jobs} jobs")
        latencies.sort()
        results.put(
            {
                "wall": wall,
                "cpu": cpu,
                "sys": sys_cpu,
                "count": len(latencies),
                "p50_ms": loadgen._percentile(latencies, 0.50) * 1000,
                "p99_ms": loadgen._percentile(latencies, 0.99) * 1000,
            }
        )
    except BaseException:
        ready.abort()
        go.abort()
        results.put({"error": traceback.format_exc()})


def measure(
    row: ClientRow,
    server: RunningServer,
    worker_pids: Sequence[int],
    jobs: int,
    window: int,
    timeout: float,
) -> dict[str, Any]:
    """Run one row in a fresh child process; its figures, or ``{"error": ...}``."""
    ctx = multiprocessing.get_context("fork")
    ready, go = ctx.Barrier(2), ctx.Barrier(2)
    results = ctx.Queue()
    child = ctx.Process(
        target=_child,
        args=(row, "127.0.0.1", server.port, jobs, window, ready, go, results, timeout),
        daemon=True,
    )
    child.start()
    try:
        try:
            ready.wait(timeout)
            server_cpu = process_cpu_seconds(server.pid)
            worker_cpu = sum(process_cpu_seconds(pid) for pid in worker_pids)
            machine_cpu = machine_busy_seconds()
            start = time.perf_counter()
            go.wait(timeout)
        except Exception:
            pass  # the child aborted the barrier; its report says why
        report: dict[str, Any] = results.get(timeout=timeout)
        if "error" not in report:
            wall = time.perf_counter() - start
            report["server_cores"] = (process_cpu_seconds(server.pid) - server_cpu) / wall
            report["worker_cores"] = (
                sum(process_cpu_seconds(pid) for pid in worker_pids) - worker_cpu
            ) / wall
            report["client_cores"] = report["cpu"] / report["wall"]
            report["client_us_per_job"] = report["cpu"] / report["count"] * 1e6
            report["client_kernel_us_per_job"] = report["sys"] / report["count"] * 1e6
            busy = (machine_busy_seconds() - machine_cpu) / wall
            report["others_cores"] = max(
                0.0,
                busy - report["client_cores"] - report["server_cores"] - report["worker_cores"],
            )
            report["jobs_per_s"] = report["count"] / report["wall"]
        return report
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()


# ---------------------------------------------------------------------------------------------
# The workers: loadgen's raw-protocol workers, running for the whole benchmark


class Workers:
    """``count`` loadgen workers in ``procs`` child processes, serving FUNCTION until stopped."""

    def __init__(self, port: int, count: int, procs: int, timeout: float) -> None:
        ctx = multiprocessing.get_context("fork")
        procs = max(1, min(procs, count))
        self._ready = ctx.Barrier(procs + 1)
        self._go = ctx.Barrier(procs + 1)
        self._results = ctx.Queue()
        self._done = ctx.RawArray("q", procs)
        self._stop = ctx.RawValue("b", 0)
        specs = [
            ProcessSpec("worker", "127.0.0.1", port, conns, function=FUNCTION.encode(), index=n)
            for n, conns in enumerate(loadgen._split(count, procs))
        ]
        self.children = [
            ctx.Process(
                target=loadgen._child_main,
                args=(spec, self._ready, self._go, self._results, self._done, self._stop, 1e6),
                daemon=True,
            )
            for spec in specs
        ]
        for child in self.children:
            child.start()
        try:
            self._ready.wait(timeout)
            self._go.wait(timeout)
        except Exception:
            report = self._results.get(timeout=5)
            self.stop()
            raise ScenarioError(f"the workers did not start:\n{report.get('error')}") from None

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self.children if child.pid is not None]

    def stop(self) -> list[dict[str, Any]]:
        self._stop.value = 1
        reports = []
        for _ in self.children:
            try:
                reports.append(self._results.get(timeout=5))
            except Exception:
                break
        for child in self.children:
            child.join(5)
            if child.is_alive():
                child.kill()
                child.join()
        return reports


# ---------------------------------------------------------------------------------------------
# The table


def _best(
    results: dict[str, dict[str, Any]],
    rows: Sequence[ClientRow],
    which: Callable[[ClientRow], bool],
) -> tuple[ClientRow | None, float]:
    best: tuple[ClientRow | None, float] = (None, 0.0)
    for row in rows:
        figures = results.get(f"{row.client} | {row.mode}", {})
        rate = figures.get("jobs_per_s")
        if which(row) and rate and rate > best[1]:
            best = (row, rate)
    return best


def result_table(results: dict[str, dict[str, Any]], rows: Sequence[ClientRow]) -> str:
    _, yardstick = _best(results, rows, lambda row: row.client in OTHERS)
    lines = []
    for row in rows:
        figures = results.get(f"{row.client} | {row.mode}", {})
        if "error" in figures or not figures:
            lines.append([row.client, row.mode, "error", *["-"] * 9])
            continue
        rate = figures["jobs_per_s"]
        lines.append(
            [
                row.client,
                row.mode,
                f"{rate:,.0f}",
                f"{figures['p50_ms']:.2f}",
                f"{figures['p99_ms']:.2f}",
                f"{rate / yardstick:.2f}" if yardstick else "-",
                f"{figures['client_us_per_job']:.1f}",
                f"{figures['client_kernel_us_per_job']:.1f}",
                f"{figures['client_cores']:.2f}",
                f"{figures['server_cores']:.2f}",
                f"{figures['worker_cores']:.2f}",
                f"{figures['others_cores']:.2f}",
            ]
        )
    return format_table(
        [
            "client",
            "mode",
            "jobs/s",
            "p50 ms",
            "p99 ms",
            "x best other",
            "client CPU us/job",
            "of which kernel",
            "client cores",
            "gearmand cores",
            "worker cores",
            "others cores",
        ],
        lines,
    )


def verdict(results: dict[str, dict[str, Any]], rows: Sequence[ClientRow]) -> tuple[bool, str]:
    other, other_rate = _best(results, rows, lambda row: row.client in OTHERS)
    ours, our_rate = _best(results, rows, lambda row: row.async_gearsql)
    if other is None or ours is None:
        return False, "target not judged: a client row failed"
    ratio = our_rate / other_rate
    met = ratio >= TARGET_RATIO
    return met, (
        f"target (gearsql AsyncClient >= {TARGET_RATIO:g}x the best other Python client): "
        f"{'MET' if met else 'NOT MET'}: {ours.client} ({ours.mode}) {our_rate:,.0f} jobs/s "
        f"= {ratio:.2f}x {other.client} ({other.mode}) {other_rate:,.0f} jobs/s"
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, help="foreground jobs per row (default 20000)")
    parser.add_argument(
        "--window", type=int, default=64, help="jobs in flight in the concurrent modes (default 64)"
    )
    parser.add_argument("--workers", type=int, default=8, help="worker connections (default 8)")
    parser.add_argument(
        "--worker-procs", type=int, default=1, help="processes the workers run in (default 1)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every row N times, alternating, and keep each row's best",
    )
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default=None,
        help="event loop of the AsyncClient rows (default uvloop if installed)",
    )
    parser.add_argument(
        "--only", metavar="REGEX", help="run only the rows whose 'client mode' matches"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: {QUICK_JOBS} jobs per row (not a measurement)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write every run's figures here")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    jobs = args.jobs or (QUICK_JOBS if args.quick else 20_000)
    loop_kind = args.loop
    if loop_kind is None:
        try:
            import uvloop  # noqa: F401

            loop_kind = "uvloop"
        except ImportError:
            loop_kind = "asyncio"
    rows = client_rows(args.window, loop_kind)
    if args.only:
        rows = [r for r in rows if re.search(args.only, f"{r.client} {r.mode}")]

    server = start_server("gearmand", [], None)
    print(
        f"gearmand {server.port} (pid {server.pid}, -t 0); {args.workers} loadgen workers in "
        f"{args.worker_procs} process(es); {jobs} foreground jobs of {PAYLOAD_SIZE} bytes per "
        f"row; AsyncClient on {loop_kind}; Python {platform.python_version()}, gearsql "
        f"{_version('gearsql')}, gear {_version('gear')}, gearman3 {_version('gearman3')}",
        flush=True,
    )
    runs: dict[str, list[dict[str, Any]]] = {}
    failed = False
    try:
        workers = Workers(server.port, args.workers, args.worker_procs, 30)
        try:
            for _ in range(args.repeat):
                for row in rows:
                    key = f"{row.client} | {row.mode}"
                    report = measure(row, server, workers.pids, jobs, args.window, args.timeout)
                    runs.setdefault(key, []).append(report)
                    if "error" in report:
                        failed = True
                        print(f"{key}: {report['error']}", file=sys.stderr, flush=True)
        finally:
            workers.stop()
    finally:
        server.stop()

    best: dict[str, dict[str, Any]] = {}
    for key, reports in runs.items():
        good = [r for r in reports if "error" not in r]
        best[key] = max(good, key=lambda r: r["jobs_per_s"]) if good else reports[0]
    print()
    print(result_table(best, rows))
    print()
    met, text = verdict(best, rows)
    print(text)
    if args.json:
        payload = {
            "jobs": jobs,
            "window": args.window,
            "workers": args.workers,
            "worker_procs": args.worker_procs,
            "loop": loop_kind,
            "target_met": met,
            "verdict": text,
            "best": best,
            "runs": runs,
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(payload, handle, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
