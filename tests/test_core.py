"""The job-matching core without sockets: packets in, the bytes each peer would receive out."""

from __future__ import annotations

import pytest
from coredriver import START, CoreDriver, Reply

from gearsql.core import TRANSITIONS, JobEvent, JobServerCore, JobState
from gearsql.protocol import PacketType as P

NOOP = (P.NOOP, ())
NO_JOB = (P.NO_JOB, ())


@pytest.fixture
def d() -> CoreDriver:
    return CoreDriver()


def job_not_found(text: bytes = b"Job given in work result not found") -> Reply:
    return (P.ERROR, (b"JOB_NOT_FOUND", text))


# ---------------------------------------------------------------------------- submission


def test_job_created_handles_carry_the_prefix_and_a_counter(d: CoreDriver) -> None:
    client = d.connect()
    assert d.submit(client, b"f") == b"H:test:1"
    assert d.submit(client, b"f", type_=P.SUBMIT_JOB_BG) == b"H:test:2"
    assert d.submit(client, b"g", type_=P.SUBMIT_JOB_LOW) == b"H:test:3"


@pytest.mark.parametrize(
    ("type_", "column", "background"),
    [
        (P.SUBMIT_JOB, 1, False),
        (P.SUBMIT_JOB_BG, 1, True),
        (P.SUBMIT_JOB_HIGH, 0, False),
        (P.SUBMIT_JOB_HIGH_BG, 0, True),
        (P.SUBMIT_JOB_LOW, 2, False),
        (P.SUBMIT_JOB_LOW_BG, 2, True),
    ],
)
def test_every_submit_variant_queues_at_its_priority_and_reports_only_if_foreground(
    d: CoreDriver, type_: P, column: int, background: bool
) -> None:
    client = d.connect()
    handle = d.submit(client, b"f", b"in", type_=type_)
    counts = [b"0", b"0", b"0"]
    counts[column] = b"1"
    admin = d.connect()
    assert d.admin(admin, b"prioritystatus") == b"f\t" + b"\t".join(counts) + b"\t0\n.\n"

    worker = d.worker(b"f")
    assert d.grab(worker) == (P.JOB_ASSIGN, (handle, b"f", b"in"))
    d.send(worker, P.WORK_COMPLETE, handle, b"out")
    assert d.received(worker) == []
    expected = [] if background else [(P.WORK_COMPLETE, (handle, b"out"))]
    assert d.received(client) == expected
    assert d.admin(admin, b"status") == b"f\t0\t0\t1\n.\n"


def test_submit_job_epoch_is_a_background_job_with_a_handle(d: CoreDriver) -> None:
    client = d.connect()
    d.send(client, P.SUBMIT_JOB_EPOCH, b"f", b"", b"%d" % (int(START) + 60), b"later")
    assert d.received(client) == [(P.JOB_CREATED, (b"H:test:1",))]
    d.clock.advance(60)
    d.core.run_timers()
    worker = d.worker(b"f")
    assert d.grab(worker) == (P.JOB_ASSIGN, (b"H:test:1", b"f", b"later"))
    d.send(worker, P.WORK_COMPLETE, b"H:test:1", b"done")
    assert d.received(client) == []


def test_submit_reduce_job_is_foreground_and_assigned_with_its_reducer(d: CoreDriver) -> None:
    client = d.connect()
    d.send(client, P.SUBMIT_REDUCE_JOB, b"map", b"u1", b"reduce", b"", b"a\0b")
    [(kind, (handle,))] = d.received(client)
    assert kind == P.JOB_CREATED
    worker = d.worker(b"map")
    d.send(worker, P.GRAB_JOB_ALL)
    assert d.received(worker) == [(P.JOB_ASSIGN_ALL, (handle, b"map", b"u1", b"reduce", b"a\0b"))]
    d.send(worker, P.WORK_COMPLETE, handle, b"sum")
    assert d.received(client) == [(P.WORK_COMPLETE, (handle, b"sum"))]


def test_submit_reduce_job_background_sends_no_result(d: CoreDriver) -> None:
    client = d.connect()
    d.send(client, P.SUBMIT_REDUCE_JOB_BACKGROUND, b"map", b"u1", b"reduce", b"", b"data")
    [(kind, (handle,))] = d.received(client)
    assert kind == P.JOB_CREATED
    worker = d.worker(b"map")
    d.send(worker, P.GRAB_JOB_ALL)
    assert d.received(worker) == [(P.JOB_ASSIGN_ALL, (handle, b"map", b"u1", b"reduce", b"data"))]
    d.send(worker, P.WORK_COMPLETE, handle, b"sum")
    assert d.received(worker) == []
    assert d.received(client) == []


# ---------------------------------------------------------------------------- grabbing


def test_grab_job_replies_job_assign_with_handle_function_and_data(d: CoreDriver) -> None:
    handle = d.submit(d.connect(), b"f", b"with\0nul", unique=b"u")
    worker = d.worker(b"f")
    d.send(worker, P.GRAB_JOB)
    assert d.received(worker) == [(P.JOB_ASSIGN, (handle, b"f", b"with\0nul"))]


def test_grab_job_uniq_replies_job_assign_uniq_with_the_unique(d: CoreDriver) -> None:
    handle = d.submit(d.connect(), b"f", b"data", unique=b"u-1")
    worker = d.worker(b"f")
    d.send(worker, P.GRAB_JOB_UNIQ)
    assert d.received(worker) == [(P.JOB_ASSIGN_UNIQ, (handle, b"f", b"u-1", b"data"))]


def test_grab_job_all_without_reducer_replies_job_assign_uniq(d: CoreDriver) -> None:
    handle = d.submit(d.connect(), b"f", b"data", unique=b"u-1")
    worker = d.worker(b"f")
    d.send(worker, P.GRAB_JOB_ALL)
    assert d.received(worker) == [(P.JOB_ASSIGN_UNIQ, (handle, b"f", b"u-1", b"data"))]


def test_grab_job_on_a_reduce_job_still_replies_plain_job_assign(d: CoreDriver) -> None:
    client = d.connect()
    d.send(client, P.SUBMIT_REDUCE_JOB, b"map", b"", b"reduce", b"", b"data")
    [(_, (handle,))] = d.received(client)
    worker = d.worker(b"map")
    assert d.grab(worker) == (P.JOB_ASSIGN, (handle, b"map", b"data"))


def test_grab_job_with_nothing_queued_replies_no_job(d: CoreDriver) -> None:
    worker = d.worker(b"f")
    for type_ in (P.GRAB_JOB, P.GRAB_JOB_UNIQ, P.GRAB_JOB_ALL):
        d.send(worker, type_)
        assert d.received(worker) == [NO_JOB]


def test_grab_job_never_returns_a_job_of_a_function_the_worker_cannot_do(d: CoreDriver) -> None:
    d.submit(d.connect(), b"other")
    assert d.grab(d.worker(b"f")) == NO_JOB
    assert d.grab(d.connect()) == NO_JOB


# ---------------------------------------------------------------------------- sleeping and waking


