"""How many finished jobs run again after a SIGKILL, with every durable store (docs/reliability.md
case 17).

One worker runs one job at a time and notes every run; the server is SIGKILLed while it drains a
queue of background jobs and started again on the same store. A job whose WORK_COMPLETE the
server had taken in may run again only while its deletion is not committed; the server sends the
worker its next job only after that commit, so each kill can make at most the one job the worker
holds run again. The assertions count runs; they never time anything, so a busy machine can only
make the test slower.
"""

from __future__ import annotations

import collections
import secrets
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from conftest import ServerProcess
from wire import Peer, connect

from gearsql.protocol import PacketType as P

FUNCTION = b"bound"


class Runs:
    """The worker's notes, shared with the test thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: collections.Counter[bytes] = collections.Counter()
        self.errors: list[BaseException] = []

    def total(self) -> int:
        with self.lock:
            return sum(self.runs.values())

    def distinct(self) -> int:
        with self.lock:
            return len(self.runs)

    def reached(self, goal: int) -> Callable[[], bool]:
        """Whether ``goal`` distinct jobs ran."""
        return lambda: self.distinct() >= goal


def one_job_at_a_time(address: tuple[str, int], runs: Runs, stop: threading.Event) -> None:
    """GRAB_JOB_UNIQ, note the run, WORK_COMPLETE; again. Reconnects while the server restarts."""
    while not stop.is_set():
        peer = connect(address, stop)
        if peer is None:
            return
        try:
            peer.send(P.CAN_DO, FUNCTION)
            while not stop.is_set():
                peer.send(P.GRAB_JOB_UNIQ)
                packet = peer.recv(10)
                while packet.type == P.NOOP:
                    packet = peer.recv(10)
                if packet.type == P.NO_JOB:
                    peer.send(P.PRE_SLEEP)
                    if not peer.nothing_within(0.2):
                        peer.pending.clear()  # the NOOP
                    continue
                assert packet.type == P.JOB_ASSIGN_UNIQ, packet
                handle, _function, unique, _data = packet.args
                with runs.lock:
                    runs.runs[unique] += 1
                peer.send(P.WORK_COMPLETE, handle, b"")
        except (OSError, AssertionError):
            pass  # the server was killed
        except BaseException as exc:  # pragma: no cover - reported by the test
            runs.errors.append(exc)
            return
        finally:
            peer.close()


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def rerun_count(server: ServerProcess, jobs: int, kills: int) -> tuple[int, int]:
    """Queue ``jobs`` background jobs, drain them with one worker while SIGKILLing the server
    ``kills`` times, and return (runs beyond the first, jobs in flight at the kills)."""
    with Peer(server.address, timeout=30) as client:
        batch = 200
        for start in range(0, jobs, batch):
            uniques = [b"j%d" % n for n in range(start, min(start + batch, jobs))]
            for unique in uniques:
                client.send(P.SUBMIT_JOB_BG, FUNCTION, unique, unique)
            for _ in uniques:
                client.expect(P.JOB_CREATED, timeout=60)
    runs = Runs()
    stop = threading.Event()
    worker = threading.Thread(target=one_job_at_a_time, args=(server.address, runs, stop))
    worker.start()
    try:
        for _ in range(kills):
            # Kill somewhere in the drain: after the worker ran some jobs on this server run.
            goal = runs.distinct() + max(1, jobs // (2 * (kills + 1)))
            _wait(runs.reached(goal), 120, f"{goal} jobs to run")
            assert server.stop(signal.SIGKILL) == -signal.SIGKILL
            server.start()
        _wait(runs.reached(jobs), 300, f"all {jobs} jobs to run")
    finally:
        stop.set()
        worker.join(15)
    assert not worker.is_alive()
    assert not runs.errors, runs.errors
    assert set(runs.runs) == {b"j%d" % n for n in range(jobs)}
    # One worker, one job at a time: at each kill it holds at most one job.
    return runs.total() - jobs, kills


def _bound(tmp_path: Path, store: str, unconfirmed: int = 1) -> None:
    args = ["--store", store, "--unconfirmed-runs", str(unconfirmed)]
    server = ServerProcess("gearsql", tmp_path / "gearsql.log", args).start()
    try:
        reruns, in_flight = rerun_count(server, jobs=600, kills=3)
    finally:
        code = server.stop()
    assert code == 0
    print(f"\n{reruns} jobs ran again after 3 SIGKILLs ({in_flight} in flight at the kills)")
    # Each kill: the job the worker holds, and up to ``unconfirmed`` finished ones whose
    # removal was not committed yet (the one held counts among them when it is 1).
    assert reruns <= in_flight * unconfirmed


def test_sigkill_reruns_stay_within_the_jobs_in_flight_sqlite(tmp_path: Path) -> None:
    _bound(tmp_path, f"sqlite:///{tmp_path / 'q.sqlite3'}")


def test_sigkill_reruns_stay_within_the_jobs_in_flight_postgresql(
    tmp_path: Path, pg_dsn: str
) -> None:
    _bound(tmp_path, f"{pg_dsn}?table=bound_{secrets.token_hex(3)}")


def test_sigkill_reruns_stay_within_the_jobs_in_flight_mysql(
    tmp_path: Path, mysql_dsn: str
) -> None:
    _bound(tmp_path, f"{mysql_dsn}?table=bound_{secrets.token_hex(3)}")


def test_unconfirmed_runs_widens_the_bound_to_that_many_per_worker(tmp_path: Path) -> None:
    _bound(tmp_path, f"sqlite:///{tmp_path / 'q.sqlite3'}", unconfirmed=4)
