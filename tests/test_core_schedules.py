"""Recurring schedules in the sans-IO core, with a fake clock: each tick submitted once, no
burst after downtime or a clock jump, and the tick's job committed with the schedule's next
tick (the same against a real server: ``test_schedules.py``)."""

from __future__ import annotations

import calendar

import pytest
from coredriver import START, CoreDriver

from gearsql._cron import parse_cron
from gearsql.protocol import PacketType as P

MINUTE = 60
NOOP = (P.NOOP, ())
#: START is 2023-11-14 22:13:20 UTC: the next whole minute is 40 s later.
FIRST = int(START) // MINUTE * MINUTE + MINUTE


def test_each_tick_submits_one_background_job_named_after_it() -> None:
    d = CoreDriver()
    admin = d.connect()
    assert d.admin(admin, b"schedule add tick f * * * * * some data") == b"OK %d\r\n" % FIRST
    assert d.admin(admin, b"schedule list") == b"tick\tf\t* * * * *\t%d\t9\n.\n" % FIRST
    assert d.core.next_deadline() == FIRST
    d.clock.advance(FIRST - START)
    d.core.run_timers()
    d.core.run_timers()
    [job] = d.core.jobs.values()
    assert (job.function.name, job.unique, job.data, job.background) == (
        b"f",
        b"tick@%d" % FIRST,
        b"some data",
        True,
    )
    assert d.core.schedules[b"tick"].due == FIRST + MINUTE


def test_no_burst_after_downtime_or_a_jump_forward_and_no_repeat_after_a_jump_back() -> None:
    d = CoreDriver()
    d.core.add_schedule(b"s", b"f", parse_cron("* * * * *"), b"")
    d.clock.advance(FIRST - START + 10 * MINUTE + 5)  # ten ticks missed
    d.core.run_timers()
    assert [job.unique for job in d.core.jobs.values()] == [b"s@%d" % FIRST]
    assert d.core.schedules[b"s"].due == FIRST + 11 * MINUTE
    d.clock.now -= 30 * MINUTE  # the clock jumps back: nothing runs again until the due tick
    d.core.run_timers()
    assert len(d.core.jobs) == 1
    assert d.core.next_deadline() == FIRST + 11 * MINUTE


def test_the_ticks_job_and_the_schedules_next_tick_go_in_one_commit() -> None:
    d = CoreDriver(durable=True)
    d.core.add_schedule(b"s", b"f", parse_cron("*/5 * * * *"), b"x")
    assert [name for name, _ in d.core.schedule_changes] == [b"s"]
    d.core.schedule_changes = []
    d.clock.advance(3600)
    d.core.run_timers()
    [job] = d.core.to_store
    assert job.unique.startswith(b"s@")
    [(name, schedule)] = d.core.schedule_changes
    assert name == b"s" and schedule is not None and schedule.due is not None
    assert schedule.due > d.clock() and d.core.pending_writes


def test_a_stored_schedule_past_due_submits_its_tick_once_at_start_up() -> None:
    d = CoreDriver()
    due = FIRST - 7 * MINUTE  # due while the server was down
    d.core.add_schedule(b"s", b"f", parse_cron("* * * * *"), b"", due)
    d.core.run_timers()
    assert [job.unique for job in d.core.jobs.values()] == [b"s@%d" % due]
    assert d.core.schedules[b"s"].due == FIRST


def test_schedule_admin_commands_check_their_arguments_and_trust() -> None:
    d = CoreDriver()
    admin = d.connect()
    remote = d.connect(peer="192.0.2.1", trusted=False)
    assert d.admin(admin, b"schedule add s f 0 0 30 2 *").startswith(b"ERR INVALID_ARGUMENTS")
    assert d.admin(admin, b"schedule add s f 61 * * * *").startswith(b"ERR INVALID_ARGUMENTS")
    assert d.admin(admin, b"schedule add s@x f * * * * *").startswith(b"ERR INVALID_ARGUMENTS")
    assert d.admin(admin, b"schedule add " + b"n" * 41 + b" f * * * * *").startswith(b"ERR")
    assert d.admin(remote, b"schedule add s f * * * * *").startswith(b"ERR PERMISSION_DENIED")
    assert d.admin(remote, b"schedule list") == b".\n"
    assert d.admin(admin, b"schedule remove s") == b"ERR UNKNOWN_SCHEDULE\r\n"
    assert d.admin(admin, b"schedule add s f * * * * *").startswith(b"OK ")
    assert d.admin(admin, b"schedule remove s") == b"OK\r\n"
    d.clock.advance(3600)
    d.core.run_timers()
    assert d.core.jobs == {}


def test_catch_up_all_submits_each_missed_tick_up_to_a_hundred_and_none_skips_late_ones() -> None:
    d = CoreDriver()
    d.core.add_schedule(b"all", b"f", parse_cron("* * * * * catch-up=all"), b"")
    d.core.add_schedule(b"none", b"g", parse_cron("* * * * * catch-up=none"), b"")
    d.clock.advance(FIRST - START + 5)  # on time (5 s late): every mode submits its tick
    d.core.run_timers()
    assert sorted(job.unique for job in d.core.jobs.values()) == [
        b"all@%d" % FIRST,
        b"none@%d" % FIRST,
    ]
    d.clock.advance(3 * MINUTE)  # three ticks missed (the server was down)
    d.core.run_timers()
    uniques = {job.unique for job in d.core.jobs.values()}
    assert {b"all@%d" % (FIRST + n * MINUTE) for n in range(1, 4)} <= uniques
    assert not any(u.startswith(b"none@") and u != b"none@%d" % FIRST for u in uniques)
    assert d.core.schedules[b"none"].due == d.core.schedules[b"all"].due == FIRST + 4 * MINUTE
    d.clock.advance(500 * MINUTE)  # 500 missed: "all" submits the first 100 only
    d.core.run_timers()
    made_up = [job for job in d.core.jobs.values() if job.function.name == b"f"]
    assert len(made_up) == 4 + 100
    assert d.core.schedules[b"all"].due == int(d.clock()) // MINUTE * MINUTE + MINUTE