def test_pre_sleep_then_submissions_send_exactly_one_noop_per_sleep(d: CoreDriver) -> None:
    worker = d.sleeping_worker(b"f")
    client = d.connect()
    first = d.submit(client, b"f")
    assert d.received(worker) == [NOOP]
    d.submit(client, b"f")
    d.submit(client, b"f")
    assert d.received(worker) == []

    assert d.grab_handle(worker) == first
    d.grab_handle(worker)
    d.grab_handle(worker)
    assert d.grab(worker) == NO_JOB
    d.send(worker, P.PRE_SLEEP)
    assert d.received(worker) == []
    d.submit(client, b"f")
    d.submit(client, b"f")
    assert d.received(worker) == [NOOP]


def test_pre_sleep_with_a_job_already_queued_gets_an_immediate_noop(d: CoreDriver) -> None:
    d.submit(d.connect(), b"f")
    worker = d.worker(b"f")
    d.send(worker, P.PRE_SLEEP)
    assert d.received(worker) == [NOOP]


def test_pre_sleep_ignores_jobs_of_other_functions(d: CoreDriver) -> None:
    d.submit(d.connect(), b"other")
    worker = d.worker(b"f")
    d.send(worker, P.PRE_SLEEP)
    assert d.received(worker) == []


def test_sleeping_worker_is_woken_once_even_with_several_matching_functions(d: CoreDriver) -> None:
    worker = d.sleeping_worker(b"a", b"b")
    client = d.connect()
    d.submit(client, b"a")
    d.submit(client, b"b")
    assert d.received(worker) == [NOOP]


def test_sleeping_worker_that_registers_a_function_is_woken_by_its_jobs(d: CoreDriver) -> None:
    worker = d.sleeping_worker(b"a")
    d.send(worker, P.CAN_DO, b"b")
    d.submit(d.connect(), b"b")
    assert d.received(worker) == [NOOP]


def test_woken_workers_are_listed_as_dirty_for_the_network_layer(d: CoreDriver) -> None:
    workers = [d.sleeping_worker(b"f") for _ in range(3)]
    client = d.connect()
    d.core.take_dirty()
    d.submit(client, b"f")
    dirty = d.core.take_dirty()
    assert set(dirty) == {client, *workers}
    assert d.core.take_dirty() == []


def test_worker_wakeup_n_wakes_at_most_n_sleepers_per_job() -> None:
    d = CoreDriver(worker_wakeup=2)
    workers = [d.sleeping_worker(b"f") for _ in range(5)]
    client = d.connect()
    d.submit(client, b"f")
    assert [d.received(w) for w in workers] == [[NOOP], [NOOP], [], [], []]
    d.submit(client, b"f")
    assert [d.received(w) for w in workers] == [[], [], [NOOP], [NOOP], []]


def test_worker_wakeup_zero_wakes_every_sleeper() -> None:
    d = CoreDriver(worker_wakeup=0)
    workers = [d.sleeping_worker(b"f") for _ in range(5)]
    d.submit(d.connect(), b"f")
    assert all(d.received(w) == [NOOP] for w in workers)


def test_thundering_herd_wakes_all_but_assigns_the_job_once(d: CoreDriver) -> None:
    workers = [d.sleeping_worker(b"f") for _ in range(100)]
    handle = d.submit(d.connect(), b"f")
    assert all(d.received(w) == [NOOP] for w in workers)
    replies = [d.grab(w) for w in workers]
    assigned = [reply for reply in replies if reply[0] == P.JOB_ASSIGN]
    assert assigned == [(P.JOB_ASSIGN, (handle, b"f", b"payload"))]
    assert replies.count(NO_JOB) == 99


# ---------------------------------------------------------------------------- dispatch order


def test_priority_is_global_across_the_workers_functions(d: CoreDriver) -> None:
    client = d.connect()
    low_a = d.submit(client, b"a", type_=P.SUBMIT_JOB_LOW)
    normal_a = d.submit(client, b"a")
    high_b = d.submit(client, b"b", type_=P.SUBMIT_JOB_HIGH)
    normal_b = d.submit(client, b"b")
    worker = d.worker(b"a", b"b")
    taken = [d.grab_handle(worker) for _ in range(4)]
    assert taken[0] == high_b
    assert set(taken[1:3]) == {normal_a, normal_b}
    assert taken[3] == low_a


def test_functions_are_served_round_robin(d: CoreDriver) -> None:
    client = d.connect()
    for number in range(5):
        d.submit(client, b"a", b"a%d" % number)
    for number in range(5):
        d.submit(client, b"b", b"b%d" % number)
    worker = d.worker(b"a", b"b")
    taken = []
    for _ in range(10):
        kind, (_handle, function, data) = d.grab(worker)
        assert kind == P.JOB_ASSIGN
        taken.append(data)
        assert data.startswith(function)
    assert taken == [b"a0", b"b0", b"a1", b"b1", b"a2", b"b2", b"a3", b"b3", b"a4", b"b4"]


def test_round_robin_skips_functions_with_nothing_queued(d: CoreDriver) -> None:
    client = d.connect()
    for number in range(3):
        d.submit(client, b"b", b"b%d" % number)
    worker = d.worker(b"a", b"b", b"c")
    assert [d.grab(worker)[1][2] for _ in range(3)] == [b"b0", b"b1", b"b2"]
    assert d.grab(worker) == NO_JOB


def test_jobs_of_one_priority_run_in_submission_order(d: CoreDriver) -> None:
    client = d.connect()
    handles = [d.submit(client, b"f", b"%d" % n, type_=P.SUBMIT_JOB_BG) for n in range(20)]
    worker = d.worker(b"f")
    assert [d.grab_handle(worker) for _ in range(20)] == handles


# ---------------------------------------------------------------------------- work results


@pytest.mark.parametrize(
    ("type_", "args"),
    [
        (P.WORK_STATUS, (b"1", b"4")),
        (P.WORK_DATA, (b"chunk\0with nul",)),
        (P.WORK_WARNING, (b"careful",)),
        (P.WORK_COMPLETE, (b"result",)),
        (P.WORK_FAIL, ()),
    ],
)
def test_work_packets_reach_every_attached_client(
    d: CoreDriver, type_: P, args: tuple[bytes, ...]
) -> None:
    first, second, bystander = d.connect(), d.connect(), d.connect()
    handle = d.submit(first, b"f", unique=b"same")
    assert d.submit(second, b"f", unique=b"same") == handle
    d.submit(bystander, b"f", unique=b"other")
    worker = d.worker(b"f")
    assert d.grab_handle(worker) == handle
    d.send(worker, type_, handle, *args)
    assert d.received(worker) == []
    assert d.received(first) == [(type_, (handle, *args))]
    assert d.received(second) == [(type_, (handle, *args))]
    assert d.received(bystander) == []


def test_progress_packets_keep_the_job_running_and_arrive_in_order(d: CoreDriver) -> None:
    client = d.connect()
    handle = d.submit(client, b"f")
    worker = d.worker(b"f")
    d.grab_handle(worker)
    d.send(worker, P.WORK_DATA, handle, b"d1")
    d.send(worker, P.WORK_STATUS, handle, b"1", b"2")
    d.send(worker, P.WORK_WARNING, handle, b"w")
    d.send(worker, P.WORK_DATA, handle, b"d2")
    d.send(worker, P.WORK_COMPLETE, handle, b"end")
    assert d.received(client) == [
        (P.WORK_DATA, (handle, b"d1")),
        (P.WORK_STATUS, (handle, b"1", b"2")),
        (P.WORK_WARNING, (handle, b"w")),
        (P.WORK_DATA, (handle, b"d2")),
        (P.WORK_COMPLETE, (handle, b"end")),
    ]
    assert d.received(worker) == []
    # The job is gone after WORK_COMPLETE.
    d.send(worker, P.WORK_COMPLETE, handle, b"again")
    assert d.received(worker) == [job_not_found()]


