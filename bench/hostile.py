"""What hostile or careless clients cost ``gearsql server`` and C ``gearmand``, side by side.

Each scenario starts a fresh server of each kind on a free loopback port (gearsql with the memory
store; gearmand as ``bench/compare.py`` runs it: ``-t 0 -l /dev/null``), measures its RSS before,
at the peak of the scenario and after it, says how the server answered, and ends with the
server's state afterwards (``crashed``, or whether a new connection's ECHO is answered):

- ``partial``: connections each sending most of a declared 64 MiB packet (``--max-buffer``);
- ``slowloris``: connections sending one byte of a packet every second (``--packet-timeout``);
- ``functions``: distinct function names registered with CAN_DO by one worker that then leaves;
- ``abandoned``: foreground jobs whose clients leave before any worker comes;
- ``idle``: idle connections held open: RSS per connection, how many were refused or closed,
  and connect + ECHO on one more;
- ``burst``: 300 connections made while the server is stopped (SIGSTOP) for 0.3 s, a busy
  moment: how long one more takes to connect (its listen backlog, or TCP's SYN retry at 1 s);
- ``oversize``: one packet over ``--max-packet-size``, sent whole: does the client read the ERROR?
- ``unread``: a client sending ECHO_REQ without ever reading the answers;
- ``fuzz``: ``bench/fuzz.py``'s cases from concurrent fuzzers, with a well-behaved client's round
  trips (on a kept connection, and connect + ECHO); a server that dies is counted as a crash and
  started again, and the run goes on from the next case.

    python bench/hostile.py                      # every scenario, both servers, issue 14's sizes
    python bench/hostile.py --quick              # small sizes (a smoke run, not a measurement)
    python bench/hostile.py --scenarios partial,functions --servers gearsql
    python bench/hostile.py --quick --idle 50 --slow-timeout 1 --fuzz-seconds 3 --settle-seconds 3

``tests/test_hostile.py`` checks gearsql's bounds at small sizes in the suite;
``tests/test_bench_hostile_smoke.py`` runs this script at its smallest sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import fuzz
from fuzz import rss_kib, started_server

from gearsql.protocol import REQ, RES, Packet, PacketType, Parser, pack_request

MiB = 1024 * 1024
Row = tuple[str, str, str]


def settled(pid: int, seconds: float = 5.0) -> int:
    """RSS once two readings 0.2 s apart differ by less than 256 KiB (or after ``seconds``)."""
    deadline = time.monotonic() + seconds
    last = rss_kib(pid)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = rss_kib(pid)
        if abs(now - last) < 256:
            return now
        last = now
    return last


def admin_count(address: tuple[str, int], command: bytes) -> int:
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(command + b"\n")
        reply = b""
        while not (reply == b".\n" or reply.endswith(b"\n.\n")):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            reply += chunk
    return len(reply.splitlines()) - 1


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def partial(address: tuple[str, int], pid: int, quick: bool) -> list[Row]:
    count, sent_each = (4, 6 * MiB) if quick else (10, 60 * MiB)
    before = settled(pid)
    socks: list[socket.socket] = []
    with contextlib.ExitStack() as stack:
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection(address, timeout=10))
            sock.setblocking(False)
            socks.append(sock)
        prefix = struct.pack(">4sII", REQ, PacketType.SUBMIT_JOB_BG, 64 * MiB) + b"f\0\0"
        filler = b"x" * MiB
        offsets = {sock: 0 for sock in socks}
        pending = set(socks)
        stalled = 0
        while pending and stalled < 100:
            moved = False
            for sock in list(pending):
                offset = offsets[sock]
                data = prefix[offset:] + filler if offset < len(prefix) else filler
                try:
                    sent = sock.send(data[: sent_each - offset])
                except BlockingIOError:
                    continue
                moved = True
                offsets[sock] = offset + sent
                if offsets[sock] >= sent_each:
                    pending.discard(sock)
            stalled = 0 if moved else stalled + 1
            if not moved:
                time.sleep(0.02)
        peak = settled(pid)
        pushed_back = len(pending)
    return [
        (
            "partial",
            f"{count} x {sent_each // MiB} MiB of 64 MiB packets: RSS MiB before/peak",
            f"{mib(before)} / {mib(peak)}",
        ),
        ("partial", "connections pushed back (not read)", str(pushed_back)),
    ]


def slowloris(address: tuple[str, int], pid: int, quick: bool) -> list[Row]:
    count = 50 if quick else 500
    packet = pack_request(PacketType.ECHO_REQ, b"s" * 100)
    with contextlib.ExitStack() as stack:
        socks = [
            stack.enter_context(socket.create_connection(address, timeout=10)) for _ in range(count)
        ]
        started = time.monotonic()
        open_ = set(socks)
        sent = 0
        # One byte a second each, for up to 3 timeouts' worth.
        while open_ and time.monotonic() - started < 3 * SLOW_TIMEOUT + 5:
            for sock in list(open_):
                try:
                    sock.send(packet[sent : sent + 1])
                except OSError:
                    open_.discard(sock)
            sent += 1
            time.sleep(1.0)
        took = time.monotonic() - started
    return [
        (
            "slowloris",
            f"{count} conns, a byte/s, --packet-timeout {SLOW_TIMEOUT:g}: still open",
            str(len(open_)),
        ),
        ("slowloris", "seconds until all were closed", f"{took:.0f}"),
    ]


def functions(address: tuple[str, int], pid: int, quick: bool) -> list[Row]:
    count = 10_000 if quick else 100_000
    before = settled(pid)
    with socket.create_connection(address, timeout=60) as worker:
        worker.sendall(
            b"".join(pack_request(PacketType.CAN_DO, b"fn-%d" % n) for n in range(count))
        )
        worker.sendall(pack_request(PacketType.ECHO_REQ, b"done"))
        parser, events = Parser(expect_magic=RES), []
        while not events:
            events = parser.feed(worker.recv(1 << 16))
        registered = settled(pid)
        listed = admin_count(address, b"status")
    deadline = time.monotonic() + SETTLE_SECONDS
    while admin_count(address, b"status") and time.monotonic() < deadline:
        time.sleep(0.1)
    after = settled(pid)
    return [
        (
            "functions",
            f"{count} CAN_DO names: RSS MiB before/registered/after the worker left",
            f"{mib(before)} / {mib(registered)} / {mib(after)}",
        ),
        ("functions", "KiB per registered name", f"{(registered - before) / count:.2f}"),
        (
            "functions",
            "functions listed while registered / after",
            f"{listed} / {admin_count(address, b'status')}",
        ),
    ]


def abandoned(address: tuple[str, int], pid: int, quick: bool) -> list[Row]:
    count = 5_000 if quick else 50_000
    before = settled(pid)
    per_client = 1000
    for _ in range(count // per_client):
        with socket.create_connection(address, timeout=60) as client:
            client.sendall(
                b"".join(
                    pack_request(PacketType.SUBMIT_JOB, b"nobody", b"", b"p" * 100)
                    for _ in range(per_client)
                )
            )
            parser, got = Parser(expect_magic=RES), 0
            while got < per_client:
                got += len(parser.feed(client.recv(1 << 16)))
    deadline = time.monotonic() + SETTLE_SECONDS
    while admin_count(address, b"show jobs") and time.monotonic() < deadline:
        time.sleep(0.1)
    after = settled(pid)
    return [
        (
            "abandoned",
            f"{count} foreground jobs, clients gone: RSS MiB before/after",
            f"{mib(before)} / {mib(after)}",
        ),
        (
            "abandoned",
            "jobs listed by show jobs afterwards",
            str(admin_count(address, b"show jobs")),
        ),
    ]


def oversize(address: tuple[str, int], pid: int, quick: bool) -> list[Row]:
    size = 70 * 1000 * 1000
    body = b"big\0\0" + b"x" * (size - 5)
    outcome = "no reply"
    with socket.create_connection(address, timeout=30) as sock:
        try:
            sock.sendall(struct.pack(">4sII", REQ, PacketType.SUBMIT_JOB, size) + body)
            received, left_open = b"", False
            sock.settimeout(10)
            try:
                while chunk := sock.recv(1 << 16):
                    received += chunk
            except TimeoutError:
                left_open = True
            events = Parser(expect_magic=RES).feed(received)
            if events and isinstance(events[0], Packet):
                packet = events[0]
                outcome = (
                    packet.type.name
                    + " "
                    + " ".join(arg.decode(errors="replace") for arg in packet.args)
                )
            if left_open:
                outcome += ", connection left open"
        except ConnectionResetError:
            outcome = "connection reset"
    return [("oversize", "client sending a 70 MB job reads", outcome)]


def unread(address: tuple[str, int], pid: int, quick: bool) -> list[Row]:
    limit = (64 if quick else 512) * MiB
    before = settled(pid)
    echo = pack_request(PacketType.ECHO_REQ, b"e" * MiB)
    with socket.create_connection(address, timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        sent, stalled = 0, 0
        while sent < limit and stalled < 100:
            try:
                sent += sock.send(echo[sent % len(echo) :])
                stalled = 0
            except BlockingIOError:
                stalled += 1
                time.sleep(0.02)
        peak = settled(pid)
    return [
        (
            "unread",
            f"client never reading: MiB of ECHO_REQ it got in (of {limit // MiB}); "
            "RSS MiB before/peak",
            f"{sent // MiB}; {mib(before)} / {mib(peak)}",
        )
    ]


def idle(address: tuple[str, int], pid: int, quick: bool) -> list[Row]:
    count = IDLE_CONNECTIONS or (1_000 if quick else 10_000)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 100 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count + 100, hard))
    before = settled(pid)
    with contextlib.ExitStack() as stack:
        socks: list[socket.socket] = []
        refused = 0
        for _ in range(count):
            try:
                socks.append(stack.enter_context(socket.create_connection(address, timeout=10)))
            except OSError:
                refused += 1
        # Connections are accepted in order: once one more is answered, all these were accepted.
        took = fuzz.fresh_round_trip(address, timeout=30)
        held = settled(pid)
        closed = 0
        poller = select.poll()  # select() takes no descriptor above 1023
        for sock in socks:
            poller.register(sock, select.POLLIN)
        by_fd = {sock.fileno(): sock for sock in socks}
        for fd, _ in poller.poll(500):
            try:
                if not by_fd[fd].recv(1):
                    closed += 1
            except OSError:
                closed += 1
    return [
        (
            "idle",
            f"{count} idle connections: RSS MiB before/with them",
            f"{mib(before)} / {mib(held)}",
        ),
        ("idle", "KiB per idle connection", f"{(held - before) / count:.1f}"),
        ("idle", "connections refused / closed by the server", f"{refused} / {closed}"),
        ("idle", "ms for connect + ECHO on one more connection", f"{took * 1000:.1f}"),
    ]


def burst(address: tuple[str, int], pid: int, quick: bool) -> list[Row]:
    """Connections arriving while the server is busy (stopped with SIGSTOP for a moment): past
    the listen backlog the kernel drops them, and a client waits for TCP's SYN retry (1 s)."""
    count = 300
    times: list[float] = []

    def connect() -> None:
        started = time.perf_counter()
        socket.create_connection(address, timeout=10).close()
        times.append(time.perf_counter() - started)

    for _ in range(3):
        os.kill(pid, signal.SIGSTOP)
        try:
            socks = []
            for _ in range(count):
                sock = socket.socket()
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sock.connect(address)
                socks.append(sock)
            time.sleep(0.2)
            thread = threading.Thread(target=connect)
            thread.start()
            time.sleep(0.1)
        finally:
            os.kill(pid, signal.SIGCONT)
        thread.join()
        for sock in socks:
            sock.close()
        time.sleep(0.5)
    return [
        (
            "burst",
            f"ms to connect behind {count} connections made in a 0.3 s stall (3 tries)",
            " / ".join(f"{t * 1000:.0f}" for t in times),
        )
    ]


