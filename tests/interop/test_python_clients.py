"""PyPI's `gear` and `gearman3` clients and workers against a real job server."""

from __future__ import annotations

import array
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import ServerProcess, need_module

from .probe import TIMEOUT, wait_for_status_line, wait_until

gear = need_module("gear", "PyPI's gear")
gearman = need_module("gearman", "PyPI's gearman3")
need_module("gearman.connection", "PyPI's gearman3")

pytestmark = pytest.mark.interop

# gear 0.16 calls Condition.notifyAll(), deprecated since Python 3.10; the suite turns warnings
# into errors, so the gear tests let this one through.
gear_notifyall = pytest.mark.filterwarnings(
    r"ignore:notifyAll\(\) is deprecated:DeprecationWarning"
)


# --- gear -------------------------------------------------------------------------------------


@contextmanager
def gear_client(server: ServerProcess) -> Iterator[gear.Client]:
    client = gear.Client("interop-client")
    try:
        client.addServer(server.host, server.port)
        client.waitForServer(TIMEOUT)
        yield client
    finally:
        shut_down_gear(client)


def shut_down_gear(peer: gear.Client | gear.Worker) -> None:
    """Shut down a gear client or worker without leaking its sockets.

    gear stops its poll thread before stopWaitingForJobs() waits (up to 5 s) for GRAB_WAIT
    connections; the awaited NO_JOB is then never read, the connection is marked lost and its
    socket is never closed. A worker's NO_JOB can take ~40 ms (gear leaves Nagle on, so its
    GRAB_JOB_UNIQ sits behind the server's delayed ACK), so wait for it first, and close every
    connection afterwards in any case.
    """
    connections = peer.active_connections + peer.inactive_connections
    try:
        wait_until(
            lambda: all(conn.state != "GRAB_WAIT" for conn in peer.active_connections),
            "the gear worker's GRAB_JOB_UNIQ to be answered",
        )
    finally:
        peer.shutdown()
        for conn in connections:
            conn.disconnect()


@contextmanager
def gear_worker(
    server: ServerProcess, function: str, handle: Callable[[gear.WorkerJob], None]
) -> Iterator[list[gear.WorkerJob]]:
    """A gear.Worker whose thread passes every job to `handle`; yields the jobs handled so far."""
    worker = gear.Worker("interop-worker")
    handled: list[gear.WorkerJob] = []

    def serve() -> None:
        while True:
            try:
                job = worker.getJob()
            except gear.InterruptedError:
                return
            handle(job)
            handled.append(job)

    thread = threading.Thread(target=serve, name="gear-worker", daemon=True)
    try:
        worker.addServer(server.host, server.port)
        worker.waitForServer(TIMEOUT)
        worker.registerFunction(function)
        thread.start()
        yield handled
    finally:
        shut_down_gear(worker)
        if thread.is_alive():
            thread.join(TIMEOUT)
        assert not thread.is_alive(), "gear worker thread did not stop"


def submit_gear_job(client: gear.Client, job: gear.Job, **options: Any) -> gear.Job:
    client.submitJob(job, timeout=TIMEOUT, **options)
    assert job.handle, "no JOB_CREATED for the submitted job"
    return job


@gear_notifyall
def test_gear_client_receives_data_status_and_result_from_gear_worker(
    any_server: ServerProcess,
) -> None:
    def reverse(job: gear.WorkerJob) -> None:
        job.sendWorkData(b"halfway")
        job.sendWorkStatus(1, 2)
        job.sendWorkComplete(job.arguments[::-1])

    with gear_client(any_server) as client, gear_worker(any_server, "gear_reverse", reverse):
        job = submit_gear_job(client, gear.Job("gear_reverse", b"stressed"))
        wait_until(lambda: job.complete, "the gear job to complete")

    assert not job.failure
    assert job.data == [b"halfway", b"desserts"]
    assert (job.numerator, job.denominator) == (b"1", b"2")


@gear_notifyall
def test_gear_background_job_is_run_by_gear_worker(any_server: ServerProcess) -> None:
    with gear_client(any_server) as client:
        job = submit_gear_job(client, gear.Job("gear_later", b"detached"), background=True)
        wait_for_status_line(any_server.address, "gear_later\t1\t0\t0")

        with gear_worker(any_server, "gear_later", lambda j: j.sendWorkComplete(b"ok")) as done:
            wait_until(lambda: len(done) == 1, "the gear worker to finish the job")
            wait_for_status_line(any_server.address, "gear_later\t0\t0\t1")

    assert done[0].handle == job.handle
    assert done[0].arguments == b"detached"
    assert not job.complete, "a background submitter must not get WORK_COMPLETE"


@gear_notifyall
def test_gear_work_fail_marks_the_client_job_failed(any_server: ServerProcess) -> None:
    with (
        gear_client(any_server) as client,
        gear_worker(any_server, "gear_fails", lambda j: j.sendWorkFail()),
    ):
        job = submit_gear_job(client, gear.Job("gear_fails", b"doomed"))
        wait_until(lambda: job.complete, "the gear job to fail")

    assert job.failure
    assert job.data == []


@gear_notifyall
def test_gear_foreground_jobs_with_the_same_unique_share_one_run(
    any_server: ServerProcess,
) -> None:
    with gear_client(any_server) as first_client, gear_client(any_server) as second_client:
        first = submit_gear_job(first_client, gear.Job("gear_shared", b"one", unique="same-key"))
        second = submit_gear_job(second_client, gear.Job("gear_shared", b"two", unique="same-key"))
        assert second.handle == first.handle
        wait_for_status_line(any_server.address, "gear_shared\t1\t0\t0")

        def finish(job: gear.WorkerJob) -> None:
            job.sendWorkComplete(b"result for " + job.arguments)

        with gear_worker(any_server, "gear_shared", finish) as done:
            wait_until(lambda: first.complete and second.complete, "both clients to get results")
            wait_for_status_line(any_server.address, "gear_shared\t0\t0\t1")

    assert len(done) == 1
    assert done[0].unique == b"same-key"
    assert first.data == second.data == [b"result for one"]