def test_work_exception_goes_only_to_clients_that_asked_for_exceptions(d: CoreDriver) -> None:
    asked, plain = d.connect(), d.connect()
    d.send(asked, P.OPTION_REQ, b"exceptions")
    assert d.received(asked) == [(P.OPTION_RES, (b"exceptions",))]
    handle = d.submit(asked, b"f", unique=b"u")
    assert d.submit(plain, b"f", unique=b"u") == handle
    worker = d.worker(b"f")
    d.grab_handle(worker)
    d.send(worker, P.WORK_EXCEPTION, handle, b"boom")
    assert d.received(asked) == [(P.WORK_EXCEPTION, (handle, b"boom"))]
    raw = d.raw_output(plain)
    # The bare handle: C gearmand's stray trailing NUL hangs libgearman (docs/protocol.md §11).
    assert raw == b"\0RES" + (14).to_bytes(4, "big") + len(handle).to_bytes(4, "big") + handle


def test_work_exception_goes_to_every_client_with_server_exceptions_option() -> None:
    d = CoreDriver(exceptions=True)
    first, second = d.connect(), d.connect()
    handle = d.submit(first, b"f", unique=b"u")
    d.submit(second, b"f", unique=b"u")
    worker = d.worker(b"f")
    d.grab_handle(worker)
    d.send(worker, P.WORK_EXCEPTION, handle, b"boom")
    assert d.received(first) == [(P.WORK_EXCEPTION, (handle, b"boom"))]
    assert d.received(second) == [(P.WORK_EXCEPTION, (handle, b"boom"))]


def test_option_req_unknown_option_is_an_error(d: CoreDriver) -> None:
    client = d.connect()
    d.send(client, P.OPTION_REQ, b"frobnicate")
    assert d.received(client) == [
        (P.ERROR, (b"UNKNOWN_OPTION", b"Server does not recognize given option"))
    ]
    # The session did not switch to exceptions by accident.
    handle = d.submit(client, b"f")
    worker = d.worker(b"f")
    d.grab_handle(worker)
    d.send(worker, P.WORK_EXCEPTION, handle, b"boom")
    assert d.received(client) == [(P.WORK_FAIL, (handle,))]


# ---------------------------------------------------------------------------- status queries


def test_get_status_of_an_unknown_handle_is_all_zero(d: CoreDriver) -> None:
    client = d.connect()
    d.send(client, P.GET_STATUS, b"H:test:99")
    assert d.received(client) == [(P.STATUS_RES, (b"H:test:99", b"0", b"0", b"0", b"0"))]


def test_get_status_follows_a_job_from_queued_to_running_to_gone(d: CoreDriver) -> None:
    client, watcher = d.connect(), d.connect()
    handle = d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)
    d.send(watcher, P.GET_STATUS, handle)
    assert d.received(watcher) == [(P.STATUS_RES, (handle, b"1", b"0", b"0", b"0"))]
    worker = d.worker(b"f")
    d.grab_handle(worker)
    d.send(watcher, P.GET_STATUS, handle)
    assert d.received(watcher) == [(P.STATUS_RES, (handle, b"1", b"1", b"0", b"0"))]
    d.send(worker, P.WORK_STATUS, handle, b"3", b"10")
    d.send(watcher, P.GET_STATUS, handle)
    assert d.received(watcher) == [(P.STATUS_RES, (handle, b"1", b"1", b"3", b"10"))]
    d.send(worker, P.WORK_COMPLETE, handle, b"")
    d.send(watcher, P.GET_STATUS, handle)
    assert d.received(watcher) == [(P.STATUS_RES, (handle, b"0", b"0", b"0", b"0"))]


def test_get_status_unique_answers_with_the_unique_and_the_client_count(d: CoreDriver) -> None:
    first, second, watcher = d.connect(), d.connect(), d.connect()
    handle = d.submit(first, b"f", unique=b"order-7")
    d.submit(second, b"f", unique=b"order-7")
    worker = d.worker(b"f")
    d.grab_handle(worker)
    d.send(worker, P.WORK_STATUS, handle, b"5", b"8")
    d.send(watcher, P.GET_STATUS_UNIQUE, b"order-7")
    assert d.received(watcher) == [
        (P.STATUS_RES_UNIQUE, (b"order-7", b"1", b"1", b"5", b"8", b"2"))
    ]
    d.send(watcher, P.GET_STATUS_UNIQUE, b"nobody")
    assert d.received(watcher) == [(P.STATUS_RES_UNIQUE, (b"nobody", b"0", b"0", b"0", b"0", b"0"))]


def test_get_status_unique_of_a_queued_background_job_has_no_clients(d: CoreDriver) -> None:
    client = d.connect()
    d.submit(client, b"f", unique=b"bg", type_=P.SUBMIT_JOB_BG)
    d.send(client, P.GET_STATUS_UNIQUE, b"bg")
    assert d.received(client) == [(P.STATUS_RES_UNIQUE, (b"bg", b"1", b"0", b"0", b"0", b"0"))]


# ---------------------------------------------------------------------------- unique coalescing


def test_same_unique_while_queued_coalesces_onto_one_job(d: CoreDriver) -> None:
    first, second = d.connect(), d.connect()
    handle = d.submit(first, b"f", b"x", unique=b"u")
    assert d.submit(second, b"f", b"ignored", unique=b"u") == handle
    worker = d.worker(b"f")
    assert d.grab(worker) == (P.JOB_ASSIGN, (handle, b"f", b"x"))
    assert d.grab(worker) == NO_JOB
    d.send(worker, P.WORK_COMPLETE, handle, b"r")
    assert d.received(first) == [(P.WORK_COMPLETE, (handle, b"r"))]
    assert d.received(second) == [(P.WORK_COMPLETE, (handle, b"r"))]


def test_same_unique_while_running_joins_the_running_job(d: CoreDriver) -> None:
    first, late = d.connect(), d.connect()
    handle = d.submit(first, b"f", unique=b"u")
    worker = d.worker(b"f")
    d.grab_handle(worker)
    d.send(worker, P.WORK_STATUS, handle, b"1", b"2")
    assert d.submit(late, b"f", unique=b"u") == handle
    d.send(worker, P.WORK_COMPLETE, handle, b"r")
    assert d.received(first) == [
        (P.WORK_STATUS, (handle, b"1", b"2")),
        (P.WORK_COMPLETE, (handle, b"r")),
    ]
    assert d.received(late) == [(P.WORK_COMPLETE, (handle, b"r"))]
    assert d.grab(worker) == NO_JOB


def test_same_unique_after_the_job_finished_makes_a_new_job(d: CoreDriver) -> None:
    client = d.connect()
    handle = d.submit(client, b"f", unique=b"u")
    worker = d.worker(b"f")
    d.grab_handle(worker)
    d.send(worker, P.WORK_COMPLETE, handle, b"r")
    d.received(client)
    again = d.submit(client, b"f", unique=b"u")
    assert again != handle
    assert d.grab_handle(worker) == again