class Target:
    """A server of one kind, (re)started on a free loopback port."""

    def __init__(self, kind: str, extra: list[str], tmp: Path):
        self.kind, self.extra, self.tmp = kind, extra, tmp
        self.starts = 0
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        self.pid = 0
        self.log_path: Path | None = None
        self._stack = contextlib.ExitStack()

    def start(self) -> None:
        self.starts += 1
        if self.kind == "gearsql":
            self.log_path = self.tmp / f"gearsql-{self.starts}.log"
            server = started_server(self.log_path, self.extra)
        else:
            server = started_gearmand()
        self.address, self.pid = self._stack.enter_context(server)

    def close(self) -> None:
        self._stack.close()


@contextlib.contextmanager
def started_gearmand() -> Iterator[tuple[tuple[str, int], int]]:
    """C gearmand as ``bench/compare.py`` runs it (one I/O thread, no log) on a free port."""
    port = fuzz.free_port()
    gearmand = shutil.which("gearmand") or "/usr/sbin/gearmand"
    command = [gearmand, "-p", str(port), "-L", "127.0.0.1", "-t", "0", "-l", "/dev/null"]
    with fuzz.listening(command, port, "gearmand") as pid:
        yield ("127.0.0.1", port), pid


def fuzzing(target: Target, quick: bool) -> list[Row]:
    """``bench/fuzz.py``'s cases from concurrent fuzzers, with the well-behaved client's round
    trips; a server that dies is counted and started again, and the run goes on."""
    seconds = FUZZ_SECONDS or (10.0 if quick else 60.0)
    started = time.monotonic()
    reports: list[fuzz.Report] = []
    rss_peak, next_case = 0, 0
    while (left := seconds - (time.monotonic() - started)) > 0.5:
        report = fuzz.run(
            target.address,
            target.pid,
            FUZZ_SEED,
            duration=left,
            log_path=target.log_path,
            concurrency=FUZZ_CONCURRENCY,
            start=next_case,
        )
        reports.append(report)
        rss_peak, next_case = max(rss_peak, report.rss_peak), report.next_case
        if not report.server_died:
            break
        target.close()
        target.start()
    crashes = sum(r.server_died for r in reports)
    # Connect failures while a crashed server was down are the crash's, not anomalies of their
    # own; what is left: cases not closed in time, failed round trips, log lines.
    anomalies = sum(
        len(r.not_closed) + r.log_anomalies + (0 if r.server_died else len(r.probe_failures))
        for r in reports
    )
    trips = [t for r in reports for t in r.round_trips]
    fresh = [t for r in reports for t in r.fresh_trips]

    def ms(values: list[float], p: float) -> str:
        value = fuzz.percentile(values, p)
        return "n/a" if value is None else f"{value * 1000:.1f}"

    return [
        (
            "fuzz",
            f"{seconds:g} s, {FUZZ_CONCURRENCY} fuzzers at once, seed {FUZZ_SEED}: cases",
            str(sum(r.cases for r in reports)),
        ),
        ("fuzz", "crashes (the server was started again)", str(crashes)),
        ("fuzz", "other anomalies (not closed in 5 s, probe failures, log)", str(anomalies)),
        (
            "fuzz",
            "round trip ms, connection kept open: p50 / p99 / max (count)",
            f"{ms(trips, 0.5)} / {ms(trips, 0.99)} / {ms(trips, 1.0)} ({len(trips)})",
        ),
        (
            "fuzz",
            "round trip ms, connect + ECHO: p50 / p99 / max (count)",
            f"{ms(fresh, 0.5)} / {ms(fresh, 0.99)} / {ms(fresh, 1.0)} ({len(fresh)})",
        ),
        ("fuzz", "RSS MiB peak", mib(rss_peak)),
    ]


