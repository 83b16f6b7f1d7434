"""What the blocking :class:`gearsql.Client` costs per call on top of :class:`AsyncClient`.

One ``gearsql server --store memory`` on a free loopback port and one fast raw-protocol worker
(the ``loadgen`` worker: it answers every job at once with a 4-byte WORK_COMPLETE). Then, in this
process, ``N`` sequential foreground jobs through ``await AsyncClient.submit`` (on one event loop
of the kind the Client's private thread runs: uvloop when installed) and ``N`` through
``Client.submit``, each way ``--repeat`` times alternating; the best run of each gives µs per
call, and their difference is the overhead of the blocking facade (running its private event
loop for each call, or, in older trees, the handoff to and from the loop's own thread). See
bench/README.md.

    python bench/sync_overhead.py              # N=5000, best of 3
    python bench/sync_overhead.py --caller-thread   # the blocking calls from a non-main thread
    python bench/sync_overhead.py --jobs 500 --repeat 1   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clients import FUNCTION, PAYLOAD, WARMUP_JOBS, Workers
from compare import start_server

import gearsql._loopthread

try:
    from gearsql._loopthread import new_event_loop
except ImportError:  # a gearsql tree from before the Client ran uvloop: the stdlib loop
    from asyncio import new_event_loop


# Seconds of wall clock and of this process's CPU (all its threads) for a run.
Spent = tuple[float, float]


def clocks() -> Spent:
    return time.perf_counter(), time.process_time()


def since(start: Spent) -> Spent:
    wall, cpu = clocks()
    return wall - start[0], cpu - start[1]


def async_run(port: int, jobs: int) -> Spent:
    """Seconds for ``jobs`` sequential ``await AsyncClient.submit`` calls."""
    from gearsql import AsyncClient

    async def main() -> Spent:
        async with AsyncClient(f"127.0.0.1:{port}") as client:
            for _ in range(WARMUP_JOBS):
                await client.submit(FUNCTION, PAYLOAD, timeout=30)
            start = clocks()
            for _ in range(jobs):
                await client.submit(FUNCTION, PAYLOAD)
            return since(start)

    # The same kind of loop as the Client's private one (uvloop when installed).
    loop = new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


# The kind of loop the last Client ran (uvloop or asyncio).
CLIENT_LOOP = [""]


def sync_run(port: int, jobs: int) -> Spent:
    """Seconds for ``jobs`` sequential ``Client.submit`` calls."""
    from gearsql import Client

    with Client(f"127.0.0.1:{port}") as client:
        CLIENT_LOOP[0] = type(client._thread.loop).__module__.split(".")[0]
        for _ in range(WARMUP_JOBS):
            client.submit(FUNCTION, PAYLOAD, timeout=30)
        start = clocks()
        for _ in range(jobs):
            client.submit(FUNCTION, PAYLOAD)
        return since(start)


def handoff_run(jobs: int) -> Spent:
    """Seconds for ``jobs`` blocking calls of a coroutine that returns at once: what a blocking
    call adds alone, without the server's round trip."""
    from gearsql._loopthread import EventLoopThread

    async def nothing() -> None:
        return None

    thread = EventLoopThread("sync-overhead")
    try:
        start = clocks()
        for _ in range(jobs):
            thread.run(nothing())
        return since(start)
    finally:
        thread.close()


def in_a_thread(run: Callable[..., Spent], *args: Any) -> Spent:
    """``run(*args)`` on a new thread, for blocking calls made from outside the main thread."""
    outcome: list[Spent] = []
    thread = threading.Thread(target=lambda: outcome.append(run(*args)))
    thread.start()
    thread.join()
    return outcome[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", "-n", type=int, default=5000, help="calls per run (5000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each client (3)")
    parser.add_argument(
        "--stdlib-loop",
        action="store_true",
        help="both clients on the stdlib asyncio loop, as without the 'fast' extra (uvloop)",
    )
    parser.add_argument(
        "--caller-thread",
        action="store_true",
        help="make the blocking calls from a thread other than the main one",
    )
    args = parser.parse_args(argv)
    global new_event_loop
    if args.stdlib_loop:
        new_event_loop = asyncio.new_event_loop
        gearsql._loopthread.new_event_loop = asyncio.new_event_loop  # type: ignore[attr-defined,unused-ignore]

    server = start_server("gearsql", [], None)
    try:
        workers = Workers(server.port, 1, 1, 20.0)
        try:
            runs: dict[str, list[Spent]] = {"AsyncClient.submit": [], "Client.submit": []}
            for _ in range(args.repeat):
                for name, run in (("AsyncClient.submit", async_run), ("Client.submit", sync_run)):
                    if run is sync_run and args.caller_thread:
                        runs[name].append(in_a_thread(run, server.port, args.jobs))
                    else:
                        runs[name].append(run(server.port, args.jobs))
        finally:
            workers.stop()
    finally:
        server.stop()
    runs["handoff alone"] = [
        in_a_thread(handoff_run, args.jobs) if args.caller_thread else handoff_run(args.jobs)
        for _ in range(args.repeat)
    ]
    # µs per call of the fastest run (wall clock), and the least CPU of any run.
    best = {
        name: (
            min(w for w, _ in spent) / args.jobs * 1e6,
            min(c for _, c in spent) / args.jobs * 1e6,
        )
        for name, spent in runs.items()
    }
    load = os.getloadavg()[0]
    kind = type(new_event_loop()).__module__.split(".")[0]
    caller = "a non-main thread" if args.caller_thread else "the main thread"
    print(
        f"{args.jobs} sequential calls, best of {args.repeat}, AsyncClient on a {kind} loop, "
        f"Client on {CLIENT_LOOP[0]} called from {caller}, load average {load:.2f}"
    )
    print(f"{'':<20} {'wall µs/call':>13} {'CPU µs/call':>12}")
    for name in ("AsyncClient.submit", "Client.submit"):
        print(f"{name:<20} {best[name][0]:13.1f} {best[name][1]:12.1f}")
    wall = best["Client.submit"][0] - best["AsyncClient.submit"][0]
    cpu = best["Client.submit"][1] - best["AsyncClient.submit"][1]
    print(f"{'overhead':<20} {wall:13.1f} {cpu:12.1f}   on top of the async path")
    print(
        f"{'handoff alone':<20} {best['handoff alone'][0]:13.1f} {best['handoff alone'][1]:12.1f}"
        "   (a no-op coroutine, no server)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
