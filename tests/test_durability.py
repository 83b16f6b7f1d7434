"""Durability of `gearsql server` with its SQLite store, proved with real processes and kills.

Every test runs the server as a child process on a real socket and reads the queue file with
a connection of its own (WAL lets a reader in while the server writes). Nothing is mocked: the
server is stopped with SIGTERM or killed with SIGKILL and started again on the same file.
docs/reliability.md cases 15-22 and 25; docs/protocol.md §4 (persistent queue semantics).
"""

from __future__ import annotations

import asyncio
import collections
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ServerProcess, free_port
from wire import Peer, connect

from gearsql.core import ANONYMOUS_PREFIX
from gearsql.protocol import Packet, pack_request
from gearsql.protocol import PacketType as P
from gearsql.stores.sqlite import SQLiteStore

HIGH, NORMAL, LOW = 0, 1, 2

Row = tuple[bytes, bytes, int, bytes, int]


# ---------------------------------------------------------------------- helpers


def sqlite_server(tmp_path: Path, db: Path, *args: str, log: str = "gearsql.log") -> ServerProcess:
    """A started `gearsql server --store sqlite:///<db>`."""
    return ServerProcess("gearsql", tmp_path / log, ["--store", f"sqlite:///{db}", *args]).start()


def table(db: Path) -> list[Row]:
    """Every row of the queue table, read through a connection of the test's own."""
    conn = sqlite3.connect(db, timeout=10)
    conn.text_factory = bytes
    try:
        rows = conn.execute(
            "SELECT unique_key, function_name, priority, data, when_to_run "
            "FROM gearman_queue ORDER BY rowid"
        ).fetchall()
    finally:
        conn.close()
    return [(bytes(u), bytes(f), int(p), bytes(d), int(w)) for u, f, p, d, w in rows]


def uniques(db: Path) -> list[bytes]:
    return [row[0] for row in table(db)]


def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``condition`` (store deletions are committed asynchronously) up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.02)


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gearsql", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def grab(worker: Peer) -> Packet:
    """GRAB_JOB_UNIQ and its answer (JOB_ASSIGN_UNIQ or NO_JOB), skipping stray NOOPs."""
    worker.send(P.GRAB_JOB_UNIQ)
    while True:
        packet = worker.recv()
        if packet.type != P.NOOP:
            assert packet.type in (P.JOB_ASSIGN_UNIQ, P.NO_JOB), packet
            return packet


def submit(
    peer: Peer, kind: P, function: bytes, unique: bytes, data: bytes, when: int | None = None
) -> bytes:
    """Submit one job and return the handle of its JOB_CREATED."""
    if kind == P.SUBMIT_JOB_EPOCH:
        peer.send(kind, function, unique, str(when).encode(), data)
    else:
        peer.send(kind, function, unique, data)
    return peer.expect(P.JOB_CREATED).args[0]


# ---------------------------------------------------------------------- 1. ack after commit


BACKGROUND_KINDS = [
    # (packet, function, unique, data, stored priority, epoch offset)
    (P.SUBMIT_JOB_BG, b"bg", b"normal-uniq", b"n1", NORMAL, None),
    (P.SUBMIT_JOB_BG, b"bg", b"", b"n2 no unique", NORMAL, None),
    (P.SUBMIT_JOB_HIGH_BG, b"bg", b"high-uniq", b"h1", HIGH, None),
    (P.SUBMIT_JOB_HIGH_BG, b"bg", b"", b"h2 no unique", HIGH, None),
    (P.SUBMIT_JOB_LOW_BG, b"bg", b"low-uniq", b"l1", LOW, None),
    (P.SUBMIT_JOB_LOW_BG, b"bg", b"", b"l2 no unique", LOW, None),
    (P.SUBMIT_JOB_EPOCH, b"bg", b"epoch-uniq", b"e1", NORMAL, 3600),
    (P.SUBMIT_JOB_EPOCH, b"bg", b"", b"e2 no unique", NORMAL, 7200),
]


