"""Uniques that remember in the sans-IO core, with a fake clock (the same behaviours against a
real server and each store: ``test_unique_window.py``)."""

from __future__ import annotations

from coredriver import START, CoreDriver

from gearsql.core import Session
from gearsql.protocol import PacketType as P

BG = P.SUBMIT_JOB_BG


def complete(d: CoreDriver, function: bytes, result: bytes = b"result") -> bytes:
    """A worker runs the next job of ``function`` to completion; returns its handle."""
    worker = d.worker(function)
    handle = d.grab_handle(worker)
    d.send(worker, P.WORK_COMPLETE, handle, result)
    d.core.disconnect(worker)
    return handle


def submit_stored(d: CoreDriver, session: Session, function: bytes, unique: bytes) -> None:
    """A durable background submission, committed (JOB_CREATED once the store has it)."""
    d.send(session, BG, function, unique, b"payload")
    stored, d.core.to_store = d.core.to_store, []
    d.core.commit_done(stored)
    [(kind, _)] = d.received(session)
    assert kind == P.JOB_CREATED


def test_a_completed_unique_is_acknowledged_without_a_job_until_its_window_ends() -> None:
    d = CoreDriver(unique_window=60.0)
    client, admin = d.connect(), d.connect()
    first = d.submit(client, b"f", unique=b"u", type_=BG)
    assert complete(d, b"f") == first
    again = d.submit(client, b"f", unique=b"u", type_=BG)
    assert again != first and again not in d.core.jobs
    assert d.admin(admin, b"status") == b".\n"  # nothing queued, the function forgotten
    d.clock.advance(59.9)
    d.core.run_timers()
    d.submit(client, b"f", unique=b"u", type_=BG)
    assert d.admin(admin, b"status") == b".\n"
    d.clock.advance(0.1)
    assert d.core.next_deadline() == START + 60.0
    d.core.run_timers()
    assert d.core.remembered == {} and d.core.next_deadline() is None
    d.submit(client, b"f", unique=b"u", type_=BG)
    assert d.admin(admin, b"status") == b"f\t1\t0\t0\n.\n"


def test_only_completions_of_background_jobs_with_a_real_unique_are_remembered() -> None:
    d = CoreDriver(unique_window=60.0, keep_results=True)
    client = d.connect()
    d.submit(client, b"f", data=b"x", unique=b"-", type_=BG)  # the payload is the key
    complete(d, b"f")
    d.submit(client, b"f", unique=b"fg")  # foreground
    complete(d, b"f")
    d.received(client)
    failing = d.worker(b"f")
    d.submit(client, b"f", unique=b"failed", type_=BG)
    d.send(failing, P.WORK_FAIL, d.grab_handle(failing))
    assert d.core.remembered == {}


def test_without_kept_results_a_foreground_submission_runs_and_status_says_done() -> None:
    d = CoreDriver(unique_window=60.0)
    client = d.connect()
    d.submit(client, b"f", unique=b"u", type_=BG)
    complete(d, b"f")
    d.send(client, P.GET_STATUS_UNIQUE, b"u")
    assert d.received(client) == [(P.STATUS_RES_UNIQUE, (b"u", b"1", b"0", b"1", b"1", b"0"))]
    handle = d.submit(client, b"f", unique=b"u")
    assert d.core.jobs[handle].clients == [client]


def test_kept_results_answer_a_foreground_submission_at_once() -> None:
    d = CoreDriver(unique_window=60.0, keep_results=True)
    client = d.connect()
    d.submit(client, b"f", unique=b"u", type_=BG)
    complete(d, b"f", b"the \x00 result")
    d.send(client, P.SUBMIT_JOB, b"f", b"u", b"payload")
    [(created, (handle,)), complete_reply] = d.received(client)
    assert created == P.JOB_CREATED
    assert complete_reply == (P.WORK_COMPLETE, (handle, b"the \x00 result"))
    assert d.core.jobs == {}


def test_a_function_window_overrides_the_default_and_is_written_to_the_store() -> None:
    d = CoreDriver(unique_window=60.0, durable=True)
    admin, client = d.connect(), d.connect()
    assert d.admin(admin, b"uniquewindow f") == b"OK 60 default\n"
    assert d.admin(admin, b"uniquewindow f 0") == b"OK\r\n"
    assert d.admin(admin, b"uniquewindow f") == b"OK 0\n"
    assert d.admin(admin, b"uniquewindow g 2.5") == b"OK\r\n"
    assert d.admin(admin, b"uniquewindow g default") == b"OK\r\n"
    assert d.admin(admin, b"uniquewindow g -1").startswith(b"ERR")
    assert d.core.window_changes == [(b"f", 0.0), (b"g", 2.5), (b"g", None)]
    remote = d.connect(peer="192.0.2.1", trusted=False)
    assert d.admin(remote, b"uniquewindow f 5").startswith(b"ERR")
    submit_stored(d, client, b"f", b"u")
    complete(d, b"f")
    assert d.core.remembered == {} and d.core.remembered_added == []


def test_remembered_uniques_go_to_the_store_and_expire_there() -> None:
    d = CoreDriver(unique_window=10.0, durable=True)
    client = d.connect()
    submit_stored(d, client, b"f", b"u")
    complete(d, b"f")
    # The queue row goes and the unique is remembered, with the same commit.
    assert [job.unique for job in d.core.finished_stored] == [b"u"]
    assert d.core.remembered_added == [(b"f", b"u", START + 10.0, b"")]
    assert d.core.pending_writes
    d.clock.advance(10.0)
    d.core.run_timers()
    assert d.core.remembered_expired == START + 10.0
