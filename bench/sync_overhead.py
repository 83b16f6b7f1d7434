"""What the blocking :class:`gearsql.Client` costs per call on top of :class:`AsyncClient`.

One ``gearsql server --store memory`` on a free loopback port and one fast raw-protocol worker
(the ``loadgen`` worker: it answers every job at once with a 4-byte WORK_COMPLETE). Then, in this
process, ``N`` sequential foreground jobs through ``await AsyncClient.submit`` (on one event loop
of the kind the Client's private thread runs: uvloop when installed) and ``N`` through
``Client.submit``, each way ``--repeat`` times alternating; the best run of each gives µs per
call, and their difference is the overhead of the blocking facade (its handoff to and from the
private event-loop thread). See bench/README.md.

    python bench/sync_overhead.py              # N=5000, best of 3
    python bench/sync_overhead.py --jobs 500 --repeat 1   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clients import FUNCTION, PAYLOAD, WARMUP_JOBS, Workers
from compare import start_server

import gearsql._loopthread

try:
    from gearsql._loopthread import new_event_loop
except ImportError:  # a gearsql tree from before the Client ran uvloop: the stdlib loop
    from asyncio import new_event_loop


def async_run(port: int, jobs: int) -> float:
    """Seconds for ``jobs`` sequential ``await AsyncClient.submit`` calls."""
    from gearsql import AsyncClient

    async def main() -> float:
        async with AsyncClient(f"127.0.0.1:{port}") as client:
            for _ in range(WARMUP_JOBS):
                await client.submit(FUNCTION, PAYLOAD, timeout=30)
            start = time.perf_counter()
            for _ in range(jobs):
                await client.submit(FUNCTION, PAYLOAD)
            return time.perf_counter() - start

    # The same kind of loop as the Client's private one (uvloop when installed).
    loop = new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def sync_run(port: int, jobs: int) -> float:
    """Seconds for ``jobs`` sequential ``Client.submit`` calls."""
    from gearsql import Client

    with Client(f"127.0.0.1:{port}") as client:
        for _ in range(WARMUP_JOBS):
            client.submit(FUNCTION, PAYLOAD, timeout=30)
        start = time.perf_counter()
        for _ in range(jobs):
            client.submit(FUNCTION, PAYLOAD)
        return time.perf_counter() - start


def handoff_run(jobs: int) -> float:
    """Seconds for ``jobs`` blocking calls of a coroutine that returns at once: the handoff to
    the private loop thread and back alone, without the server's round trip."""
    from gearsql._loopthread import EventLoopThread

    async def nothing() -> None:
        return None

    thread = EventLoopThread("sync-overhead")
    try:
        start = time.perf_counter()
        for _ in range(jobs):
            thread.run(nothing())
        return time.perf_counter() - start
    finally:
        thread.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", "-n", type=int, default=5000, help="calls per run (5000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each client (3)")
    parser.add_argument(
        "--stdlib-loop",
        action="store_true",
        help="both clients on the stdlib asyncio loop, as without the 'fast' extra (uvloop)",
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
            best = {"AsyncClient.submit": float("inf"), "Client.submit": float("inf")}
            for _ in range(args.repeat):
                for name, run in (("AsyncClient.submit", async_run), ("Client.submit", sync_run)):
                    best[name] = min(best[name], run(server.port, args.jobs) / args.jobs * 1e6)
        finally:
            workers.stop()
    finally:
        server.stop()
    handoff = min(handoff_run(args.jobs) for _ in range(args.repeat)) / args.jobs * 1e6
    load = os.getloadavg()[0]
    kind = type(new_event_loop()).__module__.split(".")[0]
    print(
        f"{args.jobs} sequential calls, best of {args.repeat}, {kind} loop, load average {load:.2f}"
    )
    for name, micros in best.items():
        print(f"{name:<20} {micros:8.1f} µs/call")
    overhead = best["Client.submit"] - best["AsyncClient.submit"]
    print(f"{'overhead':<20} {overhead:8.1f} µs/call on top of the async path")
    print(f"{'handoff alone':<20} {handoff:8.1f} µs/call (a no-op coroutine, no server)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