def test_job_created_is_sent_only_after_the_row_is_committed(tmp_path: Path) -> None:
    db = tmp_path / "q.sqlite3"
    server = sqlite_server(tmp_path, db)
    try:
        with Peer(server.address) as client:
            for kind, function, unique, data, priority, offset in BACKGROUND_KINDS:
                when = int(time.time()) + offset if offset is not None else None
                submit(client, kind, function, unique, data, when)
                # No polling: the row must be there the moment JOB_CREATED arrived.
                matching = [row for row in table(db) if row[3] == data]
                assert len(matching) == 1, (kind.name, unique, table(db))
                row_unique, row_function, row_priority, _, row_when = matching[0]
                assert row_function == function
                assert row_priority == priority
                assert row_when == (when or 0)
                if unique:
                    assert row_unique == unique
                else:
                    # A job without a unique still needs a key; replay turns it back into "".
                    assert row_unique.startswith(ANONYMOUS_PREFIX)
            # Foreground jobs have a client attached: they are never stored (docs/protocol.md §4).
            submit(client, P.SUBMIT_JOB, b"fg", b"fg-uniq", b"foreground")
            submit(client, P.SUBMIT_JOB_HIGH, b"fg", b"", b"foreground high")
            assert len(table(db)) == len(BACKGROUND_KINDS)
            assert all(row[1] == b"bg" for row in table(db))
    finally:
        assert server.stop() == 0
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_store_connection_uses_wal_and_synchronous_full(tmp_path: Path) -> None:
    """A commit that returned survives an OS crash (case 18), not only a process crash."""

    async def pragmas() -> tuple[int, str]:
        store = SQLiteStore(tmp_path / "probe.sqlite3")
        await store.open()
        try:
            conn = store._handle
            assert conn is not None

            def pragma(name: str) -> object:
                return conn.execute(f"PRAGMA {name}").fetchone()[0]

            # The connection belongs to the store's own thread: ask there.
            synchronous = await store._run(pragma, "synchronous")
            journal = await store._run(pragma, "journal_mode")
            return int(synchronous), bytes(journal).decode()  # type: ignore[call-overload]
        finally:
            await store.close()

    synchronous, journal = asyncio.run(pragmas())
    assert synchronous == 2, "PRAGMA synchronous must be FULL (2)"
    assert journal == "wal"


# ---------------------------------------------------------------------- 2. rows leave


def test_rows_leave_on_completion_failure_exception_cancel_and_retry_drop(tmp_path: Path) -> None:
    db = tmp_path / "q.sqlite3"
    # One retry: the first worker loss requeues (the row stays), the second drops the job.
    server = sqlite_server(tmp_path, db, "--job-retries", "2")
    try:
        with Peer(server.address) as client:
            handles = {}
            for function, unique in [
                (b"complete", b"u-complete"),
                (b"complete", b""),
                (b"fail", b"u-fail"),
                (b"exception", b"u-exception"),
                (b"cancel", b"u-cancel"),
                (b"retry", b"u-retry"),
                (b"other", b"u-other"),
            ]:
                handles[function, unique] = submit(
                    client, P.SUBMIT_JOB_BG, function, unique, function + b" data"
                )
            assert len(table(db)) == 7

            def stored(function: bytes) -> list[Row]:
                return [row for row in table(db) if row[1] == function]

            with Peer(server.address) as worker:
                worker.send(P.CAN_DO, b"complete")
                for _ in range(2):
                    handle = grab(worker).args[0]
                    worker.send(P.WORK_COMPLETE, handle, b"result")
                wait_until(lambda: not stored(b"complete"), what="completed rows to leave")

                worker.send(P.CAN_DO, b"fail")
                worker.send(P.WORK_FAIL, grab(worker).args[0])
                wait_until(lambda: not stored(b"fail"), what="failed row to leave")

                worker.send(P.CAN_DO, b"exception")
                worker.send(P.WORK_EXCEPTION, grab(worker).args[0], b"boom")
                wait_until(lambda: not stored(b"exception"), what="exception row to leave")

            # Admin `cancel job` removes the durable row (gearmand fixed this in 1.1.12).
            assert (
                client.admin(
                    "cancel job " + handles[b"cancel", b"u-cancel"].decode(), list_reply=False
                )
                == b"OK\r\n"
            )
            wait_until(lambda: not stored(b"cancel"), what="cancelled row to leave")

            # A worker that disconnects mid-job: the job is requeued and its row stays.
            with Peer(server.address) as doomed:
                doomed.send(P.CAN_DO, b"retry")
                assert grab(doomed).args[2] == b"u-retry"
            wait_until(
                lambda: handles[b"retry", b"u-retry"] + b"\t1\t0\t1\t" in client.admin("show jobs"),
                what="the requeue",
            )
            # Commits run in order: once a later deletion is visible, no deletion of the
            # requeued job's row can still be on its way.
            with Peer(server.address) as worker:
                worker.send(P.CAN_DO, b"other")
                worker.send(P.WORK_COMPLETE, grab(worker).args[0], b"")
                wait_until(lambda: not stored(b"other"), what="the later deletion")
            assert [row[0] for row in stored(b"retry")] == [b"u-retry"]

            # The second loss uses up --job-retries 2 (two runs, as in gearmand): the job is
            # dropped and so is its row.
            with Peer(server.address) as doomed:
                doomed.send(P.CAN_DO, b"retry")
                assert grab(doomed).args[2] == b"u-retry"
            wait_until(lambda: not stored(b"retry"), what="the dropped job's row to leave")
            assert table(db) == []
            # The cancelled job, alone in its queue, was let go at once (gearmand would list it,
            # ignored, until a worker met it): no job is left, and no row.
            assert client.admin("show jobs") == b".\n"
        assert "Dropped job due to max retry count" in server.log()
    finally:
        assert server.stop() == 0


