"""Plain background jobs wait packed (``JobQueue``): one bytes object each, no Job until a
worker, a status request or an admin needs one. Nothing a client or an admin sees may differ
from a job that was never packed: handles, order, status, cancellation, listings, counters.
"""

from __future__ import annotations

import sys

import pytest
from coredriver import CoreDriver
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gearsql.core import JobState
from gearsql.protocol import AdminLine
from gearsql.protocol import PacketType as P


@pytest.fixture
def d() -> CoreDriver:
    return CoreDriver()


def packed(d: CoreDriver, name: bytes = b"f", priority: int = 1) -> list[bytes]:
    """The packed entries (not unpacked yet) of one of ``name``'s queues."""
    queue = d.core.functions[name].queues[priority]
    return [entry for entry in queue.packed if isinstance(entry, bytes)]


def test_a_plain_background_job_waits_packed_and_runs_as_any_other(d: CoreDriver) -> None:
    client = d.connect()
    handle = d.submit(client, b"f", b"payload", type_=P.SUBMIT_JOB_BG)
    assert handle == b"H:test:1"
    assert d.core.jobs == {} and d.core.packed_jobs == 1
    [entry] = packed(d)
    assert entry.endswith(b"payload") and sys.getsizeof(entry) < 100
    admin = d.connect()
    assert d.admin(admin, b"status") == b"f\t1\t0\t0\n.\n"
    worker = d.worker(b"f")
    assert d.grab(worker) == (P.JOB_ASSIGN, (handle, b"f", b"payload"))
    assert d.core.packed_jobs == 0 and d.core.jobs[handle].state is JobState.RUNNING
    assert d.admin(admin, b"status") == b"f\t1\t1\t1\n.\n"
    d.send(worker, P.WORK_COMPLETE, handle, b"done")
    assert d.core.jobs == {} and d.core.functions[b"f"].wait_time.counts[0] == 1


def test_what_is_not_plain_gets_a_job_at_once(d: CoreDriver) -> None:
    client = d.connect()
    unique = d.submit(client, b"f", unique=b"u", type_=P.SUBMIT_JOB_BG)
    foreground = d.submit(client, b"f")
    large = d.submit(client, b"f", b"x" * (d.core.PACK_LIMIT + 1), type_=P.SUBMIT_JOB_BG)
    d.send(client, P.SUBMIT_JOB_EPOCH, b"f", b"", b"%d" % (d.clock() + 60), b"later")
    [(kind, (epoch,))] = d.received(client)
    assert kind == P.JOB_CREATED
    assert set(d.core.jobs) == {unique, foreground, large, epoch} and d.core.packed_jobs == 0


def test_a_durable_core_packs_nothing(d: CoreDriver) -> None:
    durable = CoreDriver(durable=True)
    client = durable.connect()
    durable.send(client, P.SUBMIT_JOB_BG, b"f", b"", b"x")
    assert durable.core.packed_jobs == 0 and len(durable.core.to_store) == 1


def test_packed_and_unpacked_jobs_keep_one_order(d: CoreDriver) -> None:
    client, other = d.connect(), d.connect()
    order = [
        d.submit(client, b"f", b"a", type_=P.SUBMIT_JOB_BG),
        d.submit(client, b"f", b"b", type_=P.SUBMIT_JOB_BG),
        d.submit(client, b"f", b"c", unique=b"u", type_=P.SUBMIT_JOB_BG),
        d.submit(other, b"f", b"d"),
        d.submit(client, b"f", b"e", type_=P.SUBMIT_JOB_BG),
        d.submit(client, b"f", b"g", type_=P.SUBMIT_JOB_BG),
    ]
    high = d.submit(client, b"f", b"h", type_=P.SUBMIT_JOB_HIGH_BG)
    assert d.core.packed_jobs == 5
    # A status request unpacks a job in the middle of a run of packed ones, where it is.
    d.send(client, P.GET_STATUS, order[1])
    assert d.received(client) == [(P.STATUS_RES, (order[1], b"1", b"0", b"0", b"0"))]
    assert d.core.packed_jobs == 4 and order[1] in d.core.jobs
    worker = d.worker(b"f")
    assert [d.grab_handle(worker) for _ in range(7)] == [high, *order]
    assert d.grab(worker) == (P.NO_JOB, ())


