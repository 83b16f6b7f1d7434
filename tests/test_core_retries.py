"""Retries with backoff and dead letters in the sans-IO core, driven packet by packet with a
fake clock (the same behaviours against a real server and each store: ``test_retries.py``)."""

from __future__ import annotations

import pytest
from coredriver import START, CoreDriver

from gearsql._corestate import TRANSITIONS, JobEvent, JobState, RetryPolicy, backoff_delay
from gearsql.protocol import PacketType as P

NO_JOB = (P.NO_JOB, ())


def retrying(
    attempts: int = 3, base: float = 2.0, limit: float = 60.0, **options: object
) -> CoreDriver:
    """A core whose background jobs get ``attempts`` runs, backoff ``base`` doubling to
    ``limit``, and no jitter (the fake random source says 1.0: the full delay)."""
    return CoreDriver(retry_policy=RetryPolicy(attempts, base, limit), **options)


def fail_once(d: CoreDriver, handle: bytes, how: P = P.WORK_FAIL, data: bytes = b"") -> None:
    worker = d.worker(b"f")
    assert d.grab_handle(worker) == handle
    if how == P.WORK_EXCEPTION:
        d.send(worker, how, handle, data)
    else:
        d.send(worker, how, handle)
    d.core.disconnect(worker)


def test_the_lifecycle_table_has_retries_and_dead_letters() -> None:
    assert TRANSITIONS[(JobState.RUNNING, JobEvent.RETRY)] is JobState.RETRYING
    assert TRANSITIONS[(JobState.RETRYING, JobEvent.QUEUE)] is JobState.QUEUED
    assert TRANSITIONS[(JobState.RUNNING, JobEvent.BURY)] is JobState.DEAD
    assert TRANSITIONS[(JobState.DEAD, JobEvent.PURGE)] is JobState.DONE
    # A dead letter never runs by itself: nothing but PURGE leaves DEAD.
    assert [event for state, event in TRANSITIONS if state is JobState.DEAD] == [JobEvent.PURGE]


def test_backoff_doubles_up_to_its_limit_and_jitter_shortens_it_to_half_at_most() -> None:
    policy = RetryPolicy(10, 1.5, 10.0)
    assert [backoff_delay(policy, n, 1.0) for n in range(1, 6)] == [1.5, 3.0, 6.0, 10.0, 10.0]
    assert backoff_delay(policy, 2, 0.0) == 1.5
    assert backoff_delay(policy, 2, 0.5) == 2.25
    assert backoff_delay(policy, 10_000, 1.0) == 10.0  # no overflow after many failures


def test_a_failed_background_job_waits_for_its_backoff_then_runs_again() -> None:
    d = retrying(base=2.0)
    client, admin = d.connect(), d.connect()
    handle = d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)
    fail_once(d, handle)
    assert d.core.jobs[handle].state is JobState.RETRYING
    # It still counts as a live job that will run, but no worker gets it yet.
    assert d.admin(admin, b"status") == b"f\t1\t0\t0\n.\n"
    assert d.admin(admin, b"show jobs") == handle + b"\t1\t0\t1\t1\tretrying\tfailed\n.\n"
    sleeper = d.sleeping_worker(b"f")
    assert d.core.next_deadline() == START + 2.0
    d.clock.advance(1.9)
    d.core.run_timers()
    assert d.received(sleeper) == []
    d.clock.advance(0.1)
    d.core.run_timers()
    assert d.received(sleeper) == [(P.NOOP, ())]
    assert d.grab_handle(sleeper) == handle
    assert d.admin(admin, b"show jobs") == handle + b"\t1\t0\t1\t2\trunning\tfailed\n.\n"
    d.send(sleeper, P.WORK_COMPLETE, handle, b"done")
    assert d.core.jobs == {}
    assert d.core.dead == {}


def test_the_jitter_comes_from_the_injected_random_source() -> None:
    d = retrying(base=4.0, jitter=lambda: 0.0)
    client = d.connect()
    handle = d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)
    fail_once(d, handle)
    assert d.core.next_deadline() == START + 2.0


def test_after_its_last_attempt_a_job_becomes_a_dead_letter_with_its_error() -> None:
    d = retrying(attempts=2, base=1.0)
    client, admin = d.connect(), d.connect()
    handle = d.submit(client, b"f", data=b"work", unique=b"order-1", type_=P.SUBMIT_JOB_BG)
    fail_once(d, handle)
    d.clock.advance(1)
    d.core.run_timers()
    d.core.take_notices()
    fail_once(d, handle, P.WORK_EXCEPTION, b"ValueError: bad\tinput")
    assert d.core.jobs == {}
    # f has no job and no worker left, so it is forgotten; its dead letter is kept.
    assert d.admin(admin, b"status") == b".\n"
    assert d.admin(admin, b"deadstatus") == b"f\t1\n.\n"
    [notice] = d.core.take_notices()
    assert (notice.level, notice.event, notice.handle) == ("WARNING", JobEvent.BURY, handle)
    assert "kept as dead letter 1" in notice.message
    died = int(d.clock.now)
    assert d.admin(admin, b"show dead") == (
        b"1\t" + handle + b"\tf\torder-1\t2\t%d\t4\tValueError:\\x20bad\\x09input\n.\n" % died
    )
    assert d.admin(admin, b"show dead f") == d.admin(admin, b"show dead")
    assert d.admin(admin, b"show dead other") == b".\n"
    assert d.admin(admin, b"deadstatus") == b"f\t1\n.\n"
    # Its unique is free: a new submission runs.
    assert d.submit(client, b"f", unique=b"order-1", type_=P.SUBMIT_JOB_BG) != handle
    assert d.grab(d.worker(b"f"))[0] == P.JOB_ASSIGN