# ---------------------------------------------------------------------- 3. replay fidelity


FUNCTIONS = (b"resize-image", b"send mail", b"\xff\xfe")
HELD = b"held"


def replay_jobs(when: int) -> list[tuple[P, bytes, bytes, bytes, int]]:
    """(packet, function, unique, data, priority) in submission order; data is unique per job."""
    hyphen, space, binary = FUNCTIONS
    return [
        (P.SUBMIT_JOB_LOW_BG, hyphen, b"low-1", b"low \x00 one", LOW),
        (P.SUBMIT_JOB_BG, space, b"normal-1", b"normal one", NORMAL),
        (P.SUBMIT_JOB_LOW_BG, binary, b"", b"\xff\x00 low, no unique", LOW),
        (P.SUBMIT_JOB_HIGH_BG, hyphen, b"high-1", b"high one", HIGH),
        (P.SUBMIT_JOB_BG, hyphen, b"", b"normal, no unique", NORMAL),
        (P.SUBMIT_JOB_HIGH_BG, binary, b"high-bin", b"\xfe\xff high bin", HIGH),
        (P.SUBMIT_JOB_BG, hyphen, b"-", b"payload is the key A", NORMAL),
        (P.SUBMIT_JOB_BG, hyphen, b"-", b"payload is the key B", NORMAL),
        (P.SUBMIT_JOB_BG, space, b"with space unique", b"normal two", NORMAL),
        (P.SUBMIT_JOB_EPOCH, space, b"later", b"due later", NORMAL),
        (P.SUBMIT_JOB_LOW_BG, space, b"resubmit-me", b"resubmitted", LOW),
        (P.SUBMIT_JOB_HIGH_BG, space, b"", b"high, no unique", HIGH),
        # Held by a worker when the server stops: it runs again (case 25).
        (P.SUBMIT_JOB_HIGH_BG, HELD, b"in-flight", b"held by a worker", HIGH),
    ]


