"""Load generator for Gearman job servers: the binary protocol over raw loopback sockets.

Every scenario runs its connections in child processes (one asyncio event loop each, uvloop when
installed), with requests pipelined and responses parsed by the gearsql sans-IO codec. The
children connect, register and pre-build their packets first, then all start together on a
barrier, so that only the measured work falls inside the timing window. Each child reports its own
CPU time over that window, and the server's CPU time is read from ``/proc/PID/stat`` around it:
the two together show which side was the bottleneck.

Run one scenario against a running server::

    python bench/loadgen.py submit-bg --port 4730 --server-pid $(pidof gearmand)

``bench/compare.py`` starts the servers itself and runs every scenario against each.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import secrets
import socket
import sys
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from gearsql.protocol import RES, Packet, PacketType, Parser, pack_request

__all__ = [
    "SCENARIOS",
    "LoadConfig",
    "PhaseResult",
    "ProcessSpec",
    "ScenarioError",
    "admin_command",
    "process_cpu_seconds",
    "process_cpu_split",
    "process_rss_bytes",
    "run_phase",
    "run_scenario",
]

P = PacketType

#: The 100-byte workload of every job.
PAYLOAD_SIZE = 100
#: What the benchmark workers send back in WORK_COMPLETE.
RESULT = b"done"

#: Values of ``LoadConfig.unique``.
UNIQUE_CHOICES = ("uuid", "none")

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ScenarioError(Exception):
    """A scenario could not be measured: the server misbehaved, a child failed, or time ran out."""


# ---------------------------------------------------------------------------------------------
# The server process, seen through /proc


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` (all its threads), from /proc/PID/stat."""
    user, system = process_cpu_split(pid)
    return user + system


def process_cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process ``pid`` (all its threads), from /proc/PID/stat:
    the system part is the kernel's work on the process's behalf (socket reads and writes)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        stat = handle.read()
    # The command name in parentheses may contain spaces; the fields after it do not.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return utime / _CLOCK_TICKS, stime / _CLOCK_TICKS


def process_rss_bytes(pid: int, field_name: str = "VmRSS") -> int:
    """Resident set size (or another ``Vm*`` field) of process ``pid`` in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    raise ScenarioError(f"no {field_name} in /proc/{pid}/status")


def machine_busy_seconds() -> float:
    """CPU seconds all processors of the machine have spent busy since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as handle:
        ticks = [int(value) for value in handle.readline().split()[1:9]]
    # user nice system idle iowait irq softirq steal: busy is everything but idle and iowait.
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLOCK_TICKS