def test_same_unique_in_another_function_does_not_coalesce(d: CoreDriver) -> None:
    client = d.connect()
    assert d.submit(client, b"f", unique=b"u") != d.submit(client, b"g", unique=b"u")


def test_empty_unique_never_coalesces(d: CoreDriver) -> None:
    client = d.connect()
    handles = {d.submit(client, b"f", b"same", unique=b"") for _ in range(3)}
    assert len(handles) == 3
    worker = d.worker(b"f")
    assert {d.grab_handle(worker) for _ in range(3)} == handles


def test_dash_unique_coalesces_identical_payloads_only(d: CoreDriver) -> None:
    client = d.connect()
    first = d.submit(client, b"f", b"payload-1", unique=b"-")
    assert d.submit(client, b"f", b"payload-1", unique=b"-") == first
    second = d.submit(client, b"f", b"payload-2", unique=b"-")
    assert second != first
    # A real unique equal to a payload is another key.
    assert d.submit(client, b"f", b"x", unique=b"payload-1") not in (first, second)


def test_background_resubmit_of_a_live_unique_gets_the_same_handle(d: CoreDriver) -> None:
    client, admin = d.connect(), d.connect()
    handle = d.submit(client, b"f", unique=b"u", type_=P.SUBMIT_JOB_BG)
    assert d.submit(client, b"f", unique=b"u", type_=P.SUBMIT_JOB_BG) == handle
    assert d.submit(client, b"f", unique=b"u", type_=P.SUBMIT_JOB_HIGH_BG) == handle
    assert d.admin(admin, b"status") == b"f\t1\t0\t0\n.\n"
    # A background twin does not make the submitter a listener for results.
    worker = d.worker(b"f")
    d.grab_handle(worker)
    d.send(worker, P.WORK_COMPLETE, handle, b"r")
    assert d.received(client) == []


def test_foreground_submit_coalesced_onto_a_background_job_gets_its_result(d: CoreDriver) -> None:
    submitter, waiter = d.connect(), d.connect()
    handle = d.submit(submitter, b"f", unique=b"u", type_=P.SUBMIT_JOB_BG)
    assert d.submit(waiter, b"f", unique=b"u") == handle
    worker = d.worker(b"f")
    d.grab_handle(worker)
    d.send(worker, P.WORK_COMPLETE, handle, b"r")
    assert d.received(waiter) == [(P.WORK_COMPLETE, (handle, b"r"))]
    assert d.received(submitter) == []


def test_unique_of_65_bytes_is_refused_and_makes_no_job(d: CoreDriver) -> None:
    client, admin = d.connect(), d.connect()
    d.send(client, P.SUBMIT_JOB, b"f", b"u" * 65, b"data")
    assert d.received(client) == [(P.ERROR, (b"ARGUMENT_TOO_LARGE", b"Unique value too large"))]
    assert d.show_jobs(admin) == b".\n"
    assert d.admin(admin, b"status") == b".\n"
    assert d.grab(d.worker(b"f")) == NO_JOB


def test_unique_of_64_bytes_is_accepted(d: CoreDriver) -> None:
    client = d.connect()
    handle = d.submit(client, b"f", unique=b"u" * 64)
    worker = d.worker(b"f")
    d.send(worker, P.GRAB_JOB_UNIQ)
    assert d.received(worker) == [(P.JOB_ASSIGN_UNIQ, (handle, b"f", b"u" * 64, b"payload"))]


def test_empty_function_name_is_refused(d: CoreDriver) -> None:
    client, admin = d.connect(), d.connect()
    d.send(client, P.SUBMIT_JOB, b"", b"", b"data")
    assert d.received(client) == [(P.ERROR, (b"INVALID_ARGUMENT", b"Function name is empty"))]
    worker = d.connect()
    d.send(worker, P.CAN_DO, b"")
    assert d.received(worker) == [(P.ERROR, (b"INVALID_ARGUMENT", b"Function name is empty"))]
    assert d.admin(admin, b"status") == b".\n"


def test_function_name_of_513_bytes_is_refused_and_512_accepted(d: CoreDriver) -> None:
    client, admin = d.connect(), d.connect()
    d.send(client, P.SUBMIT_JOB_BG, b"f" * 513, b"", b"data")
    assert d.received(client) == [(P.ERROR, (b"ARGUMENT_TOO_LARGE", b"Function name too large"))]
    worker = d.connect()
    d.send(worker, P.CAN_DO, b"f" * 513)
    assert d.received(worker) == [(P.ERROR, (b"ARGUMENT_TOO_LARGE", b"Function name too large"))]
    assert d.admin(admin, b"status") == b".\n"
    d.submit(client, b"f" * 512, type_=P.SUBMIT_JOB_BG)
    assert d.admin(admin, b"status") == b"f" * 512 + b"\t1\t0\t0\n.\n"


# ---------------------------------------------------------------------------- misbehaving peers


@pytest.mark.parametrize(
    ("type_", "args"),
    [
        (P.WORK_COMPLETE, (b"forged",)),
        (P.WORK_FAIL, ()),
        (P.WORK_STATUS, (b"9", b"9")),
    ],
)
def test_work_result_from_a_connection_not_holding_the_job_is_refused(
    d: CoreDriver, type_: P, args: tuple[bytes, ...]
) -> None:
    client, watcher = d.connect(), d.connect()
    handle = d.submit(client, b"f")
    worker = d.worker(b"f")
    d.grab_handle(worker)
    intruder = d.worker(b"f")
    d.send(intruder, type_, handle, *args)
    assert d.received(intruder) == [job_not_found()]
    assert d.received(client) == []
    d.send(watcher, P.GET_STATUS, handle)
    assert d.received(watcher) == [(P.STATUS_RES, (handle, b"1", b"1", b"0", b"0"))]
    d.send(worker, P.WORK_COMPLETE, handle, b"real")
    assert d.received(worker) == []
    assert d.received(client) == [(P.WORK_COMPLETE, (handle, b"real"))]


def test_work_result_for_a_queued_job_nobody_was_assigned_is_refused(d: CoreDriver) -> None:
    client = d.connect()
    handle = d.submit(client, b"f")
    intruder = d.worker(b"f")
    d.send(intruder, P.WORK_COMPLETE, handle, b"forged")
    assert d.received(intruder) == [job_not_found()]
    assert d.received(client) == []
    assert d.grab_handle(intruder) == handle


@pytest.mark.parametrize(
    ("type_", "args", "text"),
    [
        (P.WORK_DATA, (b"x",), b"Job does not exist on server"),
        (P.WORK_WARNING, (b"x",), b"Job does not exist on server"),
        (P.WORK_EXCEPTION, (b"x",), b"An exception was received for a job that does not exist"),
    ],
)
def test_work_packets_for_an_unknown_handle_get_job_not_found(
    d: CoreDriver, type_: P, args: tuple[bytes, ...], text: bytes
) -> None:
    worker = d.worker(b"f")
    d.send(worker, type_, b"H:test:404", *args)
    assert d.received(worker) == [job_not_found(text)]