@pytest.mark.parametrize(
    ("sig", "exit_code"),
    [(signal.SIGTERM, 0), (signal.SIGKILL, -signal.SIGKILL)],
    ids=["sigterm", "sigkill"],
)
def test_replay_keeps_priority_unique_epoch_and_exact_bytes(
    tmp_path: Path, sig: int, exit_code: int
) -> None:
    db = tmp_path / "q.sqlite3"
    when = int(time.time()) + 5
    jobs = replay_jobs(when)
    server = sqlite_server(tmp_path, db)
    try:
        with Peer(server.address) as client, Peer(server.address) as holder:
            for kind, function, unique, data, _priority in jobs:
                submit(client, kind, function, unique, data, when)
            holder.send(P.CAN_DO, HELD)
            assert grab(holder).args[2] == b"in-flight"
            rows = table(db)
            assert len(rows) == len(jobs)
            assert [row[4] for row in rows if row[3] == b"due later"] == [when]
            # SIGTERM: a clean exit, not delayed by the epoch timer nor the held job.
            assert server.stop(sig) == exit_code
            assert holder.closed_within(5)

        server.start()
        assert f"{len(jobs)} jobs replayed" in server.log()
        with Peer(server.address) as client, Peer(server.address) as worker:
            listed = client.admin("show jobs").splitlines()
            assert listed[-1] == b"." and len(listed) == len(jobs) + 1
            handles = {line.split(b"\t")[0] for line in listed[:-1]}
            assert all(line.split(b"\t")[1:4] == [b"0", b"0", b"1"] for line in listed[:-1])

            # Resubmitting a replayed unique coalesces onto the replayed job: no QUEUE_ERROR,
            # no JOB_EXISTS, no second row (gearmand #80, #157, #216).
            resubmitted = submit(
                client, P.SUBMIT_JOB_LOW_BG, FUNCTIONS[1], b"resubmit-me", b"resubmitted"
            )
            assert resubmitted in handles
            assert [row[0] for row in table(db)].count(b"resubmit-me") == 1
            assert client.admin("show jobs").count(b"\n") == len(jobs) + 1

            for function in (*FUNCTIONS, HELD):
                worker.send(P.CAN_DO, function)
            assigned: list[tuple[bytes, bytes, bytes, bytes, float]] = []
            deadline = time.monotonic() + 20
            while len(assigned) < len(jobs):
                assert time.monotonic() < deadline, f"only {len(assigned)} jobs came back"
                packet = grab(worker)
                if packet.type == P.NO_JOB:
                    # Only the epoch job is left and it is not due: sleep until woken.
                    worker.send(P.PRE_SLEEP)
                    worker.expect(P.NOOP, timeout=when - time.time() + 5)
                    continue
                handle, function, unique, data = packet.args
                assigned.append((handle, function, unique, data, time.time()))
                worker.send(P.WORK_COMPLETE, handle, b"")
            assert grab(worker).type == P.NO_JOB
            wait_until(lambda: table(db) == [], what="every finished row to leave")
    finally:
        server.stop()

    # Exact bytes: function, unique (empty stays empty, "-" stays "-") and data.
    expected = {(function, unique, data) for _, function, unique, data, _ in jobs}
    assert {(f, u, d) for _, f, u, d, _ in assigned} == expected
    assert len(assigned) == len(expected)
    # Priority is kept: every HIGH job before any NORMAL one, every NORMAL before any LOW.
    priority_of = {data: priority for _, _, _, data, priority in jobs}
    epoch = [a for a in assigned if a[3] == b"due later"]
    not_epoch = [a for a in assigned if a[3] != b"due later"]
    priorities = [priority_of[data] for _, _, _, data, _ in not_epoch]
    assert priorities == sorted(priorities), [(u, d) for _, _, u, d, _ in assigned]
    # Within one function and priority, the submission order is kept.
    for function in FUNCTIONS:
        for priority in (HIGH, NORMAL, LOW):
            submitted = [
                d for _, f, _, d, p in jobs if f == function and p == priority and d != b"due later"
            ]
            ran = [d for _, f, _, d, _ in not_epoch if f == function and priority_of[d] == priority]
            assert ran == submitted
    # The epoch job kept its due time: it was not handed out before it.
    assert len(epoch) == 1 and epoch[0][4] >= when
    assert [a[2] for a in assigned if a[0] == resubmitted] == [b"resubmit-me"]


# ---------------------------------------------------------------------- 4. crash test


