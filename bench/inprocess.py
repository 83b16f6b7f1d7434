"""The job server's own code per job, without sockets: CPU time and (under callgrind) instructions.

The figures of ``compare.py`` include the kernel (every write to a loopback socket delivers it to
the reader too) and whatever else the machine runs. This script feeds the server's connection
code (``gearsql._serverconn._Connection``, the parser, the core, ``JobServer.flush``) with the
bytes a scenario's peers would send, through in-memory transports that keep what the server
writes, so what it measures is the Python work of the server alone:

    python bench/inprocess.py submit-bg-no-unique --jobs 200000
    python bench/inprocess.py foreground --jobs 100000 --repeat 5
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \\
        python bench/inprocess.py submit-bg-no-unique --jobs 20000 --repeat 1
    callgrind_annotate /tmp/cg.out | head -40
    python bench/inprocess.py foreground --jobs 2000 --bytecodes   # where the bytecodes go

Scenarios (100-byte payloads, as in ``loadgen.py``):

- ``submit-bg-no-unique`` / ``submit-bg``: one client sends SUBMIT_JOB_BG in reads of 250
  packets (empty uniques / 36-byte uniques), the server answers each read with its JOB_CREATEDs.
- ``foreground``: 16 clients, each with one SUBMIT_JOB outstanding, and 4 workers that answer
  each JOB_ASSIGN_UNIQ with WORK_COMPLETE and GRAB_JOB_UNIQ in one read, as ``loadgen.py``'s
  workers do; the reads go to the server one at a time, in the order the peers would send them.
- ``drain``: ``--jobs`` background jobs are queued first (not timed), then one worker empties
  the queue as above.

It prints CPU µs per job (``time.process_time``, GC on as in ``gearsql server``, best of
``--repeat`` runs, each with a new server). Under callgrind, which counts the whole process,
subtract a run with fewer ``--jobs`` and divide by the difference in jobs.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import uuid
from collections import Counter, deque
from types import FrameType
from typing import Any

from gearsql._serverconfig import ServerConfig
from gearsql._serverconn import _Connection
from gearsql.protocol import Packet, PacketType, Parser, pack_request
from gearsql.server import JobServer
from gearsql.stores import open_store

P = PacketType
PAYLOAD = b"x" * 100
FUNCTION = b"bench"
SCENARIOS = ("submit-bg-no-unique", "submit-bg", "foreground", "drain")


class MemoryTransport:
    """What the server's connection uses of an asyncio transport; keeps what it is sent, and
    lists itself in ``written`` when it has something."""

    def __init__(self, port: int, written: list[Peer]):
        self.port = port
        self.out: list[bytes] = []
        self.written = written
        self.peer: Peer | None = None

    def write(self, data: bytes) -> None:
        if not self.out:
            self.written.append(self.peer)  # type: ignore[arg-type]
        self.out.append(data)

    def take(self) -> bytes:
        data = b"".join(self.out)
        self.out.clear()
        return data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", self.port) if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        raise AssertionError("the benchmark never fills the server's buffers")

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    abort = close


class Peer:
    """One client or worker: a server connection with its transport and a parser of replies."""

    def __init__(self, server: JobServer, port: int, written: list[Peer] | None = None):
        self.transport = MemoryTransport(port, [] if written is None else written)
        self.transport.peer = self
        self.conn = _Connection(server)
        self.conn.connection_made(self.transport)  # type: ignore[arg-type]
        self.parser = Parser()

    def feed(self, data: bytes) -> None:
        """Have the server read ``data`` from this peer; drop what it sends back."""
        self.conn.data_received(data)
        self.transport.out.clear()
        self.transport.written.clear()

    def send(self, data: bytes) -> list[Packet]:
        """Have the server read ``data`` from this peer; what this peer was sent, parsed."""
        self.conn.data_received(data)
        self.transport.written.clear()
        return self.receive()

    def receive(self) -> list[Packet]:
        replies = self.parser.feed(self.transport.take())
        for reply in replies:
            if type(reply) is not Packet or reply.type is P.ERROR:
                raise RuntimeError(f"the server answered {reply!r}")
        return replies  # type: ignore[return-value]


def new_server() -> JobServer:
    return JobServer(ServerConfig(store="memory"), open_store("memory"))


def submit_packets(jobs: int, unique: bool) -> list[bytes]:
    """The SUBMIT_JOB_BG reads of one client, 250 packets each."""
    packets = [
        pack_request(
            P.SUBMIT_JOB_BG, FUNCTION, str(uuid.uuid4()).encode() if unique else b"", PAYLOAD
        )
        for _ in range(jobs)
    ]
    return [b"".join(packets[i : i + 250]) for i in range(0, jobs, 250)]


def run_submit(jobs: int, unique: bool) -> float:
    server = new_server()
    client = Peer(server, 40000)
    reads = submit_packets(jobs, unique)
    start = time.process_time()
    for data in reads:
        client.feed(data)
    elapsed = time.process_time() - start
    check_live_jobs(server, jobs)
    return elapsed


def check_live_jobs(server: JobServer, expected: int) -> None:
    """The run did what it says: ``expected`` jobs are live in the core (queued or running)."""
    fn = server.core.functions.get(FUNCTION)
    live = fn.total if fn is not None else 0
    if live != expected:
        raise RuntimeError(f"{live} jobs are live in the server, {expected} expected")


def run_foreground(jobs: int, clients: int = 16, workers: int = 4) -> float:
    server = new_server()
    grab = pack_request(P.GRAB_JOB_UNIQ)
    submit = pack_request(P.SUBMIT_JOB, FUNCTION, b"", PAYLOAD)
    written: list[Peer] = []
    peers = [Peer(server, 41000 + i, written) for i in range(clients)]
    crew = [Peer(server, 42000 + i, written) for i in range(workers)]
    # Every worker registers and asks for a job (NO_JOB: the queue is empty), then sleeps.
    for worker in crew:
        worker.send(pack_request(P.CAN_DO, FUNCTION) + grab)
        worker.send(pack_request(P.PRE_SLEEP))
    # What the peers send next, in order: (peer, bytes). A client submits again when it has
    # its WORK_COMPLETE; a worker that was woken grabs, one with a job completes it and grabs.
    pending: deque[tuple[Peer, bytes]] = deque((client, submit) for client in peers)
    done = 0
    submitted = len(peers)
    start = time.process_time()
    while pending and done < jobs:
        sender, data = pending.popleft()
        sender.conn.data_received(data)
        replies = [(peer, reply) for peer in written for reply in peer.receive()]
        written.clear()
        for peer, reply in replies:
            kind = reply.type
            if kind is P.JOB_ASSIGN_UNIQ:
                complete = pack_request(P.WORK_COMPLETE, reply.args[0], b"done")
                pending.append((peer, complete + grab))
            elif kind is P.NOOP:
                pending.append((peer, grab))
            elif kind is P.NO_JOB:
                pending.append((peer, pack_request(P.PRE_SLEEP)))
            elif kind is P.WORK_COMPLETE:
                done += 1
                if submitted < jobs:
                    submitted += 1
                    pending.append((peer, submit))
    elapsed = time.process_time() - start
    if done != jobs:
        raise RuntimeError(f"{done} of {jobs} jobs completed")
    check_live_jobs(server, 0)
    return elapsed


def run_drain(jobs: int) -> float:
    server = new_server()
    client = Peer(server, 43000)
    for data in submit_packets(jobs, unique=False):
        client.feed(data)
    check_live_jobs(server, jobs)
    worker = Peer(server, 44000)
    grab = pack_request(P.GRAB_JOB_UNIQ)
    replies = worker.send(pack_request(P.CAN_DO, FUNCTION) + grab)
    start = time.process_time()
    for _ in range(jobs):
        (reply,) = replies
        if reply.type is not P.JOB_ASSIGN_UNIQ:
            raise RuntimeError(f"expected a job, got {reply!r}")
        replies = worker.send(pack_request(P.WORK_COMPLETE, reply.args[0], b"done") + grab)
    elapsed = time.process_time() - start
    check_live_jobs(server, 0)
    return elapsed


def run(scenario: str, jobs: int) -> float:
    if scenario == "foreground":
        return run_foreground(jobs)
    if scenario == "drain":
        return run_drain(jobs)
    return run_submit(jobs, unique=scenario == "submit-bg")


def count_bytecodes(scenario: str, jobs: int, top: int = 12) -> None:
    """Run ``scenario`` once under a tracer and print the bytecodes the server's code executed
    per job (under ``_Connection.data_received``, but not this script's transports), by
    function."""
    counts: Counter[tuple[str, str]] = Counter()
    depth = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal depth
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        code = frame.f_code
        entry = code is _Connection.data_received.__code__
        if event == "call" and entry:
            depth += 1
        elif event == "opcode" and depth and code.co_filename != __file__:
            counts[(code.co_filename.rsplit("/", 1)[-1], code.co_qualname)] += 1
        elif event == "return" and entry:
            depth -= 1
        return tracer

    gc.disable()  # the collector's work is not bytecodes
    sys.settrace(tracer)
    try:
        run(scenario, jobs)
    finally:
        sys.settrace(None)
        gc.enable()
    print(f"{scenario}: {sum(counts.values()) / jobs:.0f} bytecodes of the server's per job")
    for (filename, name), count in counts.most_common(top):
        print(f"{count / jobs:8.1f}  {filename} {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--bytecodes",
        action="store_true",
        help="count the bytecodes the server executes per job, by function (slow: use a few"
        " thousand jobs)",
    )
    args = parser.parse_args()
    # As `gearsql server` sets it (gearsql.server.run_server).
    gc.set_threshold(10_000, 100, gc.get_threshold()[2])
    if args.bytecodes:
        count_bytecodes(args.scenario, args.jobs)
        return
    runs = []
    for _ in range(args.repeat):
        runs.append(run(args.scenario, args.jobs))
        gc.collect()
    per_job = [1e6 * seconds / args.jobs for seconds in runs]
    print(
        f"{args.scenario}: {args.jobs} jobs, CPU µs per job best {min(per_job):.2f},"
        f" all {', '.join(f'{value:.2f}' for value in per_job)}"
    )


if __name__ == "__main__":
    main()