def test_a_status_request_finds_a_packed_job_deep_in_any_queue(d: CoreDriver) -> None:
    client = d.connect()
    handles = {
        name: [d.submit(client, name, b"%d" % n, type_=P.SUBMIT_JOB_BG) for n in range(300)]
        for name in (b"f", b"g")
    }
    for name in (b"g", b"f"):
        for handle in handles[name][::37]:
            d.send(client, P.GET_STATUS, handle)
            assert d.received(client) == [(P.STATUS_RES, (handle, b"1", b"0", b"0", b"0"))]
            assert d.core.jobs[handle].function.name == name
    # Handles that are not (or no longer) any job's: unknown, and nothing is unpacked.
    unpacked = len(d.core.jobs)
    for handle in (b"H:test:0", b"H:test:01", b"H:test:601", b"H:other:5", b"H:test:", b"x"):
        d.send(client, P.GET_STATUS, handle)
        assert d.received(client) == [(P.STATUS_RES, (handle, b"0", b"0", b"0", b"0"))]
    assert len(d.core.jobs) == unpacked
    worker = d.worker(b"f", b"g")
    taken = [d.grab_handle(worker) for _ in range(600)]
    assert sorted(taken) == sorted(handles[b"f"] + handles[b"g"])
    assert taken[:2] == [handles[b"f"][0], handles[b"g"][0]]  # round-robin across functions
    assert d.core.packed_jobs == 0


def test_cancelling_packed_jobs_unpacks_them_and_the_queue_is_compacted(d: CoreDriver) -> None:
    client, admin = d.connect(), d.connect()
    handles = [d.submit(client, b"f", b"%d" % n, type_=P.SUBMIT_JOB_BG) for n in range(10)]
    for handle in handles[2:7]:
        assert d.admin(admin, b"cancel job " + handle) == b"OK\r\n"
    assert d.admin(admin, b"cancel job " + handles[3]) != b"OK\r\n"  # cancelled already
    # Six of ten cancelled would be more than half: compacted at the sixth, not yet.
    queue = d.core.functions[b"f"].queues[1]
    assert len(queue) == 10 and d.core.functions[b"f"].stale[1] == 5
    assert d.admin(admin, b"cancel job " + handles[8]) == b"OK\r\n"
    assert len(queue) == 4 and d.core.functions[b"f"].stale[1] == 0
    assert set(d.core.jobs) == set() and d.core.packed_jobs == 4
    assert d.admin(admin, b"status") == b"f\t4\t0\t0\n.\n"
    worker = d.worker(b"f")
    kept = [handles[0], handles[1], handles[7], handles[9]]
    assert [d.grab_handle(worker) for _ in range(4)] == kept


def test_listings_show_packed_jobs_without_unpacking_them(d: CoreDriver) -> None:
    client, admin = d.connect(), d.connect()
    first = d.submit(client, b"f", b"a", type_=P.SUBMIT_JOB_BG)
    low = d.submit(client, b"g", b"b", type_=P.SUBMIT_JOB_LOW_BG)
    assert d.admin(admin, b"show jobs") == (
        b"%s\t0\t0\t1\t0\tqueued\t-\n%s\t0\t0\t1\t0\tqueued\t-\n.\n" % (first, low)
    )
    assert d.core.packed_jobs == 2 and d.core.jobs == {}
    [job] = [job for job in d.core.all_jobs() if job.handle == low]
    assert (job.function.name, job.priority, job.data, job.background) == (b"g", 2, b"b", True)
    assert d.admin(admin, b"prioritystatus") == b"f\t0\t1\t0\t0\ng\t0\t0\t1\t0\n.\n"


def test_dropping_a_function_cancels_its_packed_jobs(d: CoreDriver) -> None:
    client, admin = d.connect(), d.connect()
    for n in range(5):
        d.submit(client, b"f", b"%d" % n, type_=P.SUBMIT_JOB_BG)
    kept = d.submit(client, b"g", type_=P.SUBMIT_JOB_BG)
    assert d.admin(admin, b"drop function f") == b"OK\r\n"
    assert list(d.core.functions) == [b"g"] and d.core.packed_jobs == 1
    assert d.core.jobs == {}
    assert d.grab_handle(d.worker(b"g")) == kept


def test_a_sleeping_worker_is_woken_by_a_packed_job(d: CoreDriver) -> None:
    worker = d.sleeping_worker(b"f")
    client = d.connect()
    handle = d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)
    assert d.received(worker) == [(P.NOOP, ())]
    assert d.grab_handle(worker) == handle
    # A worker about to sleep is told at once that a packed job waits.
    later = d.submit(client, b"f", type_=P.SUBMIT_JOB_BG)
    d.send(worker, P.PRE_SLEEP)
    assert d.received(worker) == [(P.NOOP, ())]
    assert d.grab_handle(worker) == later


def test_any_handle_is_found_however_unevenly_the_numbers_are_spread(d: CoreDriver) -> None:
    client = d.connect()
    # Runs of uneven length in two functions: neither queue's numbers are evenly spread.
    by_function: dict[bytes, list[bytes]] = {b"f": [], b"g": []}
    for n in range(600):
        name = b"f" if (n * n) % 7 < 3 or 200 <= n < 260 else b"g"
        by_function[name].append(d.submit(client, name, b"%d" % n, type_=P.SUBMIT_JOB_BG))
    order = sorted(by_function[b"f"] + by_function[b"g"], key=lambda handle: (handle[-1], handle))
    for handle in order:  # an order unrelated to the queues', with unpacked jobs piling up
        d.send(client, P.GET_STATUS, handle)
        assert d.received(client) == [(P.STATUS_RES, (handle, b"1", b"0", b"0", b"0"))]
    assert d.core.packed_jobs == 0
    for name, handles in by_function.items():
        worker = d.worker(name)
        assert [d.grab_handle(worker) for _ in handles] == handles