def test_res_magic_packet_is_refused_with_invalid_magic(d: CoreDriver) -> None:
    client, admin = d.connect(), d.connect()
    d.send(client, P.SUBMIT_JOB, b"f", b"", b"data", request=False)
    assert d.received(client) == [(P.ERROR, (b"INVALID_MAGIC", b"Request magic expected"))]
    assert d.show_jobs(admin) == b".\n"
    d.send(client, P.ECHO_REQ, b"hi", request=False)
    assert d.received(client) == [(P.ERROR, (b"INVALID_MAGIC", b"Request magic expected"))]


@pytest.mark.parametrize(
    ("type_", "args"),
    [
        (P.NOOP, ()),
        (P.JOB_CREATED, (b"H:x:1",)),
        (P.NO_JOB, ()),
        (P.JOB_ASSIGN, (b"H:x:1", b"f", b"d")),
        (P.ECHO_RES, (b"d",)),
        (P.ERROR, (b"CODE", b"text")),
        (P.STATUS_RES, (b"H:x:1", b"1", b"1", b"0", b"0")),
        (P.ALL_YOURS, ()),
        (P.OPTION_RES, (b"exceptions",)),
        (P.JOB_ASSIGN_UNIQ, (b"H:x:1", b"f", b"u", b"d")),
        (P.JOB_ASSIGN_ALL, (b"H:x:1", b"f", b"u", b"r", b"d")),
        (P.STATUS_RES_UNIQUE, (b"u", b"1", b"1", b"0", b"0", b"1")),
    ],
)
def test_response_type_packets_sent_as_requests_are_not_expected(
    d: CoreDriver, type_: P, args: tuple[bytes, ...]
) -> None:
    peer, admin = d.connect(), d.connect()
    d.send(peer, type_, *args)
    assert d.received(peer) == [(P.ERROR, (b"INVALID_COMMAND", b"Command not expected"))]
    assert d.admin(admin, b"status") == b".\n"


def test_every_packet_type_has_a_handler() -> None:
    """The core finds a request packet's handler by indexing, with no fallback: a type
    missing from its table would be a KeyError that closes the connection."""
    core = JobServerCore(run_id=b"test")
    assert set(core._dispatch) == set(P)


# ---------------------------------------------------------------------------- worker loss


def test_worker_disconnect_requeues_its_job_at_the_tail_with_a_retry(d: CoreDriver) -> None:
    client, admin = d.connect(), d.connect()
    first = d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)
    second = d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)
    lost = d.worker(b"f")
    assert d.grab_handle(lost) == first
    d.core.disconnect(lost)
    assert d.show_jobs(admin) == first + b"\t1\t0\t1\n" + second + b"\t0\t0\t1\n.\n"
    assert d.admin(admin, b"status") == b"f\t2\t0\t0\n.\n"
    survivor = d.worker(b"f")
    assert d.grab_handle(survivor) == second
    assert d.grab_handle(survivor) == first


def test_worker_disconnect_wakes_sleeping_workers_for_the_requeued_job(d: CoreDriver) -> None:
    client = d.connect()
    handle = d.submit(client, b"f")
    lost = d.worker(b"f")
    d.grab_handle(lost)
    sleeper = d.sleeping_worker(b"f")
    d.core.disconnect(lost)
    assert d.received(sleeper) == [NOOP]
    assert d.grab_handle(sleeper) == handle
    d.send(sleeper, P.WORK_COMPLETE, handle, b"r")
    assert d.received(client) == [(P.WORK_COMPLETE, (handle, b"r"))]


def test_requeue_wakeup_is_not_spent_on_the_worker_that_disconnected() -> None:
    d = CoreDriver(worker_wakeup=1)
    handle = d.submit(d.connect(), b"f")
    lost = d.worker(b"f")
    d.grab_handle(lost)
    # A worker may sleep while it still holds a job (libgearman does with several jobs).
    d.send(lost, P.PRE_SLEEP)
    assert d.received(lost) == []
    sleeper = d.sleeping_worker(b"f")
    d.core.disconnect(lost)
    assert d.received(sleeper) == [NOOP]
    assert d.grab_handle(sleeper) == handle


def test_worker_disconnect_resets_the_jobs_progress(d: CoreDriver) -> None:
    client = d.connect()
    handle = d.submit(client, b"f")
    lost = d.worker(b"f")
    d.grab_handle(lost)
    d.send(lost, P.WORK_STATUS, handle, b"5", b"10")
    d.received(client)
    d.core.disconnect(lost)
    d.send(client, P.GET_STATUS, handle)
    assert d.received(client) == [(P.STATUS_RES, (handle, b"1", b"0", b"0", b"0"))]


def lose_worker(d: CoreDriver, handle: bytes) -> None:
    worker = d.worker(b"f")
    assert d.grab_handle(worker) == handle
    d.core.disconnect(worker)


def test_job_retries_minus_one_requeues_without_limit() -> None:
    d = CoreDriver(job_retries=-1)
    client = d.connect()
    handle = d.submit(client, b"f")
    for _ in range(50):
        lose_worker(d, handle)
    assert d.received(client) == []
    assert d.core.jobs[handle].retries == 50


def test_job_retries_zero_is_unlimited_as_in_gearmand() -> None:
    d = CoreDriver(job_retries=0)
    client = d.connect()
    handle = d.submit(client, b"f")
    for _ in range(20):
        lose_worker(d, handle)
    assert d.received(client) == []
    assert d.core.jobs[handle].retries == 20


def test_job_retries_one_fails_the_job_on_the_first_loss() -> None:
    d = CoreDriver(job_retries=1)
    client, admin = d.connect(), d.connect()
    handle = d.submit(client, b"f")
    lose_worker(d, handle)
    assert d.received(client) == [(P.WORK_FAIL, (handle,))]
    assert d.show_jobs(admin) == b".\n"
    assert d.admin(admin, b"status") == b".\n"  # no job and no worker: forgotten
    [notice] = d.core.take_notices()
    assert (notice.level, notice.event, notice.handle) == ("ERROR", JobEvent.DROP, handle)
    assert notice.message.startswith("Dropped job due to max retry count: " + handle.decode())
    assert d.grab(d.worker(b"f")) == NO_JOB


def test_job_retries_n_gives_n_runs_then_fails() -> None:
    # gearmand's meaning of --job-retries 3: three runs in all, then the job is dropped.
    d = CoreDriver(job_retries=3)
    client = d.connect()
    handle = d.submit(client, b"f", unique=b"u")
    for _ in range(2):
        lose_worker(d, handle)
        assert d.received(client) == []
    lose_worker(d, handle)
    assert d.received(client) == [(P.WORK_FAIL, (handle,))]
    assert d.grab(d.worker(b"f")) == NO_JOB
    # The unique is free again for a new job.
    assert d.submit(client, b"f", unique=b"u") != handle


def test_job_retries_drops_a_background_job_too() -> None:
    d = CoreDriver(job_retries=1)
    client, admin = d.connect(), d.connect()
    handle = d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)
    lose_worker(d, handle)
    assert d.received(client) == []
    assert d.show_jobs(admin) == b".\n"