def admin_command(host: str, port: int, command: bytes, timeout: float = 10.0) -> list[bytes]:
    """Send one text admin command and return the lines of a ``.``-terminated listing."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(command + b"\n")
        data = b""
        while not data.endswith(b".\n") and not data.startswith(b"ERR"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return [line for line in data.split(b"\n") if line and line != b"."]


def queued_jobs(host: str, port: int, function: bytes) -> int:
    """Jobs of ``function`` the server holds (queued plus running), from the admin ``status``."""
    for line in admin_command(host, port, b"status"):
        name, total, _running, _workers = line.split(b"\t")
        if name == function:
            return int(total)
    return 0


# ---------------------------------------------------------------------------------------------
# Connections and the per-connection drivers that run in the child processes


class Connection(asyncio.Protocol):
    """One client socket: bytes in, codec events out to whoever drives the connection."""

    def __init__(self) -> None:
        self.parser = Parser(expect_magic=RES)
        self.transport: asyncio.Transport | None = None
        self.on_events: Callable[[list[Any]], None] = self._unexpected
        self.on_lost: Callable[[BaseException], None] | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.on_events(self.parser.feed(data))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing and self.on_lost is not None:
            self.on_lost(exc or ConnectionResetError("the server closed the connection"))

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def _unexpected(self, events: list[Any]) -> None:
        raise ScenarioError(f"unexpected data before the run: {events[:3]!r}")


def _describe(event: Any) -> str:
    if isinstance(event, Packet):
        if event.type is P.ERROR:
            return "ERROR " + b" ".join(event.args).decode("utf-8", "replace")
        return f"unexpected {event.type.name}"
    return f"protocol violation: {event!r}"


class Driver:
    """What one connection does during the measured run."""

    def __init__(self, conn: Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self.done: asyncio.Future[None] = loop.create_future()
        self.t_done = 0.0
        self.count = 0
        self.errors: list[str] = []
        conn.on_events = self.on_events
        conn.on_lost = self.fail

    def start(self) -> None:
        raise NotImplementedError

    def on_events(self, events: list[Any]) -> None:
        raise NotImplementedError

    def error(self, event: Any) -> None:
        if len(self.errors) < 10:
            self.errors.append(_describe(event))

    def finish(self) -> None:
        if not self.done.done():
            self.t_done = time.monotonic()
            self.done.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


class EchoDriver(Driver):
    """``count`` ECHO_REQ round trips, ``window`` of them in flight at any time."""

    def __init__(
        self,
        conn: Connection,
        loop: asyncio.AbstractEventLoop,
        count: int,
        window: int,
        payload: bytes,
    ) -> None:
        super().__init__(conn, loop)
        self.total = count
        self.window = window
        self.packet = pack_request(P.ECHO_REQ, payload)
        self.sent = 0

    def start(self) -> None:
        first = min(self.window, self.total)
        self.sent = first
        if first:
            self.conn.write(self.packet * first)
        else:
            self.finish()

    def on_events(self, events: list[Any]) -> None:
        answered = 0
        for event in events:
            if isinstance(event, Packet) and event.type is P.ECHO_RES:
                answered += 1
            else:
                self.error(event)
                answered += 1
        self.count += answered
        more = min(answered, self.total - self.sent)
        if more > 0:
            self.sent += more
            self.conn.write(self.packet * more)
        if self.count >= self.total:
            self.finish()


class SubmitDriver(Driver):
    """Pre-built SUBMIT_JOB_BG packets, ``window`` of them awaiting JOB_CREATED at any time."""

    def __init__(
        self, conn: Connection, loop: asyncio.AbstractEventLoop, packets: list[bytes], window: int
    ) -> None:
        super().__init__(conn, loop)
        self.packets = packets
        self.window = window
        self.sent = 0

    def start(self) -> None:
        first = min(self.window, len(self.packets))
        self.sent = first
        if first:
            self.conn.write(b"".join(self.packets[:first]))
        else:
            self.finish()

    def on_events(self, events: list[Any]) -> None:
        answered = 0
        for event in events:
            # An ERROR (e.g. QUEUE_ERROR) also answers one submission; it is reported, not retried.
            if not (isinstance(event, Packet) and event.type is P.JOB_CREATED):
                self.error(event)
            answered += 1
        self.count += answered
        more = min(answered, len(self.packets) - self.sent)
        if more > 0:
            start = self.sent
            self.sent += more
            self.conn.write(b"".join(self.packets[start : self.sent]))
        if self.count >= len(self.packets):
            self.packets = []
            self.finish()


class ForegroundClientDriver(Driver):
    """One SUBMIT_JOB at a time: submit, wait for WORK_COMPLETE, record the latency, repeat."""

    def __init__(
        self,
        conn: Connection,
        loop: asyncio.AbstractEventLoop,
        count: int,
        function: bytes,
        payload: bytes,
    ) -> None:
        super().__init__(conn, loop)
        self.total = count
        # Foreground jobs go out with an empty unique, as libgearman sends them.
        self.packet = pack_request(P.SUBMIT_JOB, function, b"", payload)
        self.latencies: list[float] = []
        self.t_submit = 0.0

    def start(self) -> None:
        if self.total:
            self.submit()
        else:
            self.finish()

    def submit(self) -> None:
        self.t_submit = time.perf_counter()
        self.conn.write(self.packet)

    def on_events(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, Packet):
                kind = event.type
                if kind is P.JOB_CREATED:
                    continue
                if kind is P.WORK_COMPLETE:
                    self.latencies.append(time.perf_counter() - self.t_submit)
                    self.count += 1
                    if self.count < self.total:
                        self.submit()
                    else:
                        self.finish()
                    continue
            self.error(event)
            self.fail(ScenarioError(_describe(event)))


class WorkerDriver(Driver):
    """A worker that completes every job at once: GRAB_JOB_UNIQ, WORK_COMPLETE, and PRE_SLEEP
    when the server has nothing, until told to stop."""

    GRAB = pack_request(P.GRAB_JOB_UNIQ)
    SLEEP = pack_request(P.PRE_SLEEP)

    def __init__(
        self,
        conn: Connection,
        loop: asyncio.AbstractEventLoop,
        function: bytes,
        on_completed: Callable[[int], None],
    ) -> None:
        super().__init__(conn, loop)
        self.function = function
        self.on_completed = on_completed
        self.grabbing = False
        self.t_last_complete = 0.0

    async def register(self, loop: asyncio.AbstractEventLoop) -> None:
        """CAN_DO, then an ECHO round trip so that the registration is known to have landed."""
        answered: asyncio.Future[None] = loop.create_future()

        def on_echo(events: list[Any]) -> None:
            for event in events:
                if isinstance(event, Packet) and event.type is P.ECHO_RES:
                    if not answered.done():
                        answered.set_result(None)
                else:
                    answered.set_exception(ScenarioError(_describe(event)))

        self.conn.on_events = on_echo
        self.conn.write(pack_request(P.CAN_DO, self.function) + pack_request(P.ECHO_REQ, b"r"))
        await answered
        self.conn.on_events = self.on_events

    def start(self) -> None:
        self.grabbing = True
        self.conn.write(self.GRAB)

    def on_events(self, events: list[Any]) -> None:
        out: list[bytes] = []
        completed = 0
        for event in events:
            if isinstance(event, Packet):
                kind = event.type
                if kind is P.JOB_ASSIGN_UNIQ:
                    out.append(pack_request(P.WORK_COMPLETE, event.args[0], RESULT))
                    out.append(self.GRAB)
                    completed += 1
                    continue
                if kind is P.NO_JOB:
                    self.grabbing = False
                    out.append(self.SLEEP)
                    continue
                if kind is P.NOOP:
                    if not self.grabbing:
                        self.grabbing = True
                        out.append(self.GRAB)
                    continue
            self.error(event)
        if out:
            self.conn.write(b"".join(out))
        if completed:
            self.t_last_complete = time.monotonic()
            self.count += completed
            self.on_completed(completed)


# ---------------------------------------------------------------------------------------------
# Child processes


@dataclass
class ProcessSpec:
    """What one child process of a phase does.

    ``role`` is ``echo``, ``submit``, ``client`` (foreground) or ``worker``. ``counts`` gives the
    number of requests of each connection (echo, submit, client); workers run until the phase's
    shared completion count reaches ``target`` or the parent tells them to stop.
    """

    role: str
    host: str
    port: int
    connections: int
    counts: list[int] = field(default_factory=list)
    window: int = 1
    function: bytes = b"bench"
    payload: bytes = b"x" * PAYLOAD_SIZE
    unique_tag: str | None = ""
    target: int = 0
    cpu: int | None = None
    index: int = 0


def _submit_packets(spec: ProcessSpec, conn_index: int, count: int) -> list[bytes]:
    if spec.unique_tag is None:
        packet = pack_request(P.SUBMIT_JOB_BG, spec.function, b"", spec.payload)
        return [packet] * count
    # libgearman gives every background job a 36-character UUID unique; these are as long and
    # distinct across processes, connections and phases, so no two jobs coalesce.
    prefix = f"{spec.unique_tag}{spec.index:02x}{conn_index:03x}{secrets.token_hex(9)}"[:24]
    return [
        pack_request(
            P.SUBMIT_JOB_BG, spec.function, b"%s-%011d" % (prefix.encode(), seq), spec.payload
        )
        for seq in range(count)
    ]


async def _child_run(
    spec: ProcessSpec, ready: Any, go: Any, done: Any, stop: Any, timeout: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    conns: list[Connection] = []
    for _ in range(spec.connections):
        _transport, conn = await loop.create_connection(Connection, spec.host, spec.port)
        conns.append(conn)

    completed_here = [0]

    def on_completed(count: int) -> None:
        completed_here[0] += count
        done[spec.index] = completed_here[0]

    drivers: list[Driver] = []
    for number, conn in enumerate(conns):
        if spec.role == "echo":
            drivers.append(EchoDriver(conn, loop, spec.counts[number], spec.window, spec.payload))
        elif spec.role == "submit":
            packets = _submit_packets(spec, number, spec.counts[number])
            drivers.append(SubmitDriver(conn, loop, packets, spec.window))
        elif spec.role == "client":
            drivers.append(
                ForegroundClientDriver(conn, loop, spec.counts[number], spec.function, spec.payload)
            )
        elif spec.role == "worker":
            worker = WorkerDriver(conn, loop, spec.function, on_completed)
            await worker.register(loop)
            drivers.append(worker)
        else:
            raise ValueError(f"unknown role {spec.role!r}")

    gc.collect()
    gc.disable()  # no collector pauses inside the measured window
    ready.wait(timeout)  # blocks the loop on purpose: nothing is in flight yet
    go.wait(timeout)
    t_start = time.monotonic()
    cpu_start = time.process_time()
    for driver in drivers:
        driver.start()

    if spec.role == "worker":
        finished: asyncio.Future[None] = loop.create_future()

        def poll() -> None:
            if finished.done():
                return
            if stop.value or (spec.target and sum(done) >= spec.target):
                finished.set_result(None)
                return
            for driver in drivers:
                if driver.done.done() and driver.done.exception() is not None:
                    finished.set_exception(driver.done.exception())  # type: ignore[arg-type]
                    return
            loop.call_later(0.005, poll)

        poll()
        await finished
        t_end = max(
            (
                d.t_last_complete
                for d in drivers
                if isinstance(d, WorkerDriver) and d.t_last_complete
            ),
            default=t_start,
        )
    else:
        await asyncio.wait_for(asyncio.gather(*(d.done for d in drivers)), timeout)
        t_end = max((d.t_done for d in drivers), default=t_start)
    cpu = time.process_time() - cpu_start
    t_cpu_end = time.monotonic()
    for conn in conns:
        conn.close()
    gc.enable()

    latencies: list[float] = []
    for driver in drivers:
        latencies.extend(getattr(driver, "latencies", ()))
    errors = [message for driver in drivers for message in driver.errors]
    return {
        "index": spec.index,
        "role": spec.role,
        "connections": spec.connections,
        "t_start": t_start,
        "t_end": t_end,
        "cpu": cpu,
        "cpu_wall": t_cpu_end - t_start,
        "count": sum(d.count for d in drivers),
        "errors": errors[:10],
        "latencies": latencies,
    }


def _run_loop(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is the optional 'fast' extra
        return asyncio.run(coro)
    return uvloop.run(coro)


def _child_main(
    spec: ProcessSpec, ready: Any, go: Any, results: Any, done: Any, stop: Any, timeout: float
) -> None:
    try:
        if spec.cpu is not None:
            os.sched_setaffinity(0, {spec.cpu})
        results.put(_run_loop(_child_run(spec, ready, go, done, stop, timeout)))
    except BaseException:
        ready.abort()
        go.abort()
        results.put({"index": spec.index, "role": spec.role, "error": traceback.format_exc()})


# ---------------------------------------------------------------------------------------------
# Phases: a set of child processes that start together and are timed together


@dataclass
class PhaseResult:
    """Timing and CPU figures of one phase. ``wall`` runs from the common start to the last
    response (or the last WORK_COMPLETE sent, for a phase of workers only)."""

    wall: float
    count: int
    server_cpu: float | None
    #: The part of ``server_cpu`` spent in the server's own code (the rest is the kernel's).
    server_user_cpu: float | None
    gen_cpu: float
    gen_cpu_busiest: float
    #: CPU seconds the whole machine was busy during the phase: what is left after the server's
    #: and the load generator's share was used by other programs.
    machine_cpu: float
    processes: int
    latencies: list[float]
    errors: list[str]

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        del data["latencies"]
        return data


def run_phase(
    specs: Sequence[ProcessSpec], server_pid: int | None = None, timeout: float = 300.0
) -> PhaseResult:
    """Run ``specs`` in one child process each and time them from a common start.

    Workers stop when ``target`` completions are reached, or, in a phase that also has clients
    or submitters, as soon as those are done. Raises :class:`ScenarioError` when a child fails
    or the phase takes longer than ``timeout`` seconds.
    """
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Barrier(len(specs) + 1)
    go = ctx.Barrier(len(specs) + 1)
    results = ctx.Queue()
    done = ctx.RawArray("q", len(specs))
    stop = ctx.RawValue("b", 0)
    specs = [replace(spec, index=number) for number, spec in enumerate(specs)]
    children = [
        ctx.Process(
            target=_child_main, args=(spec, ready, go, results, done, stop, timeout), daemon=True
        )
        for spec in specs
    ]
    for child in children:
        child.start()
    deadline = time.monotonic() + timeout
    reports: dict[int, dict[str, Any]] = {}
    server_cpu_start: tuple[float, float] | None = None
    server_cpu_end: tuple[float, float] | None = None
    machine_start = machine_end = 0.0
    try:
        try:
            ready.wait(timeout)
            if server_pid is not None:
                server_cpu_start = process_cpu_split(server_pid)
            machine_start = machine_busy_seconds()
            go.wait(timeout)
        except Exception:  # a child aborted the barrier: its report says why
            _collect(results, reports, children, len(specs), deadline=time.monotonic() + 10)
            raise ScenarioError(_failure(reports) or "a child process failed to start") from None
        finite = {spec.index for spec in specs if spec.role != "worker"}
        if finite:
            _collect(results, reports, children, len(specs), deadline, wanted=finite)
            stop.value = 1
            machine_end = machine_busy_seconds()
            if server_pid is not None:
                server_cpu_end = process_cpu_split(server_pid)
        _collect(results, reports, children, len(specs), deadline)
        if not machine_end:
            machine_end = machine_busy_seconds()
            if server_pid is not None:
                server_cpu_end = process_cpu_split(server_pid)
    finally:
        stop.value = 1
        for child in children:
            child.join(5)
            if child.is_alive():
                child.terminate()
                child.join()
    failure = _failure(reports)
    if failure:
        raise ScenarioError(failure)

    timed = [r for r in reports.values() if r["role"] != "worker"] or list(reports.values())
    start = min(r["t_start"] for r in reports.values())
    wall = max(r["t_end"] for r in timed) - start
    latencies = sorted(x for r in reports.values() for x in r["latencies"])
    return PhaseResult(
        wall=wall,
        count=sum(r["count"] for r in timed),
        server_cpu=(
            None
            if server_cpu_start is None or server_cpu_end is None
            else sum(server_cpu_end) - sum(server_cpu_start)
        ),
        server_user_cpu=(
            None
            if server_cpu_start is None or server_cpu_end is None
            else server_cpu_end[0] - server_cpu_start[0]
        ),
        gen_cpu=sum(r["cpu"] for r in reports.values()),
        gen_cpu_busiest=max(r["cpu"] / max(r["cpu_wall"], 1e-9) for r in reports.values()),
        machine_cpu=machine_end - machine_start,
        processes=len(reports),
        latencies=latencies,
        errors=[e for r in reports.values() for e in r["errors"]][:10],
    )


def _collect(
    results: Any,
    reports: dict[int, dict[str, Any]],
    children: list[Any],
    expected: int,
    deadline: float,
    wanted: set[int] | None = None,
) -> None:
    """Take child reports off the queue until ``wanted`` (default: all) have reported."""
    wanted = set(range(expected)) if wanted is None else wanted
    while not wanted <= reports.keys():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ScenarioError("timed out waiting for the load generator's processes")
        try:
            report = results.get(timeout=min(remaining, 0.5))
        except Exception:  # queue.Empty: check that nobody died without a report
            dead = [
                n
                for n, child in enumerate(children)
                if child.exitcode is not None and n not in reports
            ]
            if dead:
                # A report may still be in the pipe; give it a moment before giving up.
                try:
                    report = results.get(timeout=1)
                except Exception:
                    raise ScenarioError(
                        f"load generator process {dead[0]} exited with "
                        f"{children[dead[0]].exitcode} without a report"
                    ) from None
            else:
                continue
        reports[report["index"]] = report
        if "error" in report:
            return


def _failure(reports: dict[int, dict[str, Any]]) -> str:
    for report in reports.values():
        if "error" in report:
            return f"{report['role']} process {report['index']} failed:\n{report['error']}"
    for report in reports.values():
        if report.get("errors"):
            return f"{report['role']} process {report['index']} got: {report['errors'][0]}"
    return ""


# ---------------------------------------------------------------------------------------------
# Scenarios


@dataclass
class LoadConfig:
    """Sizes of the scenarios. ``jobs`` is the job count of submit-bg and drain and the deepest
    queue of the memory scenario (which also measures at half of it)."""

    jobs: int = 200_000
    echo_count: int = 0  # 0: 2 x jobs
    fg_jobs: int = 0  # 0: jobs / 4
    echo_connections: int = 16
    echo_window: int = 64
    submit_connections: int = 4
    submit_window: int = 250
    workers: int = 4
    clients: int = 16
    procs: int = 2
    #: ``uuid``: every background job carries a distinct 36-byte unique, as libgearman sends;
    #: ``none``: empty uniques, the server's cheapest path.
    unique: str = "uuid"
    gen_cpu: int | None = None
    timeout: float = 300.0

    @property
    def echo_total(self) -> int:
        return self.echo_count or 2 * self.jobs

    @property
    def fg_total(self) -> int:
        return self.fg_jobs or max(self.jobs // 4, 1)


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if n < total % parts else 0) for n in range(parts)]


def _spread(
    role: str, host: str, port: int, connections: int, total: int, procs: int, **extra: Any
) -> list[ProcessSpec]:
    """``connections`` connections sharing ``total`` requests, spread over ``procs`` processes."""
    procs = max(1, min(procs, connections))
    per_conn = _split(total, connections)
    specs = []
    first = 0
    for conns in _split(connections, procs):
        specs.append(ProcessSpec(role, host, port, conns, per_conn[first : first + conns], **extra))
        first += conns
    return specs


def _workers(
    host: str, port: int, cfg: LoadConfig, function: bytes, procs: int, target: int = 0
) -> list[ProcessSpec]:
    return [
        ProcessSpec("worker", host, port, conns, function=function, target=target, cpu=cfg.gen_cpu)
        for conns in _split(cfg.workers, max(1, min(procs, cfg.workers)))
    ]


def _fill(
    host: str,
    port: int,
    cfg: LoadConfig,
    function: bytes,
    count: int,
    tag: str,
    server_pid: int | None,
) -> PhaseResult:
    specs = _spread(
        "submit",
        host,
        port,
        cfg.submit_connections,
        count,
        cfg.procs,
        window=cfg.submit_window,
        function=function,
        unique_tag=tag if cfg.unique == "uuid" else None,
        cpu=cfg.gen_cpu,
    )
    phase = run_phase(specs, server_pid, cfg.timeout)
    held = queued_jobs(host, port, function)
    if held < count:
        raise ScenarioError(f"queued {count} jobs but the server holds {held}")
    return phase


def _check_drained(host: str, port: int, function: bytes, patience: float = 5.0) -> None:
    """Raise unless the server soon holds no job of ``function``: the last WORK_COMPLETE may
    still be on its way when the workers stop."""
    deadline = time.monotonic() + patience
    while (left := queued_jobs(host, port, function)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        raise ScenarioError(f"{left} jobs still held by the server after the drain")


def _per_100k(cpu: float | None, jobs: int) -> float | None:
    return None if cpu is None or not jobs else cpu * 100_000 / jobs


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def scenario_echo(host: str, port: int, server_pid: int | None, cfg: LoadConfig) -> dict[str, Any]:
    """ECHO_REQ round trips, pipelined on many connections: the ceiling of the whole setup."""
    specs = _spread(
        "echo",
        host,
        port,
        cfg.echo_connections,
        cfg.echo_total,
        cfg.procs,
        window=cfg.echo_window,
        payload=b"x" * 16,
        cpu=cfg.gen_cpu,
    )
    phase = run_phase(specs, server_pid, cfg.timeout)
    return {
        "metrics": {"echo_per_s": phase.count / phase.wall},
        "phases": {"echo": phase.summary()},
    }


def scenario_submit_bg(
    host: str, port: int, server_pid: int | None, cfg: LoadConfig
) -> dict[str, Any]:
    """100-byte SUBMIT_JOB_BG jobs, a window in flight per connection, counting JOB_CREATED."""
    phase = _fill(host, port, cfg, b"bench_bg", cfg.jobs, "s", server_pid)
    return {
        "metrics": {
            "jobs_per_s": phase.count / phase.wall,
            "cpu_per_100k": _per_100k(phase.server_cpu, phase.count),
        },
        "phases": {"submit": phase.summary()},
    }


def scenario_submit_bg_no_unique(
    host: str, port: int, server_pid: int | None, cfg: LoadConfig
) -> dict[str, Any]:
    """submit-bg with empty uniques: no unique index to maintain, the server's cheapest path."""
    return scenario_submit_bg(host, port, server_pid, replace(cfg, unique="none"))


