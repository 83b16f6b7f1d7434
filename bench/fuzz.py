"""Fuzz a running ``gearsql server`` with malformed and valid input; report cases, anomalies, RSS.

Every case is one connection: the bytes of the case go out (split at random points), the write
side is shut, and whatever the server answers is read until it closes. Cases come from a seeded
generator, so a run is replayed exactly by its seed (``--seed``), and one case by its number
(``--only N``):

- ``blob``: random bytes up to 1 KiB, half of them starting with a NUL (binary) byte;
- ``packet``: a packet of a random known type with random arguments, either magic;
- ``mutant``: a valid packet with bytes flipped, cut short, extended, its type or its length
  replaced (lengths up to 4 GiB, which the server refuses on the header);
- ``stream``: several packets and admin lines in one connection, good and bad mixed, with
  workers, submissions and results that interact;
- ``admin``: admin lines built from the real command words, with random arguments, NUL and CR
  bytes, missing newlines.

Between cases a well-behaved client, on a connection of its own that stays open, makes a round
trip (ECHO, or a foreground job done by a well-behaved worker), and another client connects,
makes one ECHO round trip and closes (so that a full accept queue shows); both times are
recorded. ``--concurrency N`` runs N fuzzing processes at once (each every N-th case number),
the round trips then coming every ``--probe-interval`` seconds: the load of docs/reliability.md
case 47. An anomaly is: the server process gone, a round trip not answered within 5 s, a case
the server did not close within 5 s of the client's end of stream, a connect that failed, or a
line in the server's log about an unexpected error. The report gives the counts, both kinds of
round trip's p50/p99/max and the server's RSS at the start, the peak and the end.

    python bench/fuzz.py --duration 300                 # five minutes, random seed
    python bench/fuzz.py --cases 2000 --seed 7          # replayable
    python bench/fuzz.py --seed 7 --only 1234 --verbose # one case again, bytes shown
    python bench/fuzz.py --port 4730 --server-pid PID   # a server you started yourself
    python bench/fuzz.py --duration 60 --concurrency 16 # case 47: 16 fuzzers at once

``tests/test_fuzz.py`` runs the same generator for a few hundred cases in the suite.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import multiprocessing
import os
import random
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/test_fuzz.py loads it by path

from ports import free_port

from gearsql.protocol import ARGUMENTS, REQ, RES, Packet, PacketType, Parser, pack, pack_request

#: Admin command words, as the server knows them, plus near misses.
ADMIN_WORDS = [
    b"status",
    b"prioritystatus",
    b"workers",
    b"show",
    b"jobs",
    b"unique",
    b"cancel",
    b"job",
    b"create",
    b"drop",
    b"function",
    b"maxqueue",
    b"version",
    b"getpid",
    b"verbose",
    b"shutdown",
    b"STATUS",
    b"show jobs",
    b"",
    b"\0",
    b"\xff\xfe",
]
#: Function names the cases use, so that workers, submissions and results meet.
FUNCTIONS = [b"fz", b"fz-2", b"", b"f\0z", b"\xff", b"x" * 513]
#: The probe's own function, done by the probe's well-behaved worker.
PROBE_FUNCTION = b"fuzz-probe"
KINDS = ("blob", "packet", "mutant", "stream", "admin")
ANOMALY_LOG = re.compile(r"unexpected error|Traceback|Fatal error|Exception in callback")


@dataclass
class Case:
    number: int
    kind: str
    data: bytes
    #: Where the data is split into separate sends.
    splits: list[int] = field(default_factory=list)


#: An epoch second soon after the run started (for SUBMIT_JOB_EPOCH), fixed for the run so that
#: a seed gives the same cases however long generating them takes.
_SOON = int(time.time()) + 5


def _arg(rng: random.Random, last: bool) -> bytes:
    choice = rng.random()
    if choice < 0.3:
        return rng.choice(FUNCTIONS).replace(b"\0", b"") if not last else rng.choice(FUNCTIONS)
    if choice < 0.5:
        return b"H:fuzz:%d" % rng.randrange(100)
    if choice < 0.6:
        return b"%d" % rng.choice([0, 1, -1, 2**31, 2**64, _SOON])
    size = rng.choice([0, 1, 8, 64, 65, 300])
    data = rng.randbytes(size)
    return data if last else data.replace(b"\0", b"")


def valid_packet(rng: random.Random) -> bytes:
    type_ = rng.choice(list(PacketType))
    names = ARGUMENTS[type_]
    args = [_arg(rng, n == len(names) - 1) for n in range(len(names))]
    magic = REQ if rng.random() < 0.85 else RES
    return pack(type_, args, magic)


def mutant(rng: random.Random) -> bytes:
    data = bytearray(valid_packet(rng))
    for _ in range(rng.randint(1, 3)):
        how = rng.randrange(6)
        if how == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif how == 1:
            del data[rng.randrange(len(data) + 1) :]
        elif how == 2:
            data += rng.randbytes(rng.randrange(64))
        elif how == 3 and len(data) >= 12:
            type_ = rng.choice([0, 5, 43, 9999, 0xFFFFFFFF, rng.randrange(64)])
            data[4:8] = struct.pack(">I", type_)
        elif how == 4 and len(data) >= 12:
            size = rng.choice([0, 1, len(data) - 12 + 1, 2**20, 2**26 + 1, 0xFFFFFFFF])
            data[8:12] = struct.pack(">I", size)
        elif how == 5 and len(data) >= 4:
            data[0:4] = rng.choice([b"\0REQ", b"\0RES", b"\0req", b"\0\0\0\0", b"GET "])
    return bytes(data)


def admin_line(rng: random.Random) -> bytes:
    words = [rng.choice(ADMIN_WORDS) for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.3:
        words.append(rng.randbytes(rng.randrange(1, 40)).replace(b"\n", b""))
    line = b" ".join(words)
    ending = rng.choice([b"\n", b"\r\n", b"\n", b""])
    return line + ending


def stream(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randint(2, 8)):
        pick = rng.random()
        if pick < 0.15:
            parts.append(pack_request(PacketType.CAN_DO, rng.choice(FUNCTIONS[:2])))
        elif pick < 0.3:
            parts.append(pack_request(PacketType.GRAB_JOB_UNIQ))
        elif pick < 0.45:
            kind = rng.choice(
                [
                    PacketType.SUBMIT_JOB,
                    PacketType.SUBMIT_JOB_BG,
                    PacketType.SUBMIT_JOB_HIGH,
                    PacketType.SUBMIT_JOB_LOW_BG,
                ]
            )
            unique = rng.choice([b"", b"-", b"u%d" % rng.randrange(5)])
            parts.append(pack_request(kind, rng.choice(FUNCTIONS[:2]), unique, rng.randbytes(8)))
        elif pick < 0.55:
            parts.append(admin_line(rng))
        elif pick < 0.75:
            parts.append(valid_packet(rng))
        else:
            parts.append(mutant(rng))
    return b"".join(parts)


def blob(rng: random.Random) -> bytes:
    data = rng.randbytes(rng.randrange(1, 1025))
    return b"\0" + data if rng.random() < 0.5 else data


def cases(seed: int, start: int = 0, step: int = 1) -> Iterator[Case]:
    """The cases of a run, forever; case N is the same for the same seed.

    ``start`` and ``step`` pick every ``step``-th case from case ``start`` on (how concurrent
    fuzzers share a run)."""
    number = start
    while True:
        rng = random.Random(f"{seed}:{number}")
        kind = rng.choice(KINDS)
        data = {
            "blob": blob,
            "packet": valid_packet,
            "mutant": mutant,
            "stream": stream,
            "admin": admin_line,
        }[kind](rng)
        splits = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(3)))
        yield Case(number, kind, data, splits)
        number += step


def send_case(address: tuple[str, int], case: Case, timeout: float = 5.0) -> tuple[bool, bytes]:
    """Send one case on a new connection, shut the write side, read until the server closes.

    Returns (closed in time, what the server sent)."""
    received = b""
    with socket.create_connection(address, timeout=timeout) as sock:
        start = 0
        try:
            for at in [*case.splits, len(case.data)]:
                sock.sendall(case.data[start:at])
                start = at
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                return True, received  # the server closed first, as it may
            raise
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, received
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(1 << 16)
            except TimeoutError:
                return False, received
            except ConnectionResetError:
                return True, received
            if not chunk:
                return True, received
            received += chunk


class Probe:
    """A well-behaved client and worker on connections that stay open for the whole run."""

    def __init__(self, address: tuple[str, int], timeout: float = 5.0):
        self.timeout = timeout
        self.client = socket.create_connection(address, timeout=timeout)
        self.worker = socket.create_connection(address, timeout=timeout)
        for sock in (self.client, self.worker):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parsers = {sock: Parser(expect_magic=RES) for sock in (self.client, self.worker)}
        self.pending: dict[socket.socket, list[tuple[PacketType, tuple[bytes, ...]]]] = {
            self.client: [],
            self.worker: [],
        }
        self.worker.sendall(pack_request(PacketType.CAN_DO, PROBE_FUNCTION))
        self.count = 0

    def _expect(self, sock: socket.socket, type_: PacketType) -> tuple[bytes, ...]:
        deadline = time.monotonic() + self.timeout
        while not self.pending[sock]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {type_.name} within {self.timeout} s")
            sock.settimeout(remaining)
            data = sock.recv(1 << 16)
            if not data:
                raise ConnectionError("the server closed the probe's connection")
            for event in self.parsers[sock].feed(data):
                self.pending[sock].append((event.type, event.args))  # type: ignore[union-attr]
        got, args = self.pending[sock].pop(0)
        if got != type_:
            raise AssertionError(f"expected {type_.name}, got {got.name} {args!r}")
        return args

    def round_trip(self) -> float:
        """One ECHO, or one foreground job through the worker; seconds it took."""
        self.count += 1
        started = time.perf_counter()
        if self.count % 2:
            payload = b"probe %d" % self.count
            self.client.sendall(pack_request(PacketType.ECHO_REQ, payload))
            if self._expect(self.client, PacketType.ECHO_RES) != (payload,):
                raise AssertionError("ECHO answered with other bytes")
        else:
            self.client.sendall(pack_request(PacketType.SUBMIT_JOB, PROBE_FUNCTION, b"", b"in"))
            (handle,) = self._expect(self.client, PacketType.JOB_CREATED)
            self.worker.sendall(pack_request(PacketType.GRAB_JOB))
            assigned = self._expect(self.worker, PacketType.JOB_ASSIGN)
            if assigned[0] != handle:
                raise AssertionError(f"the probe's worker got {assigned!r}")
            self.worker.sendall(pack_request(PacketType.WORK_COMPLETE, handle, b"out"))
            if self._expect(self.client, PacketType.WORK_COMPLETE) != (handle, b"out"):
                raise AssertionError("the probe's job came back wrong")
        return time.perf_counter() - started

    def close(self) -> None:
        self.client.close()
        self.worker.close()


def fresh_round_trip(address: tuple[str, int], timeout: float = 5.0) -> float:
    """Connect, one ECHO, close: seconds it took, the connect included (a client that connects
    for each request, and so waits on the server's accept queue)."""
    started = time.perf_counter()
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(pack_request(PacketType.ECHO_REQ, b"fresh"))
        parser, events = Parser(expect_magic=RES), []
        deadline = started + timeout
        while not events:
            sock.settimeout(max(0.01, deadline - time.perf_counter()))
            data = sock.recv(1 << 16)
            if not data:
                raise ConnectionError("the server closed the fresh connection")
            events = parser.feed(data)
        if not (isinstance(events[0], Packet) and events[0].args == (b"fresh",)):
            raise AssertionError(f"a fresh connection's ECHO got {events[0]!r}")
    return time.perf_counter() - started


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def rss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Report:
    seed: int
    cases: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    not_closed: list[int] = field(default_factory=list)
    probe_failures: list[str] = field(default_factory=list)
    log_anomalies: int = 0
    server_died: bool = False
    #: The well-behaved client's round trips on its connection that stays open (seconds).
    round_trips: list[float] = field(default_factory=list)
    #: ECHO round trips on a fresh connection each, the connect included (seconds).
    fresh_trips: list[float] = field(default_factory=list)
    concurrency: int = 1
    #: The number after the highest case run (where a run that goes on should start).
    next_case: int = 0
    rss_start: int = 0
    rss_peak: int = 0
    rss_end: int = 0
    seconds: float = 0.0

    @property
    def anomalies(self) -> int:
        return (
            len(self.not_closed)
            + len(self.probe_failures)
            + self.log_anomalies
            + int(self.server_died)
        )

    def lines(self) -> list[str]:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind.items()))
        return [
            f"seed                 {self.seed}",
            f"cases                {self.cases} in {self.seconds:.1f} s ({kinds})"
            + (f", {self.concurrency} fuzzers at once" if self.concurrency > 1 else ""),
            f"anomalies            {self.anomalies}",
            f"  server died        {int(self.server_died)}",
            f"  not closed in 5 s  {len(self.not_closed)} {sorted(self.not_closed)[:10]}",
            f"  probe failures     {len(self.probe_failures)} {self.probe_failures[:3]}",
            f"  log anomalies      {self.log_anomalies}",
            f"round trips          {summary(self.round_trips)} (one connection, kept open)",
            f"fresh round trips    {summary(self.fresh_trips)} (connect + ECHO each)",
            f"server RSS KiB       start {self.rss_start}, peak {self.rss_peak}, "
            f"end {self.rss_end}",
        ]