# --- Packed against never packed ---------------------------------------------------------------
# The same clients, workers and admin do the same things to two cores, one that packs and one
# that never does (PACK_LIMIT -1): every byte either sends must be the same.

NAMES = (b"f", b"g")
SUBMITS = (P.SUBMIT_JOB_BG, P.SUBMIT_JOB_HIGH_BG, P.SUBMIT_JOB_LOW_BG, P.SUBMIT_JOB)
steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("submit"),
            st.integers(0, 1),
            st.sampled_from(SUBMITS),
            st.sampled_from(NAMES),
            st.sampled_from([b"", b"", b"", b"u1", b"u2"]),
        ),
        st.tuples(st.just("epoch"), st.sampled_from([0, 30, 90])),
        st.tuples(st.just("tick"), st.sampled_from([0, 60])),
        st.tuples(st.just("status"), st.integers(0, 40)),
        st.tuples(st.just("cancel"), st.integers(0, 40)),
        st.tuples(st.just("grab"), st.integers(0, 2)),
        st.tuples(st.just("complete"), st.integers(0, 2)),
        st.tuples(st.just("lose"), st.integers(0, 2)),
        st.tuples(st.just("sleep"), st.integers(0, 2)),
        st.tuples(st.just("admin"), st.sampled_from([b"status", b"prioritystatus", b"show jobs"])),
    ),
    max_size=80,
)


class Side:
    """One core with two clients, three workers (f, g, both) and an admin."""

    def __init__(self, pack: bool) -> None:
        self.d = CoreDriver()
        if not pack:
            self.d.core.PACK_LIMIT = -1
        self.clients = [self.d.connect(), self.d.connect()]
        self.abilities = [(b"f",), (b"g",), (b"f", b"g")]
        self.workers = [self.d.worker(*names) for names in self.abilities]
        self.admin = self.d.connect()

    def everything_sent(self) -> list[bytes]:
        sessions = [*self.clients, *self.workers, self.admin]
        return [self.d.raw_output(session) for session in sessions]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_a_core_that_packs_says_what_one_that_never_packs_says(plan: list[tuple]) -> None:
    sides = [Side(pack=True), Side(pack=False)]
    handles: list[bytes] = []
    held: list[list[bytes]] = [[], [], []]
    for step in plan:
        for side in sides:
            d, kind = side.d, step[0]
            if kind == "submit":
                _, client, type_, name, unique = step
                d.send(side.clients[client], type_, name, unique, b"%d" % len(handles))
            elif kind == "epoch":
                when = b"%d" % (d.clock() + step[1]) if step[1] else b"0"
                d.send(side.clients[0], P.SUBMIT_JOB_EPOCH, b"f", b"", when, b"at")
            elif kind == "tick":
                d.clock.advance(step[1])
                d.core.run_timers()
            elif kind in ("status", "cancel"):
                known = handles or [b"H:test:1"]
                handle = known[step[1] % len(known)]
                if kind == "status":
                    d.send(side.clients[0], P.GET_STATUS, handle)
                else:
                    d.core.handle_admin(side.admin, AdminLine(b"cancel job " + handle))
            elif kind == "grab":
                d.send(side.workers[step[1]], P.GRAB_JOB)
            elif kind == "complete" and held[step[1]]:
                d.send(side.workers[step[1]], P.WORK_COMPLETE, held[step[1]][0], b"done")
            elif kind == "lose":
                d.core.disconnect(side.workers[step[1]])
                side.workers[step[1]] = d.worker(*side.abilities[step[1]])
            elif kind == "sleep":
                d.send(side.workers[step[1]], P.PRE_SLEEP)
            elif kind == "admin":
                d.core.handle_admin(side.admin, AdminLine(step[1]))
        packed, unpacked = (side.everything_sent() for side in sides)
        if step[0] == "admin" and step[1] == b"show jobs":
            # The listing's order may differ (oldest first against the handle table's order).
            packed[-1], unpacked[-1] = (
                sorted(packed[-1].split(b"\n")),
                sorted(unpacked[-1].split(b"\n")),
            )
        assert packed == unpacked, step
        # Follow the replies: new handles, and what each worker holds.
        for reply in CoreDriver.parse(b"".join(packed[:2])):
            if reply[0] == P.JOB_CREATED and reply[1][0] not in handles:
                handles.append(reply[1][0])
        for index, data in enumerate(packed[2:5]):
            if step[0] == "lose" and step[1] == index:
                held[index] = []
            for reply in CoreDriver.parse(data):
                if reply[0] == P.JOB_ASSIGN:
                    held[index].append(reply[1][0])
        if step[0] == "complete" and held[step[1]]:
            held[step[1]].pop(0)
    assert sides[1].d.core.packed_jobs == 0