def test_the_catch_up_mode_is_part_of_the_stored_spec_and_of_the_admin_commands() -> None:
    d = CoreDriver(durable=True)
    admin = d.connect()
    assert d.admin(admin, b"schedule add catch-up=all s f 0 3 * * *").startswith(b"OK ")
    assert d.admin(admin, b"schedule add catch-up=many t f 0 3 * * *").startswith(b"ERR")
    assert d.admin(admin, b"schedule list").split(b"\t")[2] == b"0 3 * * * catch-up=all"
    [(_, schedule)] = d.core.schedule_changes
    assert schedule is not None and parse_cron(schedule.spec.text).catch_up == "all"
    d.admin(admin, b"schedule add catch-up=one s f 0 3 * * *")
    assert d.core.schedules[b"s"].spec.text == "0 3 * * *"


def test_config_schedules_keep_a_stored_ones_next_tick_unless_their_definition_changed() -> None:
    d = CoreDriver(durable=True)
    due = FIRST - 7 * MINUTE  # stored, and due while the server was down
    d.core.add_schedule(b"same", b"f", parse_cron("* * * * *"), b"x", due)
    d.core.add_schedule(b"changed", b"f", parse_cron("* * * * *"), b"x", due)
    d.core.add_schedule(b"left out", b"f", parse_cron("* * * * *"), b"x", due)
    d.core.define_schedules(
        [
            (b"same", b"f", parse_cron("* * * * *"), b"x"),
            (b"changed", b"f", parse_cron("*/5 * * * *"), b"x"),
            (b"new", b"g", parse_cron("0 * * * *"), b""),
        ]
    )
    assert d.core.schedules[b"same"].due == due  # its missed tick still runs once
    assert d.core.schedules[b"changed"].spec.text == "*/5 * * * *"
    assert d.core.schedules[b"changed"].due == FIRST + MINUTE  # 22:14 -> 22:15
    assert d.core.schedules[b"left out"].due == due
    assert d.core.schedules[b"new"].due == FIRST + 46 * MINUTE  # 23:00
    assert [name for name, _ in d.core.schedule_changes] == [b"changed", b"new"]


def test_submit_job_sched_is_a_background_job_at_the_next_matching_minute() -> None:
    d = CoreDriver()
    client = d.connect()
    worker = d.sleeping_worker(b"f")
    # START is Tuesday 2023-11-14 22:13:20 UTC; minute 30, any hour, day, month: 22:30 today.
    d.send(client, P.SUBMIT_JOB_SCHED, b"f", b"u", b"30", b"", b"", b"", b"", b"payload")
    [(kind, (handle,))] = d.received(client)
    assert kind == P.JOB_CREATED
    assert d.core.jobs[handle].when == FIRST + 16 * MINUTE
    assert d.core.next_deadline() == FIRST + 16 * MINUTE
    d.clock.advance(16 * MINUTE + 39)
    d.core.run_timers()
    assert d.received(worker) == []
    d.clock.advance(1)
    d.core.run_timers()
    assert d.received(worker) == [NOOP]
    assert d.grab(worker) == (P.JOB_ASSIGN, (handle, b"f", b"payload"))
    # Every field empty: the next whole minute. Fields take cron's syntax: the next Sunday.
    d.send(client, P.SUBMIT_JOB_SCHED, b"f", b"", b"", b"", b"", b"", b"", b"")
    d.send(client, P.SUBMIT_JOB_SCHED, b"f", b"", b"0", b"0", b"", b"", b"0", b"")
    [(_, (soon,)), (_, (sunday,))] = d.received(client)
    assert d.core.jobs[soon].when == int(d.clock()) // MINUTE * MINUTE + MINUTE
    assert d.core.jobs[sunday].when == calendar.timegm((2023, 11, 19, 0, 0, 0))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ((b"60", b"", b"", b"", b""), b"minute field '60': values run from 0 to 59"),
        ((b"", b"x", b"", b"", b""), b"hour field 'x': want *, N, A-B, */N or lists of them"),
        ((b"", b"", b"1 2", b"", b""), b"day of month field '1 2': one field, without spaces"),
        ((b"", b"", b"\xff", b"", b""), b"day of month field is not ASCII"),
        ((b"0", b"0", b"30", b"2", b""), b"The time never comes"),
    ],
)
def test_submit_job_sched_with_a_bad_field_is_refused_and_creates_no_job(
    fields: tuple[bytes, ...], reason: bytes
) -> None:
    d = CoreDriver()
    client = d.connect()
    d.send(client, P.SUBMIT_JOB_SCHED, b"f", b"", *fields, b"data")
    assert d.received(client) == [(P.ERROR, (b"INVALID_ARGUMENT", reason))]
    assert d.core.jobs == {}