def test_a_lost_worker_is_a_failed_attempt_under_a_retry_policy() -> None:
    d = retrying(attempts=2, base=1.0, job_retries=10)
    client = d.connect()
    handle = d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)
    worker = d.worker(b"f")
    d.grab_handle(worker)
    d.core.disconnect(worker)
    job = d.core.jobs[handle]
    assert (job.state, job.retries, job.error) == (JobState.RETRYING, 1, b"worker lost")
    d.clock.advance(1)
    d.core.run_timers()
    worker = d.worker(b"f")
    d.grab_handle(worker)
    d.core.disconnect(worker)
    [letter] = d.core.dead.values()
    assert (letter.retries, letter.error) == (2, b"worker lost")


def test_a_foreground_failure_goes_to_its_client_and_is_never_retried() -> None:
    d = retrying()
    client = d.connect()
    handle = d.submit(client, b"f")
    fail_once(d, handle)
    assert d.received(client) == [(P.WORK_FAIL, (handle,))]
    assert d.core.jobs == {} and d.core.dead == {}


def test_without_a_policy_a_failed_background_job_is_gone_as_in_gearmand() -> None:
    d = CoreDriver()
    client = d.connect()
    handle = d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)
    fail_once(d, handle)
    assert d.core.jobs == {} and d.core.dead == {}


def test_a_functions_own_policy_overrides_the_server_default() -> None:
    d = CoreDriver()
    client, admin = d.connect(), d.connect()
    assert d.admin(admin, b"retries f") == b"OK 0 1:300 default\n"
    assert d.admin(admin, b"retries f 2 0.5:4") == b"OK\r\n"
    assert d.admin(admin, b"retries f") == b"OK 2 0.5:4\n"
    handle = d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)
    fail_once(d, handle)
    assert d.core.next_deadline() == START + 0.5
    other = d.submit(client, b"g", type_=P.SUBMIT_JOB_BG)
    worker = d.worker(b"g")
    assert d.grab_handle(worker) == other
    d.send(worker, P.WORK_FAIL, other)
    assert other not in d.core.jobs
    assert d.admin(admin, b"retries f default") == b"OK\r\n"
    assert d.admin(admin, b"retries f") == b"OK 0 1:300 default\n"


@pytest.mark.parametrize(
    "line", [b"retries", b"retries f x", b"retries f 2 0", b"retries f 2 5:1", b"retries f 2 a:b"]
)
def test_bad_retries_arguments_are_refused(line: bytes) -> None:
    d = CoreDriver()
    admin = d.connect()
    assert d.admin(admin, line).startswith(b"ERR INVALID_ARGUMENTS ")
    assert d.core.retry_policies == {}


@pytest.mark.parametrize(
    "line", [b"retries f 3", b"retry dead all", b"purge dead all", b"retry dead 1"]
)
def test_untrusted_sessions_may_not_change_retries_or_dead_letters(line: bytes) -> None:
    d = retrying(attempts=1)
    client = d.connect()
    handle = d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)
    fail_once(d, handle)
    outsider = d.connect("192.0.2.1", trusted=False)
    assert d.admin(outsider, line).startswith(b"ERR PERMISSION_DENIED ")
    assert len(d.core.dead) == 1 and d.core.retry_policies == {}
    # Looking is allowed.
    assert d.admin(outsider, b"show dead").startswith(b"1\t")


def test_retry_dead_submits_it_again_with_all_its_attempts() -> None:
    d = retrying(attempts=1)
    client, admin = d.connect(), d.connect()
    handle = d.submit(client, b"f", data=b"again", unique=b"u", type_=P.SUBMIT_JOB_BG)
    fail_once(d, handle)
    assert d.admin(admin, b"retry dead 2") == b"ERR UNKNOWN_JOB\r\n"
    assert d.admin(admin, b"retry dead 1") == b"OK 1\r\n"
    assert d.core.dead == {}
    worker = d.worker(b"f")
    kind, (new_handle, name, data) = d.grab(worker)
    assert (kind, name, data) == (P.JOB_ASSIGN, b"f", b"again")
    assert new_handle != handle and d.core.jobs[new_handle].retries == 0
    assert d.core.jobs[new_handle].unique == b"u"