def percentile(values: list[float], p: float) -> float | None:
    """The ``p`` quantile (0 to 1) of ``values``, nearest rank; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def summary(trips: list[float]) -> str:
    def ms(p: float) -> str:
        value = percentile(trips, p)
        return "n/a" if value is None else f"{value * 1000:.1f}"

    return f"{len(trips)}: p50 {ms(0.5)} ms, p99 {ms(0.99)} ms, max {ms(1.0)} ms"


def _probe(report: Report, probe: Probe | None, address: tuple[str, int], pid: int, after: str):
    """One round trip on the kept connection and one on a fresh connection; returns the probe
    to use next (None when it could not reconnect)."""
    try:
        if probe is None:
            probe = Probe(address)
        report.round_trips.append(probe.round_trip())
    except (OSError, AssertionError) as exc:
        report.probe_failures.append(f"{after}: {exc}")
        if probe is not None:
            probe.close()
        probe = None
    try:
        report.fresh_trips.append(fresh_round_trip(address))
    except (OSError, AssertionError) as exc:
        report.probe_failures.append(f"{after}, fresh connection: {exc}")
    report.rss_peak = max(report.rss_peak, rss_kib(pid))
    return probe


def run(
    address: tuple[str, int],
    pid: int,
    seed: int,
    *,
    max_cases: int | None = None,
    duration: float | None = None,
    probe_every: int = 10,
    log_path: Path | None = None,
    only: int | None = None,
    verbose: bool = False,
    concurrency: int = 1,
    probe_interval: float = 0.02,
    start: int = 0,
) -> Report:
    """Fuzz the server at ``address`` (process ``pid``); stop after ``max_cases`` cases or
    ``duration`` seconds, whichever comes first, or when the server dies.

    With ``concurrency`` 1 the cases run one at a time and the probe's round trips come every
    ``probe_every`` cases; with more, that many processes send cases at once (each every
    ``concurrency``-th case number) and the probe's round trips come every ``probe_interval``
    seconds meanwhile. ``start`` is the first case number."""
    report = Report(seed, rss_start=rss_kib(pid), concurrency=concurrency, next_case=start)
    report.rss_peak = report.rss_start
    started = time.monotonic()
    if concurrency > 1 and only is None:
        _run_concurrently(report, address, pid, max_cases, duration, probe_interval, start)
    else:
        _run_in_turn(report, address, pid, max_cases, duration, probe_every, only, verbose, start)
    report.seconds = time.monotonic() - started
    if not report.server_died:
        report.rss_end = rss_kib(pid)
        report.rss_peak = max(report.rss_peak, report.rss_end)
    if log_path is not None:
        # The log file, and standard error where the event loop may write on its own.
        for path in (log_path, stderr_path(log_path)):
            if path.exists():
                report.log_anomalies += len(ANOMALY_LOG.findall(path.read_text(errors="replace")))
    return report


def _run_in_turn(
    report: Report,
    address: tuple[str, int],
    pid: int,
    max_cases: int | None,
    duration: float | None,
    probe_every: int,
    only: int | None,
    verbose: bool,
    start: int,
) -> None:
    probe: Probe | None = Probe(address)
    started = time.monotonic()
    try:
        for case in cases(report.seed, start):
            if only is not None and case.number != only:
                if case.number > only:
                    break
                continue
            if max_cases is not None and report.cases >= max_cases:
                break
            if duration is not None and time.monotonic() - started >= duration:
                break
            if verbose:
                print(f"case {case.number} {case.kind}: {case.data[:200]!r}", flush=True)
            report.cases += 1
            report.next_case = case.number + 1
            report.by_kind[case.kind] = report.by_kind.get(case.kind, 0) + 1
            try:
                closed, _ = send_case(address, case)
            except OSError as exc:
                closed = True  # not a case the server left open: counted as a failure
                report.probe_failures.append(f"case {case.number}: connect failed: {exc}")
            if not alive(pid):
                report.server_died = True
                break
            if not closed:
                report.not_closed.append(case.number)
            if report.cases % probe_every == 0:
                probe = _probe(report, probe, address, pid, f"after case {case.number}")
    finally:
        if probe is not None:
            probe.close()


def _fuzzer(
    address: tuple[str, int],
    seed: int,
    first: int,
    step: int,
    max_cases: int | None,
    stop: Any,
    results: Any,
) -> None:
    """One of the concurrent fuzzers (a process of its own): every ``step``-th case from
    ``first``, until ``stop`` is set or ``max_cases`` are done; puts its tallies on ``results``."""
    count, by_kind, not_closed, failures, last = 0, {}, [], [], first - step
    for case in cases(seed, first, step):
        if stop.is_set() or (max_cases is not None and count >= max_cases):
            break
        count += 1
        last = case.number
        by_kind[case.kind] = by_kind.get(case.kind, 0) + 1
        try:
            closed, _ = send_case(address, case)
        except OSError as exc:
            closed = True  # not a case the server left open: counted as a failure
            failures.append(f"case {case.number}: connect failed: {exc}")
        if not closed:
            not_closed.append(case.number)
    results.put((count, by_kind, not_closed, failures[:20], last))


def _run_concurrently(
    report: Report,
    address: tuple[str, int],
    pid: int,
    max_cases: int | None,
    duration: float | None,
    probe_interval: float,
    start: int,
) -> None:
    context = multiprocessing.get_context("fork")
    stop, results = context.Event(), context.Queue()
    n = report.concurrency
    each = None if max_cases is None else -(-max_cases // n)
    fuzzers = [
        context.Process(
            target=_fuzzer, args=(address, report.seed, start + k, n, each, stop, results)
        )
        for k in range(n)
    ]
    probe: Probe | None = Probe(address)
    started = time.monotonic()
    for fuzzer in fuzzers:
        fuzzer.start()
    try:
        while any(f.is_alive() for f in fuzzers):
            if duration is not None and time.monotonic() - started >= duration:
                break
            if not alive(pid):
                report.server_died = True
                break
            probe = _probe(report, probe, address, pid, f"at {time.monotonic() - started:.1f} s")
            time.sleep(probe_interval)
    finally:
        stop.set()
        if probe is not None:
            probe.close()
        for _ in fuzzers:
            count, by_kind, not_closed, failures, last = results.get(timeout=60)
            report.cases += count
            for kind, number in by_kind.items():
                report.by_kind[kind] = report.by_kind.get(kind, 0) + number
            report.not_closed += not_closed
            report.probe_failures += failures
            report.next_case = max(report.next_case, last + 1)
        for fuzzer in fuzzers:
            fuzzer.join()
    if not alive(pid):
        report.server_died = True


@contextlib.contextmanager
def started_server(log_path: Path, extra: list[str]) -> Iterator[tuple[tuple[str, int], int]]:
    """A ``gearsql server`` with the memory store on a free loopback port: (address, pid)."""
    port = free_port()
    command = [
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
        "--log-file",
        str(log_path),
        "--verbose",
        "WARNING",
        *extra,
    ]
    with stderr_path(log_path).open("wb") as stderr:
        with listening(command, port, "the server", stderr) as pid:
            yield ("127.0.0.1", port), pid


@contextlib.contextmanager
def listening(
    command: list[str], port: int, what: str, stderr: IO[bytes] | int = subprocess.DEVNULL
) -> Iterator[int]:
    """Run ``command`` until the block ends (terminated, killed after 10 s); its pid once
    127.0.0.1:``port`` accepts connections (RuntimeError if it exits first, OSError after
    15 s)."""
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield proc.pid
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def stderr_path(log_path: Path) -> Path:
    """Where :func:`started_server` puts the server's standard error (next to its log)."""
    return log_path.with_name(log_path.name + ".stderr")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument("--cases", type=int, default=None, help="stop after this many cases")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default 60 without --cases)",
    )
    parser.add_argument("--only", type=int, default=None, help="run only case number N")
    parser.add_argument(
        "--probe-every",
        type=int,
        default=10,
        help="a well-behaved round trip every N cases (with --concurrency 1)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="fuzzing processes sending cases at once (default 1: one case at a time)",
    )
    parser.add_argument(
        "--probe-interval",
        type=float,
        default=0.02,
        help="seconds between well-behaved round trips with --concurrency above 1",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="fuzz the server on 127.0.0.1:PORT instead of starting one",
    )
    parser.add_argument("--server-pid", type=int, default=None, help="its pid, for RSS")
    parser.add_argument("--server-args", default="", help="extra options for the started server")
    parser.add_argument("--verbose", action="store_true", help="print every case's bytes")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    duration = args.duration if args.duration is not None or args.cases else 60.0
    options = {
        "max_cases": args.cases,
        "duration": duration,
        "probe_every": args.probe_every,
        "concurrency": args.concurrency,
        "probe_interval": args.probe_interval,
        "only": args.only,
        "verbose": args.verbose,
    }
    if args.port is not None:
        if args.server_pid is None:
            parser.error("--port needs --server-pid (for the RSS figures)")
        report = run(("127.0.0.1", args.port), args.server_pid, seed, **options)  # type: ignore[arg-type]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            log_path = Path(tmp) / "gearsql.log"
            with started_server(log_path, args.server_args.split()) as (address, pid):
                report = run(address, pid, seed, log_path=log_path, **options)  # type: ignore[arg-type]
            if report.log_anomalies:
                for path in (log_path, stderr_path(log_path)):
                    print(path.read_text(errors="replace")[-3000:])
    print("\n".join(report.lines()))
    return 1 if report.anomalies else 0


if __name__ == "__main__":
    sys.exit(main())