# --- gearman3 ---------------------------------------------------------------------------------


class ReceiveBuffer(array.array):  # type: ignore[type-arg]
    """gearman3's receive buffer with array.fromstring(), which Python 3.9 removed, put back.

    Slices stay ReceiveBuffers, because gearman3 replaces its buffer with a slice of itself
    after every packet it parses.
    """

    def fromstring(self, data: bytes) -> None:
        self.frombytes(data)

    def __getitem__(self, index: Any) -> Any:
        item = super().__getitem__(index)
        return ReceiveBuffer(self.typecode, item) if isinstance(index, slice) else item


@pytest.fixture
def gearman3(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The gearman3 package, with its one Python 3.9+ incompatibility patched for this test."""
    monkeypatch.setattr(gearman.connection, "array", SimpleNamespace(array=ReceiveBuffer))
    return SimpleNamespace(Client=gearman.GearmanClient, Worker=StoppableGearman3Worker)


class StoppableGearman3Worker(gearman.GearmanWorker):  # type: ignore[misc]
    """A GearmanWorker whose work() loop ends once `stop` is set."""

    def __init__(self, host_list: list[str]):
        super().__init__(host_list)
        self.stop = threading.Event()

    def after_poll(self, any_activity: bool) -> bool:
        return not self.stop.is_set()


def server_list(server: ServerProcess) -> list[str]:
    return [f"{server.host}:{server.port}"]


@contextmanager
def gearman3_client(server: ServerProcess) -> Iterator[gearman.GearmanClient]:
    client = gearman.GearmanClient(server_list(server))
    try:
        yield client
    finally:
        client.shutdown()


@contextmanager
def gearman3_worker(
    server: ServerProcess, function: bytes, callback: Callable[[Any, Any], bytes]
) -> Iterator[None]:
    """A gearman3 worker running `callback(worker, job)` in a thread (function name as bytes)."""
    worker = StoppableGearman3Worker(server_list(server))
    worker.register_task(function, callback)
    thread = threading.Thread(
        target=worker.work, kwargs={"poll_timeout": 0.1}, name="gearman3-worker", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        worker.stop.set()
        thread.join(TIMEOUT)
        worker.shutdown()
        assert not thread.is_alive(), "gearman3 worker thread did not stop"


def test_gearman3_client_receives_data_status_and_result_from_gearman3_worker(
    any_server: ServerProcess, gearman3: SimpleNamespace
) -> None:
    def shout(worker: Any, job: Any) -> bytes:
        worker.send_job_data(job, b"warming up")
        worker.send_job_status(job, 3, 4)
        return bytes(job.data).upper()

    with gearman3_client(any_server) as client, gearman3_worker(any_server, b"g3_shout", shout):
        request = client.submit_job(b"g3_shout", b"quiet please", poll_timeout=TIMEOUT)

    assert not request.timed_out
    assert request.state == gearman.constants.JOB_COMPLETE
    assert request.result == b"QUIET PLEASE"
    assert list(request.data_updates) == [b"warming up"]
    assert (request.status["numerator"], request.status["denominator"]) == (3, 4)


def test_gearman3_background_job_is_run_by_gearman3_worker(
    any_server: ServerProcess, gearman3: SimpleNamespace
) -> None:
    seen: list[tuple[bytes, bytes]] = []

    def record(worker: Any, job: Any) -> bytes:
        seen.append((job.handle, job.data))
        return b""

    with gearman3_client(any_server) as client:
        request = client.submit_job(
            b"g3_later", b"fire and forget", background=True, poll_timeout=TIMEOUT
        )
        assert request.state == gearman.constants.JOB_CREATED
        wait_for_status_line(any_server.address, "g3_later\t1\t0\t0")

        with gearman3_worker(any_server, b"g3_later", record):
            wait_until(lambda: seen, "the gearman3 worker to run the job")
            wait_for_status_line(any_server.address, "g3_later\t0\t0\t1")

    assert seen == [(request.job.handle, b"fire and forget")]


def test_gearman3_worker_exception_fails_the_client_request(
    any_server: ServerProcess, gearman3: SimpleNamespace
) -> None:
    def explode(worker: Any, job: Any) -> bytes:
        raise RuntimeError("the handler broke")  # gearman3 turns this into WORK_FAIL

    with gearman3_client(any_server) as client, gearman3_worker(any_server, b"g3_boom", explode):
        request = client.submit_job(b"g3_boom", b"anything", poll_timeout=TIMEOUT)

    assert not request.timed_out
    assert request.state == gearman.constants.JOB_FAILED
    assert request.result is None


@gear_notifyall
def test_gearman3_client_unique_and_payload_reach_a_gear_worker(
    any_server: ServerProcess, gearman3: SimpleNamespace
) -> None:
    def echo_unique(job: gear.WorkerJob) -> None:
        job.sendWorkComplete(job.unique + b":" + job.arguments)

    with gearman3_client(any_server) as client, gear_worker(any_server, "mixed", echo_unique):
        request = client.submit_job(
            b"mixed", b"\x00binary\xffpayload", unique=b"order-42", poll_timeout=TIMEOUT
        )

    assert request.state == gearman.constants.JOB_COMPLETE
    assert request.result == b"order-42:\x00binary\xffpayload"
