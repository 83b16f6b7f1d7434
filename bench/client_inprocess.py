"""The AsyncClient's own code per job, without sockets: CPU time and (under callgrind) instructions.

``clients.py`` measures the client against a real gearmand, so its figures include the kernel
(every write to a loopback socket delivers it to the reader too), and how many replies each read
brings depends on how fast gearmand and the workers are at that moment. This script runs the
``clients.py`` window row (``--window`` coroutines, each awaiting ``submit_task`` in a loop) on
an AsyncClient whose connection has an in-memory transport: whatever the client writes is
answered with a JOB_CREATED and a WORK_COMPLETE per SUBMIT_JOB, delivered in one
``data_received`` in the next event-loop iteration. So every read brings the replies to
``--window`` jobs, and what is measured is the Python work of the client alone:

    python bench/client_inprocess.py --jobs 200000
    python bench/client_inprocess.py --jobs 200000 --window 4     # 4 jobs per read
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \\
        python bench/client_inprocess.py --jobs 20000 --repeat 1
    callgrind_annotate /tmp/cg.out | head -40

It prints CPU µs per job (``time.process_time``, best of ``--repeat`` runs, each with a new
client). Under callgrind, subtract a run with fewer ``--jobs`` and divide by the difference: the
imports and the setup are the same in both.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from gearsql import AsyncClient
from gearsql._clientlink import _Link
from gearsql.protocol import HEADER, PacketType, pack_response

FUNCTION = "bench_client"
PAYLOAD = b"x" * 100
#: Every request is this SUBMIT_JOB (empty unique), so a write's packets are counted by size.
SUBMIT_SIZE = HEADER + len(FUNCTION) + 2 + len(PAYLOAD)
#: Handles are reused in a ring far larger than any window: no two jobs in flight share one.
RING = 8192
P = PacketType


class AnsweringTransport:
    """What ``_Link`` uses of an asyncio transport: answers each SUBMIT_JOB written to it with
    JOB_CREATED and WORK_COMPLETE, all of one iteration's in one ``data_received`` in the next."""

    def __init__(self, link: _Link, loop: asyncio.AbstractEventLoop) -> None:
        self.link = link
        self.loop = loop
        self.jobs = 0
        self.pending: list[bytes] = []
        self.replies = [
            pack_response(P.JOB_CREATED, b"H:bench:%d" % n)
            + pack_response(P.WORK_COMPLETE, b"H:bench:%d" % n, b"done")
            for n in range(RING)
        ]
        self.replies += self.replies  # a slice that wraps around is a plain slice

    def write(self, data: bytes) -> None:
        count, rest = divmod(len(data), SUBMIT_SIZE)
        if rest:
            raise RuntimeError(f"the client wrote {len(data)} bytes, not whole SUBMIT_JOBs")
        start = self.jobs % RING
        self.jobs += count
        if not self.pending:
            self.loop.call_soon(self.deliver)
        self.pending.append(b"".join(self.replies[start : start + count]))

    def deliver(self) -> None:
        data = b"".join(self.pending)
        self.pending.clear()
        self.link.data_received(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def run(jobs: int, window: int) -> float:
    """CPU seconds of ``jobs`` jobs through ``window`` coroutines."""
    client = AsyncClient("127.0.0.1:1", exceptions=False)
    server = client._servers[0]
    link = _Link(server)
    transport = AnsweringTransport(link, asyncio.get_running_loop())
    link.connection_made(transport)  # type: ignore[arg-type]
    server.link = link
    counts = [jobs // window + (1 if n < jobs % window else 0) for n in range(window)]
    results: list[bytes] = []

    async def lane(count: int) -> None:
        for _ in range(count):
            results.append(await client.submit_task(FUNCTION, PAYLOAD))

    start = time.process_time()
    await asyncio.gather(*(lane(count) for count in counts if count))
    cpu = time.process_time() - start
    if len(results) != jobs or transport.jobs != jobs or set(results) != {b"done"}:
        raise RuntimeError(f"{len(results)} results of {transport.jobs} jobs for {jobs}")
    server.link = None
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--window", type=int, default=64, help="jobs in flight (per read)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    runner: Callable[[Coroutine[Any, Any, float]], float] = asyncio.run
    if args.loop == "uvloop":
        import uvloop

        runner = uvloop.run
    times = [runner(run(args.jobs, args.window)) for _ in range(args.repeat)]
    figures = ", ".join(f"{t / args.jobs * 1e6:.2f}" for t in times)
    print(
        f"window {args.window} on {args.loop}: {args.jobs} jobs, CPU µs per job best "
        f"{min(times) / args.jobs * 1e6:.2f} (all {figures})"
    )


if __name__ == "__main__":
    main()