def outcome(target: Target) -> str:
    """After a scenario: crashed, or whether the server still answers a new connection."""
    if not fuzz.alive(target.pid):
        return "crashed"
    try:
        return f"answers ({fuzz.fresh_round_trip(target.address, timeout=10) * 1000:.1f} ms)"
    except (OSError, AssertionError) as exc:
        return f"no answer ({type(exc).__name__})"


SLOW_TIMEOUT = 5.0
IDLE_CONNECTIONS = 0
#: How long `functions` and `abandoned` wait for the server to forget what was left (C gearmand
#: never does, so it always waits this long).
SETTLE_SECONDS = 30.0
FUZZ_SECONDS = 0.0
FUZZ_CONCURRENCY = 8
FUZZ_SEED = 47
Scenario = Callable[[tuple[str, int], int, bool], list[Row]]
SCENARIOS: dict[str, tuple[Scenario | None, list[str]]] = {
    "partial": (partial, []),
    "slowloris": (slowloris, ["--packet-timeout", str(SLOW_TIMEOUT)]),
    "functions": (functions, ["--max-functions", "200000"]),
    "abandoned": (abandoned, []),
    "idle": (idle, ["--max-connections", "0"]),
    "burst": (burst, []),
    "oversize": (oversize, []),
    "unread": (unread, []),
    "fuzz": (None, []),
}
SERVERS = ("gearsql", "gearmand")