def test_work_fail_is_final_and_never_retried(d: CoreDriver) -> None:
    client = d.connect()
    handle = d.submit(client, b"f")
    worker = d.worker(b"f")
    d.grab_handle(worker)
    d.send(worker, P.WORK_FAIL, handle)
    assert d.received(client) == [(P.WORK_FAIL, (handle,))]
    d.core.disconnect(worker)
    assert d.grab(d.worker(b"f")) == NO_JOB
    assert handle not in d.core.jobs


def test_work_exception_is_final_and_never_retried(d: CoreDriver) -> None:
    client = d.connect()
    handle = d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)
    worker = d.worker(b"f")
    d.grab_handle(worker)
    d.send(worker, P.WORK_EXCEPTION, handle, b"boom")
    assert d.received(worker) == []
    d.core.disconnect(worker)
    assert d.grab(d.worker(b"f")) == NO_JOB


# ---------------------------------------------------------------------------- client loss


def test_client_disconnect_before_assignment_means_the_job_never_runs(d: CoreDriver) -> None:
    client, admin = d.connect(), d.connect()
    d.submit(client, b"f", unique=b"u")
    d.core.disconnect(client)
    worker = d.worker(b"f")
    assert d.grab(worker) == NO_JOB
    assert d.admin(admin, b"status") == b"f\t0\t0\t1\n.\n"
    # Its unique no longer coalesces.
    newcomer = d.connect()
    handle = d.submit(newcomer, b"f", unique=b"u")
    assert d.grab_handle(worker) == handle


def test_client_disconnect_does_not_wake_workers_for_a_dead_job(d: CoreDriver) -> None:
    client = d.connect()
    d.submit(client, b"f")
    d.core.disconnect(client)
    worker = d.worker(b"f")
    d.send(worker, P.PRE_SLEEP)
    assert d.received(worker) == []


def test_client_disconnect_while_running_discards_the_result_quietly(d: CoreDriver) -> None:
    client, admin = d.connect(), d.connect()
    handle = d.submit(client, b"f")
    worker = d.worker(b"f")
    d.grab_handle(worker)
    d.core.disconnect(client)
    d.send(worker, P.WORK_STATUS, handle, b"1", b"2")
    d.send(worker, P.WORK_COMPLETE, handle, b"r")
    assert d.received(worker) == []
    assert client.out == []
    assert d.show_jobs(admin) == b".\n"


def test_one_coalesced_client_leaving_leaves_the_other_served(d: CoreDriver) -> None:
    leaver, stayer = d.connect(), d.connect()
    handle = d.submit(leaver, b"f", unique=b"u")
    d.submit(stayer, b"f", unique=b"u")
    d.core.disconnect(leaver)
    worker = d.worker(b"f")
    assert d.grab_handle(worker) == handle
    d.send(worker, P.WORK_COMPLETE, handle, b"r")
    assert d.received(stayer) == [(P.WORK_COMPLETE, (handle, b"r"))]


def test_job_abandoned_by_client_and_worker_frees_its_unique(d: CoreDriver) -> None:
    client = d.connect()
    handle = d.submit(client, b"f", unique=b"u")
    lost = d.worker(b"f")
    d.grab_handle(lost)
    d.core.disconnect(client)
    d.core.disconnect(lost)
    newcomer = d.connect()
    fresh = d.submit(newcomer, b"f", unique=b"u")
    assert fresh != handle
    worker = d.worker(b"f")
    assert d.grab_handle(worker) == fresh
    d.send(worker, P.WORK_COMPLETE, fresh, b"r")
    assert d.received(newcomer) == [(P.WORK_COMPLETE, (fresh, b"r"))]


def test_background_job_outlives_its_submitter(d: CoreDriver) -> None:
    client = d.connect()
    handle = d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)
    d.core.disconnect(client)
    assert d.grab_handle(d.worker(b"f")) == handle


# ---------------------------------------------------------------------------- epoch jobs


def test_epoch_job_is_not_runnable_before_its_time(d: CoreDriver) -> None:
    when = int(START) + 100
    client = d.connect()
    d.send(client, P.SUBMIT_JOB_EPOCH, b"f", b"", b"%d" % when, b"later")
    [(_, (handle,))] = d.received(client)
    worker = d.worker(b"f")
    assert d.grab(worker) == NO_JOB
    d.send(worker, P.PRE_SLEEP)
    assert d.received(worker) == []
    assert d.core.next_deadline() == when

    d.clock.advance(99)
    d.core.run_timers()
    assert d.received(worker) == []
    d.clock.advance(1)
    d.core.run_timers()
    assert d.received(worker) == [NOOP]
    assert d.grab(worker) == (P.JOB_ASSIGN, (handle, b"f", b"later"))
    assert d.core.next_deadline() is None


def test_epoch_jobs_fall_due_in_time_order(d: CoreDriver) -> None:
    client = d.connect()
    late = int(START) + 20
    early = int(START) + 10
    d.send(client, P.SUBMIT_JOB_EPOCH, b"f", b"", b"%d" % late, b"late")
    d.send(client, P.SUBMIT_JOB_EPOCH, b"f", b"", b"%d" % early, b"early")
    d.received(client)
    assert d.core.next_deadline() == early
    d.core.run_timers(early)
    assert d.core.next_deadline() == late
    worker = d.worker(b"f")
    assert d.grab(worker)[1][2] == b"early"
    assert d.grab(worker) == NO_JOB
    d.core.run_timers(late)
    assert d.grab(worker)[1][2] == b"late"


def test_epoch_job_in_the_past_is_runnable_at_once(d: CoreDriver) -> None:
    worker = d.sleeping_worker(b"f")
    client = d.connect()
    d.send(client, P.SUBMIT_JOB_EPOCH, b"f", b"", b"%d" % (int(START) - 5), b"overdue")
    assert d.received(client)[0][0] == P.JOB_CREATED
    assert d.received(worker) == [NOOP]
    assert d.core.next_deadline() is None


def test_epoch_that_is_not_a_number_is_refused(d: CoreDriver) -> None:
    client = d.connect()
    d.send(client, P.SUBMIT_JOB_EPOCH, b"f", b"", b"soon", b"data")
    assert d.received(client) == [(P.ERROR, (b"INVALID_ARGUMENT", b"Epoch is not a number"))]
    assert d.core.jobs == {}


# ---------------------------------------------------------------------------- CAN_DO_TIMEOUT


def test_can_do_timeout_requeues_the_job_after_the_deadline(d: CoreDriver) -> None:
    client, admin = d.connect(), d.connect()
    handle = d.submit(client, b"f")
    slow = d.connect()
    d.send(slow, P.CAN_DO_TIMEOUT, b"f", b"1500")
    assert d.grab_handle(slow) == handle
    assert d.core.next_deadline() == START + 1.5
    spare = d.sleeping_worker(b"f")

    d.core.run_timers(START + 1.4)
    assert d.received(spare) == []
    d.clock.advance(1.5)
    d.core.run_timers()
    assert d.received(spare) == [NOOP]
    assert d.received(client) == []
    assert d.show_jobs(admin) == handle + b"\t1\t0\t0\n.\n"

    # The timed-out worker no longer holds the job.
    d.send(slow, P.WORK_COMPLETE, handle, b"late")
    assert d.received(slow) == [job_not_found()]
    assert d.received(client) == []
    assert d.grab_handle(spare) == handle
    d.send(spare, P.WORK_COMPLETE, handle, b"on time")
    assert d.received(client) == [(P.WORK_COMPLETE, (handle, b"on time"))]


