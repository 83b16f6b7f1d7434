"""Recurring schedules in the sans-IO core, with a fake clock: each tick submitted once, no
burst after downtime or a clock jump, and the tick's job committed with the schedule's next
tick (the same against a real server: ``test_schedules.py``)."""

from __future__ import annotations

from coredriver import START, CoreDriver

from gearsql._cron import parse_cron

MINUTE = 60
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