CRASH_FUNCTION = b"crash-test"
#: A worker confirms its finished jobs after this many (and whenever it runs out of work).
CONFIRM_EVERY = 10
#: Clients hold back while this many acknowledged jobs wait, so the queue drains in time.
MAX_BACKLOG = 1000


class CrashRecord:
    """What the test's clients were told and what its workers ran, shared between threads.

    A worker learns that the deletions of the jobs it finished are committed by submitting a
    job of its own on the same connection: the server handles a connection's packets in order
    and runs one store commit at a time, so the JOB_CREATED of that submission comes after the
    commit that holds every deletion queued before it. Runs not confirmed that way when the
    server is killed are "in flight" and may run again; confirmed ones never may.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.submitted: set[bytes] = set()
        self.acked: set[bytes] = set()
        self.runs: collections.Counter[bytes] = collections.Counter()
        #: Runs (unique, nth run) whose deletion is not known to be committed.
        self.unconfirmed: set[tuple[bytes, int]] = set()
        self.confirmed: set[bytes] = set()
        self.rerun_after_confirmation: list[bytes] = []
        self.in_flight_at_kills = 0
        self.refused = 0
        self.bad_payloads: list[tuple[bytes, bytes]] = []
        self.errors: list[BaseException] = []

    def kill(self, server: ServerProcess, workers: int) -> None:
        """SIGKILL the server and count the runs in flight at that moment."""
        with self.lock:  # no run is noted or confirmed meanwhile
            assert server.stop(signal.SIGKILL) == -signal.SIGKILL
            # Each worker may also hold one job it was assigned but has not noted yet.
            self.in_flight_at_kills += len(self.unconfirmed) + workers
            self.unconfirmed.clear()


def crash_client(
    address: tuple[str, int], number: int, window: int, record: CrashRecord, stop: threading.Event
) -> None:
    """Pipeline up to ``window`` background submissions; note each one that got JOB_CREATED."""
    sequence = 0
    while not stop.is_set():
        peer = connect(address, stop)
        if peer is None:
            return
        outstanding: collections.deque[bytes] = collections.deque()
        try:
            while not stop.is_set():
                while len(outstanding) < window:
                    if len(record.acked) - len(record.runs) > MAX_BACKLOG and outstanding:
                        break  # let the workers catch up
                    unique = b"c%d-%d" % (number, sequence)
                    sequence += 1
                    with record.lock:
                        record.submitted.add(unique)
                    peer.send(P.SUBMIT_JOB_BG, CRASH_FUNCTION, unique, unique)
                    outstanding.append(unique)
                packet = peer.recv(10)
                unique = outstanding.popleft()  # replies come in request order
                if packet.type == P.JOB_CREATED:
                    with record.lock:
                        record.acked.add(unique)
                else:
                    assert packet.type == P.ERROR, packet
                    with record.lock:
                        record.refused += 1
        except (OSError, AssertionError):
            pass  # the server was killed: outstanding submissions may or may not exist
        except BaseException as exc:  # pragma: no cover - reported by the test
            record.errors.append(exc)
            return
        finally:
            peer.close()


def crash_worker(
    address: tuple[str, int], number: int, record: CrashRecord, stop: threading.Event
) -> None:
    """Run every job handed out and complete it at once, noting each run and confirming
    every CONFIRM_EVERY of them (see CrashRecord)."""
    sequence = 0

    def confirm(peer: Peer, ran: list[tuple[bytes, int]]) -> None:
        nonlocal sequence
        unique = b"w%d-%d" % (number, sequence)
        sequence += 1
        with record.lock:
            record.submitted.add(unique)
        peer.send(P.SUBMIT_JOB_BG, CRASH_FUNCTION, unique, unique)
        packet = peer.recv(10)
        while packet.type == P.NOOP:
            packet = peer.recv(10)
        if packet.type == P.JOB_CREATED:
            with record.lock:
                record.acked.add(unique)
                for run in ran:
                    record.unconfirmed.discard(run)
                    record.confirmed.add(run[0])
            ran.clear()

    while not stop.is_set():
        peer = connect(address, stop)
        if peer is None:
            return
        ran: list[tuple[bytes, int]] = []  # runs on this connection not yet confirmed
        try:
            peer.send(P.CAN_DO, CRASH_FUNCTION)
            while not stop.is_set():
                if len(ran) >= CONFIRM_EVERY:
                    confirm(peer, ran)
                packet = grab(peer)
                if packet.type == P.NO_JOB:
                    # Out of work: confirm, unless only confirmation jobs ran (confirming
                    # those would make one more, and the two workers would never stop).
                    if any(not unique.startswith(b"w") for unique, _ in ran):
                        confirm(peer, ran)
                        continue
                    peer.send(P.PRE_SLEEP)
                    if not peer.nothing_within(0.2):
                        peer.pending.clear()  # the NOOP
                    continue
                handle, _function, unique, data = packet.args
                with record.lock:
                    if unique in record.confirmed:
                        record.rerun_after_confirmation.append(unique)
                    record.runs[unique] += 1
                    run = (unique, record.runs[unique])
                    record.unconfirmed.add(run)
                    if data != unique:
                        record.bad_payloads.append((unique, data))
                ran.append(run)
                peer.send(P.WORK_COMPLETE, handle, b"")
        except (OSError, AssertionError):
            pass
        except BaseException as exc:  # pragma: no cover - reported by the test
            record.errors.append(exc)
            return
        finally:
            peer.close()


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_acknowledged_job(tmp_path: Path) -> None:
    kills, clients, window, workers = 20, 2, 16, 2
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    db = tmp_path / "q.sqlite3"
    server = sqlite_server(tmp_path, db, "--verbose", "NOTICE")
    address = server.address
    record = CrashRecord()
    stop_clients, stop_workers = threading.Event(), threading.Event()
    threads = [
        threading.Thread(target=crash_client, args=(address, n, window, record, stop_clients))
        for n in range(clients)
    ] + [
        threading.Thread(target=crash_worker, args=(address, n, record, stop_workers))
        for n in range(workers)
    ]
    for thread in threads:
        thread.start()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.2, 1.0))
            record.kill(server, workers)
            server.start()
        time.sleep(0.5)
        stop_clients.set()
        for thread in threads[:clients]:
            thread.join(15)
            assert not thread.is_alive()

        def drained() -> bool:
            with record.lock:
                ran = set(record.runs)
            return record.acked <= ran and table(db) == []

        try:
            wait_until(drained, timeout=30, what="the workers to drain the queue")
        except AssertionError:
            with record.lock:
                missing = record.acked - set(record.runs)
            rows = table(db)
            raise AssertionError(
                f"not drained: {len(missing)} acknowledged jobs not run (e.g."
                f" {sorted(missing)[:5]}), {len(rows)} rows left (e.g. {rows[:3]}),"
                f" {sum(record.runs.values())} runs"
            ) from None
        stop_workers.set()
        for thread in threads[clients:]:
            thread.join(15)
            assert not thread.is_alive()
    finally:
        stop_clients.set()
        stop_workers.set()
        for thread in threads:
            thread.join(15)
        code = server.stop()
    assert code == 0
    assert not record.errors, record.errors
    assert not record.bad_payloads
    lost = record.acked - set(record.runs)
    twice = {unique: n for unique, n in record.runs.items() if n > 1}
    extra = sum(n - 1 for n in twice.values())
    print(
        f"\ncrash test (seed {seed}): {kills} kills, {len(record.submitted)} submitted,"
        f" {len(record.acked)} acknowledged, {sum(record.runs.values())} runs,"
        f" {len(twice)} ran more than once ({extra} extra runs),"
        f" {record.in_flight_at_kills} in flight at the kills, {len(lost)} lost,"
        f" {record.refused} refused"
    )
    assert len(record.acked) >= 1000, "too few jobs to prove anything"
    assert not lost, f"{len(lost)} acknowledged jobs never ran, e.g. {sorted(lost)[:5]}"
    assert set(record.runs) <= record.submitted
    # A job whose deletion was committed never runs again; only jobs in flight at a kill do.
    assert not record.rerun_after_confirmation, record.rerun_after_confirmation[:5]
    assert extra <= record.in_flight_at_kills


# ---------------------------------------------------------------------- 5, 6. refusing to start


def test_second_server_on_the_same_file_refuses_to_start(tmp_path: Path) -> None:
    db = tmp_path / "q.sqlite3"
    first = sqlite_server(tmp_path, db)
    try:
        port = free_port()
        result = run_cli(
            "server", "--port", str(port), "--store", f"sqlite:///{db}", "--log-file", "stderr"
        )
        assert result.returncode != 0
        assert "another gearsql server" in result.stderr
        assert first.proc is not None and f"pid {first.proc.pid}" in result.stderr
        assert "listening" not in result.stderr
        # The first server is not disturbed.
        with Peer(first.address) as client:
            submit(client, P.SUBMIT_JOB_BG, b"f", b"still-mine", b"x")
            assert uniques(db) == [b"still-mine"]
    finally:
        assert first.stop() == 0


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("missing-directory", "nodir does not exist; create the directory first"),
        ("under-a-file", "a-file is not a directory"),
        ("proc", "cannot start: cannot open SQLite queue /proc/q.db"),
    ],
)
def test_unusable_store_location_stops_the_server_before_it_listens(
    tmp_path: Path, where: str, message: str
) -> None:
    if where == "missing-directory":
        url = f"sqlite:///{tmp_path}/nodir/q.db"
    elif where == "under-a-file":
        (tmp_path / "a-file").write_text("not a directory")
        url = f"sqlite:///{tmp_path}/a-file/q.db"
    else:  # the directory exists, but no file can be made in it
        url = "sqlite:////proc/q.db"
    port = free_port()
    result = run_cli("server", "--port", str(port), "--store", url, "--log-file", "stderr")
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stderr
    # Only the default state directory is ever created.
    assert not (tmp_path / "nodir").exists()
    # Never run silently without persistence (case 22): nothing answers on the port.
    with pytest.raises(OSError):
        Peer(("127.0.0.1", port), timeout=1).close()


# ---------------------------------------------------------------------- 7. disk full


def test_full_store_refuses_background_jobs_and_recovers_once_drained(tmp_path: Path) -> None:
    db = tmp_path / "q.sqlite3"
    server = ServerProcess(
        "gearsql", tmp_path / "gearsql.log", ["--store", f"sqlite:///{db}?max_size=256KB"]
    ).start()
    payload = b"x" * 10_240
    try:
        with Peer(server.address) as client:
            accepted: list[bytes] = []
            refused = None
            for number in range(200):
                unique = b"big-%d" % number
                client.send(P.SUBMIT_JOB_BG, b"big", unique, payload)
                packet = client.recv()
                if packet.type == P.JOB_CREATED:
                    accepted.append(unique)
                    continue
                assert packet.type == P.ERROR and packet.args[0] == b"QUEUE_ERROR", packet
                refused = unique
                break
            assert refused is not None, "the 256 KB cap was never reached"
            assert len(accepted) >= 5
            # Everything acknowledged is stored; the refused job is not, and not queued.
            assert uniques(db) == accepted
            assert client.admin("status") == b"big\t%d\t0\t0\n.\n" % len(accepted)

            # Still full: the next one is refused too, and the server keeps serving.
            client.send(P.SUBMIT_JOB_BG, b"big", refused, payload)
            assert client.expect(P.ERROR).args[0] == b"QUEUE_ERROR"
            client.send(P.ECHO_REQ, b"alive")
            assert client.expect(P.ECHO_RES).args == (b"alive",)

            # Foreground jobs need no store and keep working.
            with Peer(server.address) as worker:
                worker.send(P.CAN_DO, b"fg")
                handle = submit(client, P.SUBMIT_JOB, b"fg", b"", b"foreground input")
                packet = grab(worker)
                assert packet.args[0] == handle and packet.args[3] == b"foreground input"
                worker.send(P.WORK_COMPLETE, handle, b"foreground result")
                assert client.expect(P.WORK_COMPLETE).args == (handle, b"foreground result")

                # A worker drains the stored jobs; their rows leave and free the space.
                worker.send(P.CAN_DO, b"big")
                drained = []
                for _ in accepted:
                    packet = grab(worker)
                    drained.append(packet.args[2])
                    worker.send(P.WORK_COMPLETE, packet.args[0], b"")
                assert drained == accepted
                wait_until(lambda: table(db) == [], what="the drained rows to leave")

            # Background submissions succeed again, the refused unique among them.
            submit(client, P.SUBMIT_JOB_BG, b"big", refused, payload)
            submit(client, P.SUBMIT_JOB_BG, b"big", b"after", payload)
            assert uniques(db) == [refused, b"after"]
    finally:
        assert server.stop() == 0


def test_full_store_commits_deletions_even_when_submissions_fail_with_them(
    tmp_path: Path,
) -> None:
    """A finished job's deletion that shares a transaction with a submission that does not
    fit must still be committed: it is what frees the space. Otherwise clients that retry on
    QUEUE_ERROR keep the queue full for as long as they retry."""
    db = tmp_path / "q.sqlite3"
    server = ServerProcess(
        "gearsql", tmp_path / "gearsql.log", ["--store", f"sqlite:///{db}?max_size=256KB"]
    ).start()
    payload = b"y" * 10_240
    try:
        with Peer(server.address) as peer:
            for number in range(200):
                peer.send(P.SUBMIT_JOB_BG, b"big", b"fill-%d" % number, payload)
                if peer.recv().type == P.ERROR:
                    break
            else:
                pytest.fail("the 256 KB cap was never reached")
            # One connection is worker and client at once: the completion and a new
            # submission arrive in one write, so they go to the store in one commit.
            peer.send(P.CAN_DO, b"big")
            finished = grab(peer)
            assert finished.args[2] == b"fill-0"
            peer.send_raw(
                pack_request(P.WORK_COMPLETE, finished.args[0], b"")
                + pack_request(P.SUBMIT_JOB_BG, b"big", b"retry", payload)
            )
            reply = peer.recv()
            if reply.type == P.ERROR:
                assert reply.args[0] == b"QUEUE_ERROR"
                # The client retries at once; the finished job's row is gone by now.
                assert b"fill-0" not in uniques(db)
                peer.send(P.SUBMIT_JOB_BG, b"big", b"retry", payload)
                reply = peer.recv()
            assert reply.type == P.JOB_CREATED, reply
            assert b"fill-0" not in uniques(db) and b"retry" in uniques(db)
    finally:
        assert server.stop() == 0


# ---------------------------------------------------------------------- 8. default store


@pytest.fixture
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """HOME and XDG_STATE_HOME in the test's own directory (child processes inherit them)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    yield tmp_path / "state"