def test_can_do_timeout_below_one_second_is_raised_to_one_second(d: CoreDriver) -> None:
    d.submit(d.connect(), b"f")
    worker = d.connect()
    d.send(worker, P.CAN_DO_TIMEOUT, b"f", b"10")
    d.grab_handle(worker)
    assert d.core.next_deadline() == START + 1.0


def test_can_do_timeout_does_not_fire_for_a_job_finished_in_time(d: CoreDriver) -> None:
    client = d.connect()
    handle = d.submit(client, b"f")
    worker = d.connect()
    d.send(worker, P.CAN_DO_TIMEOUT, b"f", b"2000")
    d.grab_handle(worker)
    d.send(worker, P.WORK_COMPLETE, handle, b"r")
    d.core.run_timers(START + 5)
    assert d.received(client) == [(P.WORK_COMPLETE, (handle, b"r"))]
    assert d.core.jobs == {}


def test_can_do_timeout_counts_toward_job_retries() -> None:
    d = CoreDriver(job_retries=1)
    client = d.connect()
    handle = d.submit(client, b"f")
    worker = d.connect()
    d.send(worker, P.CAN_DO_TIMEOUT, b"f", b"1000")
    d.grab_handle(worker)
    d.core.run_timers(START + 1)
    assert d.received(client) == [(P.WORK_FAIL, (handle,))]
    assert d.core.jobs == {}


def test_can_do_after_can_do_timeout_clears_the_timeout(d: CoreDriver) -> None:
    d.submit(d.connect(), b"f")
    worker = d.connect()
    d.send(worker, P.CAN_DO_TIMEOUT, b"f", b"1000")
    d.send(worker, P.CAN_DO, b"f")
    d.grab_handle(worker)
    assert d.core.next_deadline() is None


# ---------------------------------------------------------------------------- abilities and misc


def test_cant_do_stops_jobs_and_wakeups_for_that_function(d: CoreDriver) -> None:
    worker = d.worker(b"f", b"g")
    d.send(worker, P.CANT_DO, b"f")
    d.send(worker, P.PRE_SLEEP)
    client, admin = d.connect(), d.connect()
    d.submit(client, b"f")
    assert d.received(worker) == []
    assert d.grab(worker) == NO_JOB
    # f was forgotten when its last worker left, and made again by the submission.
    assert d.admin(admin, b"status") == b"g\t0\t0\t1\nf\t1\t0\t0\n.\n"
    d.send(worker, P.PRE_SLEEP)
    assert d.received(worker) == []
    handle = d.submit(client, b"g")
    assert d.received(worker) == [NOOP]
    assert d.grab_handle(worker) == handle


def test_reset_abilities_forgets_every_function(d: CoreDriver) -> None:
    worker = d.worker(b"f", b"g")
    d.send(worker, P.RESET_ABILITIES)
    assert d.received(worker) == []
    client, admin = d.connect(), d.connect()
    d.submit(client, b"f")
    d.submit(client, b"g")
    assert d.grab(worker) == NO_JOB
    assert d.admin(admin, b"status") == b"f\t1\t0\t0\ng\t1\t0\t0\n.\n"


def test_set_client_id_is_shown_by_workers(d: CoreDriver) -> None:
    worker = d.worker(b"f")
    d.send(worker, P.SET_CLIENT_ID, b"resizer-7")
    assert d.received(worker) == []
    reply = d.admin(worker, b"workers")
    assert reply == b"%d 127.0.0.1 resizer-7 : f\n.\n" % worker.fd


def test_echo_req_returns_the_data_unchanged(d: CoreDriver) -> None:
    peer = d.connect()
    d.send(peer, P.ECHO_REQ, b"ping\0with nul")
    assert d.received(peer) == [(P.ECHO_RES, (b"ping\0with nul",))]
    d.send(peer, P.ECHO_REQ, b"")
    assert d.received(peer) == [(P.ECHO_RES, (b"",))]


def test_one_connection_may_be_client_and_worker_at_once(d: CoreDriver) -> None:
    both = d.worker(b"f")
    handle = d.submit(both, b"f")
    assert d.grab_handle(both) == handle
    d.send(both, P.WORK_COMPLETE, handle, b"self-served")
    assert d.received(both) == [(P.WORK_COMPLETE, (handle, b"self-served"))]


# ---------------------------------------------------------------------------- lifecycle table


def test_every_state_but_done_can_reach_done_and_done_is_final() -> None:
    reachable_from: dict[JobState, set[JobState]] = {state: set() for state in JobState}
    for (state, _event), target in TRANSITIONS.items():
        reachable_from[state].add(target)
    assert reachable_from[JobState.DONE] == set()
    for state in JobState:
        seen, todo = set(), [state]
        while todo:
            for target in reachable_from[todo.pop()]:
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        assert state is JobState.DONE or JobState.DONE in seen, state


def test_an_event_the_table_does_not_allow_is_a_core_bug(d: CoreDriver) -> None:
    handle = d.submit(d.connect(), b"f")
    job = d.core.jobs[handle]
    with pytest.raises(RuntimeError, match=r"FINISH of job .* in state QUEUED"):
        d.core._move(job, JobEvent.FINISH)
    assert job.state is JobState.QUEUED


def test_a_job_goes_from_queued_to_running_to_done(d: CoreDriver) -> None:
    client = d.connect()
    handle = d.submit(client, b"f")
    job = d.core.jobs[handle]
    assert job.state is JobState.QUEUED
    worker = d.worker(b"f")
    d.grab_handle(worker)
    assert job.state is JobState.RUNNING
    d.send(worker, P.WORK_COMPLETE, handle, b"r")
    assert job.state is JobState.DONE
    assert d.core.jobs == {} and worker.holding == {} and client.waiting == set()


def test_a_cancelled_running_job_is_counted_nowhere_and_its_result_goes_nowhere(
    d: CoreDriver,
) -> None:
    client, admin = d.connect(), d.connect()
    handle = d.submit(client, b"f")
    worker = d.worker(b"f")
    d.grab_handle(worker)
    assert d.core.cancel(handle)
    assert d.received(client) == [(P.WORK_FAIL, (handle,))]
    assert d.admin(admin, b"status") == b"f\t0\t0\t1\n.\n"
    assert d.show_jobs(admin) == handle + b"\t0\t1\t0\n.\n"
    d.send(worker, P.WORK_COMPLETE, handle, b"r")
    assert d.received(client) == [] and d.received(worker) == []
    assert d.show_jobs(admin) == b".\n"


def test_a_requeue_and_a_worker_timeout_are_told_as_notices_not_logged(d: CoreDriver) -> None:
    client = d.connect()
    handle = d.submit(client, b"f")
    worker = d.connect()
    d.send(worker, P.CAN_DO_TIMEOUT, b"f", b"1000")
    d.grab_handle(worker)
    d.core.run_timers(START + 1)
    assert [(n.level, n.event, n.handle) for n in d.core.take_notices()] == [
        ("WARNING", None, handle),
        ("WARNING", JobEvent.REQUEUE, handle),
    ]
    assert d.core.take_notices() == []
    assert d.core.jobs[handle].state is JobState.QUEUED