def scenario_drain(host: str, port: int, server_pid: int | None, cfg: LoadConfig) -> dict[str, Any]:
    """Queue ``jobs`` background jobs, then time ``workers`` workers emptying the queue."""
    function = b"bench_drain"
    fill = _fill(host, port, cfg, function, cfg.jobs, "d", None)
    phase = run_phase(
        _workers(host, port, cfg, function, cfg.procs, target=cfg.jobs), server_pid, cfg.timeout
    )
    _check_drained(host, port, function)
    return {
        "metrics": {
            "jobs_per_s": cfg.jobs / phase.wall,
            "seconds": phase.wall,
            "cpu_per_100k": _per_100k(phase.server_cpu, cfg.jobs),
        },
        "phases": {"fill": fill.summary(), "drain": phase.summary()},
    }


def scenario_foreground(
    host: str, port: int, server_pid: int | None, cfg: LoadConfig
) -> dict[str, Any]:
    """``clients`` clients with one SUBMIT_JOB outstanding each, ``workers`` workers."""
    function = b"bench_fg"
    # Clients in one process, workers in another: neither waits for the other's event loop.
    procs = max(1, cfg.procs // 2)
    specs = _workers(host, port, cfg, function, procs)
    specs += _spread(
        "client", host, port, cfg.clients, cfg.fg_total, procs, function=function, cpu=cfg.gen_cpu
    )
    phase = run_phase(specs, server_pid, cfg.timeout)
    lat = phase.latencies
    return {
        "metrics": {
            "jobs_per_s": phase.count / phase.wall,
            "p50_ms": _percentile(lat, 0.50) * 1000,
            "p99_ms": _percentile(lat, 0.99) * 1000,
            "max_ms": (lat[-1] if lat else float("nan")) * 1000,
            "cpu_per_100k": _per_100k(phase.server_cpu, phase.count),
        },
        "phases": {"foreground": phase.summary()},
    }


def scenario_memory(
    host: str, port: int, server_pid: int | None, cfg: LoadConfig
) -> dict[str, Any]:
    """Server RSS idle, with jobs/2 and jobs queued 100-byte jobs, and after draining them."""
    if server_pid is None:
        raise ScenarioError("the memory scenario needs --server-pid")
    function = b"bench_mem"
    half = cfg.jobs // 2
    idle = process_rss_bytes(server_pid)
    fill_half = _fill(host, port, cfg, function, half, "m", server_pid)
    time.sleep(0.2)
    at_half = process_rss_bytes(server_pid)
    fill_rest = _fill(host, port, cfg, function, cfg.jobs - half, "n", server_pid)
    time.sleep(0.2)
    at_full = process_rss_bytes(server_pid)
    drain = run_phase(
        _workers(host, port, cfg, function, cfg.procs, target=cfg.jobs), server_pid, cfg.timeout
    )
    _check_drained(host, port, function)
    time.sleep(1.0)  # give a server that frees memory lazily a moment
    drained = process_rss_bytes(server_pid)
    mib = 1024 * 1024
    growth = at_full - idle
    return {
        "metrics": {
            "rss_idle_mib": idle / mib,
            "rss_half_mib": at_half / mib,
            "rss_full_mib": at_full / mib,
            "rss_drained_mib": drained / mib,
            "bytes_per_job": growth / cfg.jobs,
            "given_back_pct": (100.0 * (at_full - drained) / growth) if growth > 0 else None,
            "half_jobs": half,
            "full_jobs": cfg.jobs,
        },
        "phases": {
            "fill_half": fill_half.summary(),
            "fill_rest": fill_rest.summary(),
            "drain": drain.summary(),
        },
    }


def scenario_memory_no_unique(
    host: str, port: int, server_pid: int | None, cfg: LoadConfig
) -> dict[str, Any]:
    """memory with empty uniques: no unique to keep per job, nor an index of them."""
    return scenario_memory(host, port, server_pid, replace(cfg, unique="none"))


Scenario = Callable[[str, int, "int | None", LoadConfig], "dict[str, Any]"]

#: Scenario names, in the order they run, and what runs them.
SCENARIOS: dict[str, Scenario] = {
    "echo": scenario_echo,
    "submit-bg": scenario_submit_bg,
    "submit-bg-no-unique": scenario_submit_bg_no_unique,
    "drain": scenario_drain,
    "foreground": scenario_foreground,
    "memory": scenario_memory,
    "memory-no-unique": scenario_memory_no_unique,
}


def run_scenario(
    name: str, host: str, port: int, server_pid: int | None, cfg: LoadConfig
) -> dict[str, Any]:
    """Run one scenario by name. Raises :class:`ScenarioError` when it cannot be measured."""
    return SCENARIOS[name](host, port, server_pid, cfg)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=list(SCENARIOS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4730)
    parser.add_argument("--server-pid", type=int, help="read the server's CPU time and RSS")
    for name, value in asdict(LoadConfig()).items():
        if name != "gen_cpu":
            parser.add_argument(
                "--" + name.replace("_", "-"),
                type=type(value),
                default=value,
                choices=UNIQUE_CHOICES if name == "unique" else None,
            )
    parser.add_argument("--gen-cpu", type=int, help="pin the load generator to this CPU")
    args = parser.parse_args(argv)
    cfg = LoadConfig(**{name: getattr(args, name) for name in asdict(LoadConfig())})
    try:
        result = run_scenario(args.scenario, args.host, args.port, args.server_pid, cfg)
    except ScenarioError as exc:
        print(f"{args.scenario}: {exc}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