def test_retry_and_purge_dead_all_can_be_limited_to_one_function() -> None:
    d = retrying(attempts=1)
    client, admin = d.connect(), d.connect()
    for name in (b"f", b"f", b"g"):
        handle = d.submit(client, name, type_=P.SUBMIT_JOB_BG)
        worker = d.worker(name)
        d.grab_handle(worker)
        d.send(worker, P.WORK_FAIL, handle)
    assert d.admin(admin, b"deadstatus") == b"f\t2\ng\t1\n.\n"
    assert d.admin(admin, b"purge dead all g") == b"OK 1\r\n"
    assert d.admin(admin, b"retry dead all f") == b"OK 2\r\n"
    assert d.admin(admin, b"purge dead all") == b"OK 0\r\n"
    assert d.admin(admin, b"deadstatus") == b".\n"
    assert d.admin(admin, b"status") == b"f\t2\t0\t2\ng\t0\t0\t1\n.\n"


def test_cancel_job_covers_retrying_jobs_and_dead_letters() -> None:
    d = retrying(attempts=2)
    client, admin = d.connect(), d.connect()
    waiting = d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)
    fail_once(d, waiting)
    assert d.admin(admin, b"cancel job " + waiting) == b"OK\r\n"
    assert d.core.jobs == {}
    assert d.admin(admin, b"status") == b".\n"  # no job, no worker: f is forgotten
    d.clock.advance(100)
    d.core.run_timers()
    assert d.grab(d.worker(b"f")) == NO_JOB
    doomed = d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)
    fail_once(d, doomed)
    d.clock.advance(100)
    d.core.run_timers()
    fail_once(d, doomed)
    assert len(d.core.dead) == 1
    assert d.admin(admin, b"cancel job " + doomed) == b"OK\r\n"
    assert d.core.dead == {}
    assert d.admin(admin, b"cancel job " + doomed) == b"ERR UNKNOWN_JOB\r\n"


def test_a_durable_core_writes_the_retry_the_dead_letter_and_the_revival() -> None:
    d = retrying(attempts=2, base=0.25, durable=True)
    client = d.connect()
    d.send(client, P.SUBMIT_JOB_BG, b"f", b"u", b"data")
    [job] = d.core.to_store
    d.core.to_store.clear()
    d.core.commit_done([job])
    fail_once(d, job.handle, P.WORK_EXCEPTION, b"oops")
    assert d.core.pending_writes and d.core.updated_stored == [job]
    # The store keeps whole seconds: the due time is rounded up, never early.
    assert d.core.store_row(job) == (b"u", b"f", 1, b"data", int(START) + 1, 1, b"oops")
    d.core.updated_stored.clear()
    d.clock.advance(0.25)
    d.core.run_timers()
    fail_once(d, job.handle)
    assert d.core.finished_stored == [job] and d.core.buried == [job]
    assert d.core.dead_row(job) == (1, b"f", b"u", 1, b"data", 2, b"failed", START + 0.25)
    d.core.finished_stored.clear()
    d.core.buried.clear()
    assert d.core.revive(1) is not None
    assert d.core.purged == [1]
    assert [new.data for new in d.core.to_store] == [b"data"]
    d.core.set_retry_policy(b"f", RetryPolicy(4, 1.0, 2.0))
    assert d.core.policy_changes == [(b"f", RetryPolicy(4, 1.0, 2.0))]


def test_a_replayed_job_that_was_waiting_for_its_retry_keeps_waiting() -> None:
    d = retrying(durable=True)
    due = int(START) + 30
    assert d.core.replay([(b"u", b"f", 1, b"x", due, 1, b"failed")]) == 1
    [job] = d.core.jobs.values()
    assert (job.state, job.retries, job.error) == (JobState.RETRYING, 1, b"failed")
    assert d.core.next_deadline() == due
    assert d.core.updated_stored == [], "replaying rewrites nothing"
    assert d.core.replay_dead([(5, b"f", b"v", 0, b"y", 3, b"worker lost", START - 10)]) == 1
    admin = d.connect()
    assert d.admin(admin, b"show dead").startswith(b"5\t")
    assert d.core.buried == [], "replaying writes nothing"
    # New dead letters are numbered after the replayed ones.
    d.clock.advance(30)
    d.core.run_timers()
    fail_once(d, job.handle)
    fail_once_more = d.core.jobs[job.handle]
    d.clock.advance(60)
    d.core.run_timers()
    fail_once(d, fail_once_more.handle)
    assert sorted(d.core.dead) == [5, 6]


def test_a_foreground_client_coalesced_onto_a_retried_job_gets_the_failure() -> None:
    d = retrying()
    submitter, waiter = d.connect(), d.connect()
    handle = d.submit(submitter, b"f", unique=b"u", type_=P.SUBMIT_JOB_BG)
    assert d.submit(waiter, b"f", unique=b"u") == handle
    worker = d.worker(b"f")
    d.grab_handle(worker)
    d.core.disconnect(worker)
    assert d.received(waiter) == [(P.WORK_FAIL, (handle,))]
    assert d.core.jobs[handle].state is JobState.RETRYING
    assert waiter.waiting == set()