def test_default_store_keeps_jobs_across_a_restart(tmp_path: Path, state_home: Path) -> None:
    db = state_home / "gearsql" / "queue.sqlite3"
    server = ServerProcess("gearsql", tmp_path / "gearsql.log").start()  # no --store
    try:
        assert f"store: sqlite {db}" in server.log()
        with Peer(server.address) as client:
            submit(client, P.SUBMIT_JOB_HIGH_BG, b"kept", b"kept-1", b"survives")
        assert uniques(db) == [b"kept-1"]
        assert server.stop(signal.SIGTERM) == 0
        server.start()
        assert "1 jobs replayed" in server.log()
        with Peer(server.address) as worker:
            worker.send(P.CAN_DO, b"kept")
            packet = grab(worker)
            assert packet.args[1:] == (b"kept", b"kept-1", b"survives")
            worker.send(P.WORK_COMPLETE, packet.args[0], b"")
            wait_until(lambda: table(db) == [], what="the finished row to leave")
    finally:
        assert server.stop() == 0


def test_help_shows_the_default_store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    result = run_cli("server", "--help")
    assert result.returncode == 0
    # An absolute path, so four slashes (sqlite:///relative.db, sqlite:////absolute.db).
    expected = f"sqlite:///{tmp_path}/home/.local/state/gearsql/queue.sqlite3"
    # click wraps the help text, even inside the path.
    assert expected in "".join(result.stdout.split())
