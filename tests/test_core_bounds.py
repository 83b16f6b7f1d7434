"""What a client cannot make the core keep (docs/reliability.md cases 42, 43, 46), without sockets.

The same bounds are measured against a real server process in ``tests/test_hostile.py``.
"""

from __future__ import annotations

import sys

import pytest
from coredriver import CoreDriver

from gearsql.core import JobState
from gearsql.protocol import PacketType as P

NO_JOB = (P.NO_JOB, ())


@pytest.fixture
def d() -> CoreDriver:
    return CoreDriver()


def test_a_function_is_forgotten_when_its_last_worker_leaves_and_no_job_is_left(
    d: CoreDriver,
) -> None:
    names = [b"f%d" % n for n in range(100)]
    workers = [d.worker(*names) for _ in range(2)]
    assert len(d.core.functions) == 100
    d.core.disconnect(workers[0])
    assert len(d.core.functions) == 100  # the other worker still does them
    d.send(workers[1], P.CANT_DO, b"f0")
    d.send(workers[1], P.RESET_ABILITIES)
    assert d.core.functions == {}


def test_a_function_with_a_queued_job_or_a_maxqueue_limit_is_kept(d: CoreDriver) -> None:
    client, admin = d.connect(), d.connect()
    d.submit(client, b"queued", type_=P.SUBMIT_JOB_BG)
    assert d.admin(admin, b"create function limited") == b"OK\r\n"
    assert d.admin(admin, b"maxqueue limited 5") == b"OK\r\n"
    worker = d.worker(b"queued", b"limited")
    d.core.disconnect(worker)
    assert set(d.core.functions) == {b"queued", b"limited"}
    handle = d.grab_handle(d.worker(b"queued"))
    assert d.core.jobs[handle].state is JobState.RUNNING


def test_a_function_is_forgotten_when_its_last_job_finishes(d: CoreDriver) -> None:
    client, worker = d.connect(), d.worker(b"f")
    handle = d.submit(client, b"f")
    assert d.grab_handle(worker) == handle
    d.send(worker, P.CANT_DO, b"f")
    assert b"f" in d.core.functions  # running
    d.send(worker, P.WORK_COMPLETE, handle, b"done")
    assert d.received(client) == [(P.WORK_COMPLETE, (handle, b"done"))]
    assert d.core.functions == {} and d.core.jobs == {}


def test_max_functions_refuses_a_new_function_with_an_error_and_a_notice() -> None:
    d = CoreDriver(max_functions=2)
    worker, client = d.worker(b"a", b"b"), d.connect()
    d.send(worker, P.CAN_DO, b"c")
    refusal = (P.ERROR, (b"TOO_MANY_FUNCTIONS", b"Too many functions (limit 2)"))
    assert d.received(worker) == [refusal]
    d.send(client, P.SUBMIT_JOB, b"c", b"", b"data")
    assert d.received(client) == [refusal]
    assert [n.key for n in d.core.take_notices()] == ["max-functions", "max-functions"]
    # Known functions still work, and a freed name makes room for a new one.
    assert d.submit(client, b"a", type_=P.SUBMIT_JOB_BG)
    d.send(worker, P.CANT_DO, b"b")
    d.send(worker, P.CAN_DO, b"c")
    assert d.received(worker) == []
    assert set(d.core.functions) == {b"a", b"c"}


def test_an_abandoned_foreground_job_drops_its_payload_and_is_let_go_with_half_the_queue(
    d: CoreDriver,
) -> None:
    keeper, admin = d.connect(), d.connect()
    live = d.submit(keeper, b"f", data=b"kept")
    leavers = [d.connect() for _ in range(3)]
    handles = [d.submit(leaver, b"f", data=b"x" * 1000) for leaver in leavers]
    d.core.disconnect(leavers[0])
    gone = d.core.jobs[handles[0]]
    assert gone.state is JobState.CANCELLED and gone.data == b""
    assert d.admin(admin, b"status") == b"f\t3\t0\t0\n.\n"
    d.core.disconnect(leavers[1])  # two of four: not yet more than half
    assert set(d.core.jobs) == {live, *handles}
    d.core.disconnect(leavers[2])  # three of four: the queue is compacted
    assert set(d.core.jobs) == {live}
    assert list(d.core.functions[b"f"].queues[1]) == [d.core.jobs[live]]
    assert d.core.functions[b"f"].stale == [0, 0, 0]
    d.core.disconnect(keeper)
    assert d.core.jobs == {} and d.core.functions == {}