def main(argv: list[str] | None = None) -> int:
    global SLOW_TIMEOUT, IDLE_CONNECTIONS, FUZZ_SECONDS, FUZZ_CONCURRENCY, FUZZ_SEED, SETTLE_SECONDS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated, from: " + ", ".join(SCENARIOS),
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated, from: gearsql, gearmand (C gearmand as bench/compare.py runs it)",
    )
    parser.add_argument(
        "--slow-timeout",
        type=float,
        default=SLOW_TIMEOUT,
        help="gearsql's --packet-timeout in the slowloris scenario, which lasts 3 times it + 5 s",
    )
    parser.add_argument(
        "--idle", type=int, default=0, help="idle connections (default 10000, 1000 with --quick)"
    )
    parser.add_argument(
        "--fuzz-seconds", type=float, default=0.0, help="default 60, 10 with --quick"
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=SETTLE_SECONDS,
        help="how long functions and abandoned wait for the server to forget what was left",
    )
    parser.add_argument("--fuzz-concurrency", type=int, default=FUZZ_CONCURRENCY)
    parser.add_argument("--fuzz-seed", type=int, default=FUZZ_SEED)
    args = parser.parse_args(argv)
    SLOW_TIMEOUT, IDLE_CONNECTIONS = args.slow_timeout, args.idle
    SETTLE_SECONDS = args.settle_seconds
    FUZZ_SECONDS, FUZZ_CONCURRENCY, FUZZ_SEED = (
        args.fuzz_seconds,
        args.fuzz_concurrency,
        args.fuzz_seed,
    )
    servers = args.servers.split(",")
    for server in servers:
        if server not in SERVERS:
            parser.error(f"unknown server {server!r}")
    figures: dict[tuple[str, str], dict[str, str]] = {}
    failed = 0
    for name in args.scenarios.split(","):
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}")
        scenario, extra = SCENARIOS[name]
        if name == "slowloris":
            extra = ["--packet-timeout", f"{SLOW_TIMEOUT:g}"]
        for server in servers:
            with tempfile.TemporaryDirectory() as tmp:
                target = Target(server, extra, Path(tmp))
                try:
                    target.start()
                    if scenario is None:
                        rows = fuzzing(target, args.quick)
                    else:
                        rows = scenario(target.address, target.pid, args.quick)
                except Exception as exc:  # one scenario's failure must not lose the table
                    rows = [(name, "the scenario failed", f"{type(exc).__name__}: {exc}")]
                    failed += 1
                try:
                    rows.append((name, "server afterwards", outcome(target)))
                finally:
                    target.close()
            for scenario_name, figure, value in rows:
                figures.setdefault((scenario_name, figure), {})[server] = value
    print_table(figures, servers)
    return 1 if failed else 0


def print_table(figures: dict[tuple[str, str], dict[str, str]], servers: list[str]) -> None:
    width = max(len(figure) for _, figure in figures)
    widths = [
        max(len(server), *(len(values.get(server, "")) for values in figures.values()))
        for server in servers
    ]
    cells = "  ".join(f"{server:<{w}}" for server, w in zip(servers, widths, strict=True))
    print(f"{'scenario':<10}  {'figure':<{width}}  {cells}".rstrip())
    dashes = "  ".join("-" * w for w in widths)
    print(f"{'-' * 10}  {'-' * width}  {dashes}")
    for (scenario, figure), values in figures.items():
        cells = "  ".join(
            f"{values.get(server, '-'):<{w}}" for server, w in zip(servers, widths, strict=True)
        )
        print(f"{scenario:<10}  {figure:<{width}}  {cells}".rstrip())


if __name__ == "__main__":
    sys.exit(main())