def test_the_run_id_names_the_store_keys_of_jobs_without_a_unique() -> None:
    d = CoreDriver(durable=True, run_id=b"run42")
    client = d.connect()
    d.send(client, P.SUBMIT_JOB_BG, b"f", b"", b"anonymous")
    d.send(client, P.SUBMIT_JOB_BG, b"f", b"-", b"by payload")
    keys = [d.core.store_row(job)[0] for job in d.core.to_store]
    assert keys == [b"\x1egearsql:run42:1", b"\x1egearsql:-run42:2"]


def test_a_job_being_stored_counts_as_waiting_until_its_commit_fails() -> None:
    d = CoreDriver(durable=True)
    client, admin = d.connect(), d.connect()
    d.send(client, P.SUBMIT_JOB_HIGH_BG, b"f", b"u", b"data")
    [job] = d.core.to_store
    assert job.state is JobState.STORING
    assert d.admin(admin, b"prioritystatus") == b"f\t1\t0\t0\t0\n.\n"
    d.core.commit_done([job], "disk full")
    assert job.state is JobState.DONE
    assert d.received(client) == [(P.ERROR, (b"QUEUE_ERROR", b"disk full"))]
    assert d.admin(admin, b"status") == b".\n"
    assert d.core.jobs == {} and d.core.finished_stored == []


def test_a_worker_gets_its_next_job_only_once_the_end_of_its_last_stored_one_is_committed() -> None:
    # docs/reliability.md case 17: a SIGKILL may run again only the jobs in flight.
    d = CoreDriver(durable=True)
    client, worker, other, admin = d.connect(), d.connect(), d.connect(), d.connect()
    for unique in (b"a", b"b", b"c", b"d"):
        d.send(client, P.SUBMIT_JOB_BG, b"f", unique, unique)
    stored, d.core.to_store = d.core.to_store, []
    d.core.commit_done(stored)
    d.send(worker, P.CAN_DO, b"f")
    d.send(worker, P.GRAB_JOB_UNIQ)
    [(kind, (first, _, unique, _))] = d.received(worker)
    assert (kind, unique) == (P.JOB_ASSIGN_UNIQ, b"a")
    # WORK_COMPLETE, the next GRAB and an ECHO in one read: the GRAB's answer waits for the
    # deletion, the ECHO's waits behind it, and the job stays queued meanwhile.
    d.send(worker, P.WORK_COMPLETE, first, b"")
    d.send(worker, P.GRAB_JOB_UNIQ)
    d.send(worker, P.ECHO_REQ, b"ping")
    assert d.received(worker) == []
    assert d.admin(admin, b"status") == b"f\t3\t0\t1\n.\n"
    # Another worker is not held back by it.
    d.send(other, P.CAN_DO, b"f")
    d.send(other, P.GRAB_JOB_UNIQ)
    [(_, (_, _, unique, _))] = d.received(other)
    assert unique == b"b"
    removes, d.core.finished_stored = d.core.finished_stored, []
    ends, d.core.end_holds = d.core.end_holds, []
    assert [job.unique for job in removes] == [b"a"] and [e.worker for e in ends] == [worker]
    # The network layer commits both in one group, then hands the ends back.
    d.core.ends_committed(ends)
    assert worker in d.core.dirty
    [(kind, (second, _, unique, _)), echo] = d.received(worker)
    assert (kind, unique, echo) == (P.JOB_ASSIGN_UNIQ, b"c", (P.ECHO_RES, (b"ping",)))
    # A failure ends a stored run too, and until its commit is done the GRAB waits.
    d.send(worker, P.WORK_FAIL, second)
    d.send(worker, P.GRAB_JOB_UNIQ)
    assert d.received(worker) == []
    assert [job.unique for job in d.core.finished_stored] == [b"c"]
    assert len(d.core.end_holds) == 1


def test_unconfirmed_runs_lets_a_worker_finish_that_many_jobs_before_a_commit() -> None:
    # --unconfirmed-runs 3: three ends may wait for the commit; the fourth GRAB waits for the
    # oldest, so a crash could run again at most three finished jobs of this worker.
    d = CoreDriver(durable=True, unconfirmed_runs=3)
    client, worker = d.connect(), d.connect()
    for unique in (b"a", b"b", b"c", b"d", b"e"):
        d.send(client, P.SUBMIT_JOB_BG, b"f", unique, unique)
    stored, d.core.to_store = d.core.to_store, []
    d.core.commit_done(stored)
    d.send(worker, P.CAN_DO, b"f")
    done = []
    d.send(worker, P.GRAB_JOB_UNIQ)
    for _ in range(3):
        [(kind, (handle, _, unique, _))] = d.received(worker)
        assert kind == P.JOB_ASSIGN_UNIQ
        done.append(unique)
        d.send(worker, P.WORK_COMPLETE, handle, b"")
        d.send(worker, P.GRAB_JOB_UNIQ)
    assert done == [b"a", b"b", b"c"]
    assert d.received(worker) == []  # three ends uncommitted: the fourth job waits
    ends, d.core.end_holds = d.core.end_holds, []
    assert len(ends) == 3
    d.core.ends_committed(ends[:1])  # a commit that took the oldest only
    [(kind, (_, _, unique, _))] = d.received(worker)
    assert (kind, unique) == (P.JOB_ASSIGN_UNIQ, b"d")
    d.core.ends_committed(ends[1:])
    assert d.received(worker) == []  # nothing asked meanwhile, nothing answered
    with pytest.raises(ValueError, match="unconfirmed_runs"):
        CoreDriver(durable=True, unconfirmed_runs=0)


def test_a_worker_that_leaves_while_its_grab_waits_takes_no_job() -> None:
    d = CoreDriver(durable=True)
    client, worker, admin = d.connect(), d.connect(), d.connect()
    for unique in (b"a", b"b"):
        d.send(client, P.SUBMIT_JOB_BG, b"f", unique, unique)
    stored, d.core.to_store = d.core.to_store, []
    d.core.commit_done(stored)
    d.send(worker, P.CAN_DO, b"f")
    d.send(worker, P.GRAB_JOB)
    [(_, (handle, _, _))] = d.received(worker)
    d.send(worker, P.WORK_COMPLETE, handle, b"")
    d.send(worker, P.GRAB_JOB)
    d.core.disconnect(worker)
    ends, d.core.end_holds = d.core.end_holds, []
    d.core.ends_committed(ends)
    assert d.admin(admin, b"status") == b"f\t1\t0\t0\n.\n"
    assert d.core.take_notices() == []


def test_a_worker_of_jobs_not_stored_is_never_held() -> None:
    d = CoreDriver(durable=True)
    client, worker = d.connect(), d.connect()
    d.send(client, P.SUBMIT_JOB, b"f", b"", b"foreground")
    d.send(client, P.SUBMIT_JOB, b"f", b"", b"foreground too")
    d.received(client)
    d.send(worker, P.CAN_DO, b"f")
    d.send(worker, P.GRAB_JOB)
    [(_, (handle, _, _))] = d.received(worker)
    d.send(worker, P.WORK_COMPLETE, handle, b"done")
    d.send(worker, P.GRAB_JOB)
    assert [kind for kind, _ in d.received(worker)] == [P.JOB_ASSIGN]
    assert d.core.end_holds == []