def test_many_abandoned_jobs_leave_nothing_behind(d: CoreDriver) -> None:
    for n in range(1000):
        client = d.connect()
        d.submit(client, b"f%d" % (n % 7), data=b"payload")
        d.core.disconnect(client)
    assert d.core.jobs == {} and d.core.functions == {}


def test_a_cancelled_job_met_by_a_worker_leaves_the_stale_count_right(d: CoreDriver) -> None:
    client, admin = d.connect(), d.connect()
    handles = [d.submit(client, b"f", type_=P.SUBMIT_JOB_BG) for _ in range(3)]
    assert d.admin(admin, b"cancel job " + handles[0]) == b"OK\r\n"
    fn = d.core.functions[b"f"]
    assert fn.stale == [0, 1, 0]
    worker = d.worker(b"f")
    assert d.grab_handle(worker) == handles[1]
    assert fn.stale == [0, 0, 0]


@pytest.mark.parametrize("kind", [P.GET_STATUS, P.GET_STATUS_UNIQUE])
def test_get_status_with_a_nul_byte_is_answered_for_the_part_before_it(
    d: CoreDriver, kind: P
) -> None:
    client = d.connect()
    handle = d.submit(client, b"f", unique=b"u1", type_=P.SUBMIT_JOB_BG)
    key = handle if kind == P.GET_STATUS else b"u1"
    d.send(client, kind, key + b"\0trailing")
    [(reply, args)] = d.received(client)
    assert reply == (P.STATUS_RES if kind == P.GET_STATUS else P.STATUS_RES_UNIQUE)
    assert args[:2] == (key, b"1")
    d.send(client, kind, b"\0\0")
    [(_, args)] = d.received(client)
    assert args[:2] == (b"", b"0")


def test_a_plain_queued_job_has_no_extras_and_a_worker_status_gives_it_some(
    d: CoreDriver,
) -> None:
    client, worker = d.connect(), d.worker(b"f")
    handle = d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)
    # Queued packed (tests/test_core_packed.py); looking it up gives it its Job.
    job = d.core.job(handle)
    assert job is not None and d.core.jobs == {handle: job}
    # The fields few jobs need live apart: a plain job is twelve slots.
    assert job.extras is None
    assert sys.getsizeof(job) <= 128
    assert (job.retries, job.error, job.when, job.numerator) == (0, b"", 0, 0)
    assert d.grab_handle(worker) == handle
    d.send(worker, P.WORK_STATUS, handle, b"1", b"4")
    assert job.extras is not None and (job.numerator, job.denominator) == (1, 4)
    d.send(client, P.GET_STATUS, handle)
    assert d.received(client)[-1] == (P.STATUS_RES, (handle, b"1", b"1", b"1", b"4"))


def test_the_handle_and_unique_tables_of_a_deep_queue_are_given_back_once_drained(
    d: CoreDriver,
) -> None:
    client, worker = d.connect(), d.worker(b"f")
    empty = sys.getsizeof({})
    for n in range(5000):
        d.submit(client, b"f", unique=b"u%d" % n, type_=P.SUBMIT_JOB_BG)
    by_unique = d.core.functions[b"f"].by_unique
    assert sys.getsizeof(d.core.jobs) > 100 * empty
    assert sys.getsizeof(by_unique) > 100 * empty
    for _ in range(5000):
        d.send(worker, P.WORK_COMPLETE, d.grab_handle(worker), b"")
    # A dict keeps its table as it empties; the core lets go of it when the last job goes.
    assert d.core.jobs == {} and sys.getsizeof(d.core.jobs) <= empty
    assert by_unique == {} and sys.getsizeof(by_unique) <= empty
