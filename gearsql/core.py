"""The job-matching core of the job server: functions, priority queues, jobs, workers, clients.

Theory of operation
-------------------
There is no I/O here. The network layer hands the core one :class:`Session` per connection and
the packets and admin lines that arrived on it; the core answers by appending bytes to the
sessions' output lists and listing them in :attr:`JobServerCore.dirty`, which the network layer
writes out once per loop turn. Time enters only through the ``now`` arguments and
:meth:`JobServerCore.next_deadline` / :meth:`JobServerCore.run_timers`, randomness only through
the ``run_id`` parameter and the ``jitter`` source of retry backoffs, and the core never
logs: what an operator should hear of (a requeue, a dropped job, a cancel) is appended to
:attr:`JobServerCore.notices` for the network layer to log.
So the whole matching logic is tested without sockets, an event loop or a logger.

Every job is in one :class:`~gearsql._corestate.JobState`, and it changes state only through
:meth:`JobServerCore._move` by one :class:`~gearsql._corestate.JobEvent` allowed by
:data:`~gearsql._corestate.TRANSITIONS` (the table, the job, function and session objects live in
:mod:`gearsql._corestate`; the rules that act on them live here). ``_move``
keeps the per-function counters (``waiting`` per priority, ``running``) and does what entering
a state means: a QUEUED job is appended to its queue (and sleeping workers are woken), a
SCHEDULED one is put on the timer heap, a CANCELLED one stops coalescing and its clients are let
go, and DONE -- the one way out -- forgets the job everywhere (the worker's hold, the handle
table, the unique index, the durable row). A cancelled job is not dug out of the middle of its
queue: it stays there, skipped and let go (DISCARD) when a worker meets it, as in gearmand::

    NEW --STORE--> STORING --(commit)--> QUEUED or SCHEDULED    (durable background jobs)
    NEW --QUEUE--> QUEUED --ASSIGN--> RUNNING --FINISH--> DONE
    NEW --DELAY--> SCHEDULED --QUEUE (due)--> QUEUED
    RUNNING --REQUEUE (worker lost)--> QUEUED;  RUNNING --DROP (job_retries runs made)--> DONE
    any live state --CANCEL--> CANCELLED --DISCARD--> DONE
    QUEUED --ABANDON (its last client left)--> CANCELLED
    RUNNING --ABANDON (worker lost, nobody waits)--> DONE
    RUNNING --RETRY (failed, attempts left)--> RETRYING --QUEUE (backoff over)--> QUEUED
    RUNNING --BURY (failed, last attempt)--> DEAD --PURGE--> DONE

**Packed jobs.** A client's plain background job (no unique, no epoch time or reducer, a payload
of at most ``PACK_LIMIT`` bytes, a server without a durable store) goes NEW to QUEUED without
a Job: ``_submit_packed`` does what entering QUEUED does and appends one bytes object to its
:class:`~gearsql._corestate.JobQueue` (its handle number, the time it was queued, the payload).
The Job is built in state QUEUED (``_unpack``) when a worker takes it, when its handle is looked
up (GET_STATUS, ``cancel job``: :meth:`JobServerCore.job` finds it by bisection and unpacks it
in place) or when its function is dropped; the listings (``show jobs``, the web page) see it
through :meth:`JobServerCore.all_jobs` without unpacking it. A deep queue of such jobs costs a
third of the memory it would as Jobs, and nothing a client or an admin sees tells the two apart.

**Runs of submissions.** A connection hands over a read's packets with
:meth:`JobServerCore.handle_packets`, which does what :meth:`JobServerCore.handle_packet` does
to each but takes a run of plain background submissions (what a pipelining client sends) in one
call, ``_submit_run``: the function, its queue and its room are looked up once per stretch of
one function and priority, the counters move once per stretch, the queued time is read once per
run, and each job's JOB_CREATED (and any NOOP it causes) goes out in the order the packets came.
``tests/test_core_runs.py`` holds the two ways to the same bytes.

**Retries and dead letters.** A background job whose run fails (WORK_FAIL, WORK_EXCEPTION, or
its worker lost or timed out) under an active :class:`~gearsql._corestate.RetryPolicy` (the
server's ``retry_policy``, or its function's in ``retry_policies``) goes RETRY to RETRYING: it
is counted as waiting and sits on the timer heap, like an epoch job, until its backoff
(:func:`~gearsql._corestate.backoff_delay`, jittered by the injected ``jitter``) is over. Its
failure count (``Job.retries``), last error and due time are stored: entering RETRYING puts a
stored job on :attr:`JobServerCore.updated_stored`, rewritten with the next group commit, so a
restart replays it as RETRYING (NEW --RETRY-->) and runs it once. The last failed attempt BURYs
it: DEAD leaves the handle table and the unique index and moves to :attr:`JobServerCore.dead`;
its queue row goes (``finished_stored``) and a dead-letter row comes (``buried``) in the same
commit. ``retry dead`` submits a fresh job from it and PURGEs it (``purged``), as do ``purge
dead`` and ``cancel job`` with its handle. Without a policy a failure FINISHes the job, as in
Gearman, and foreground jobs always do: their clients get the failure. A lost worker of a job
with no policy follows ``job_retries`` (gearmand's meaning: at most that many runs; 0 or less
is unlimited).

**A worker's next job waits for the end of its last.** When a worker ends a run of a stored job
(WORK_COMPLETE, WORK_FAIL, WORK_EXCEPTION), the end is noted in
:attr:`JobServerCore.end_holds` and its next GRAB gets a placeholder instead of a job; the
network layer takes the ends with the group commit that writes them and hands them back to
:meth:`JobServerCore.ends_committed`, which answers the waiting GRABs. So a crash runs again
only the jobs in flight (docs/reliability.md case 17), and the job stays queued meanwhile.

**Uniques that remember.** When a background job with a real unique (not empty, not ``-``)
ends in WORK_COMPLETE and its function's unique window (``unique_window``, or its own in
``unique_windows``) is open, :meth:`remember` keeps (function, unique) -> (expiry, result) in
:attr:`JobServerCore.remembered`; a later submission of it finds no live job to coalesce onto and
is answered by :meth:`_recall` (JOB_CREATED with a fresh handle and no job; a foreground one
gets WORK_COMPLETE with the kept result when ``keep_results``, else it runs). Expiries sit on
their own heap, purged by :meth:`run_timers`, so memory holds only the uniques of one window. In a
durable store they travel with the group commit (``remembered_added``, ``remembered_expired``).

**Schedules.** A :class:`~gearsql._corestate.Schedule` (``schedule add``) waits on its own
heap for its next tick (:func:`~gearsql._cron.next_tick`); :meth:`_tick` submits its
background job with the unique ``NAME@EPOCH`` and moves it on to the first tick after now (no
burst of missed ticks unless its spec says ``catch-up=all``; a clock set back repeats nothing),
and a durable core writes the new next tick (``schedule_changes``) in the group commit that
stores the job. Schedules of the config file are reconciled with the stored ones at start-up
(:meth:`define_schedules`). SUBMIT_JOB_SCHED is no schedule: its fields give one time, the
next they match, and the job is an epoch job from then on (:meth:`_submit_sched`).

What a client cannot make the core keep: an abandoned foreground job drops its payload at once
(no worker will ever read it), and a queue compacts itself (DISCARD of every cancelled job in it)
as soon as cancelled jobs are half of it, so cancelled jobs never outnumber live ones. A
function with no worker, no job and no ``maxqueue`` limit is forgotten (:meth:`_release`), and
``max_functions`` caps how many functions there are.

Behaviour follows C gearmand 1.1.x as real clients see it, with these choices: priority is
global across a worker's functions, functions are served round-robin, epoch jobs wake sleeping
workers when they fall due. The admin counts count live jobs only (see
:class:`~gearsql._corestate.Function`); a RETRYING job is live (waiting), a DEAD one is not.

Where the rules live: :mod:`gearsql._corestate` holds the tables (states, transitions, jobs,
functions, sessions); :mod:`gearsql._corejobs` the state and the lifecycle that moves a job
(``_move`` and its ways out, retries, dead letters, remembered uniques);
:mod:`gearsql._coreclients` what clients' packets do (submit, status) and the other ways in
(replay, schedules, ``retry dead``); :mod:`gearsql._coreworkers` what workers' packets do.
This module puts them together: :class:`JobServerCore`, its packet dispatch and its clock.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable, Sequence

from gearsql._coreclients import _BACKGROUND_RANK, ClientRules
from gearsql._corejobs import (
    _NOT_EXPECTED,
    ANONYMOUS_PREFIX,
    P,
    error_packet,
)
from gearsql._corestate import (  # the short state and event names are for the hot path
    QUEUE,
    RETRYING,
    SCHEDULED,
    TRANSITIONS,
    Function,
    Job,
    JobEvent,
    JobState,
    Notice,
    RetryPolicy,
    Schedule,
    Session,
)
from gearsql._coreworkers import WorkerRules
from gearsql.admin import run_admin_command
from gearsql.protocol import (
    AdminLine,
    Event,
    Packet,
    PacketType,
)

__all__ = [
    "ANONYMOUS_PREFIX",
    "TRANSITIONS",
    "Function",
    "Job",
    "JobEvent",
    "JobServerCore",
    "JobState",
    "Notice",
    "RetryPolicy",
    "Schedule",
    "Session",
]


class JobServerCore(WorkerRules, ClientRules):
    """All job-server state and rules, driven by packets, admin lines and the clock.

    Parameters mirror gearmand's options: ``handle_prefix`` (``H:<host>``), ``job_retries``
    (gearmand's meaning: a job whose worker was lost or timed out runs at most N times in all;
    0 or -1 is unlimited), ``worker_wakeup``
    (NOOP at most this many sleeping workers per new job, 0 = all), ``exceptions`` (forward
    WORK_EXCEPTION to every client, not only those that asked). ``run_id`` tells this run of
    the server from every other (random bytes from the caller): it keeps the store keys of jobs
    without a unique apart across restarts. ``retry_policy`` is the server-wide
    :class:`RetryPolicy` for failed background jobs (off by default), which ``retries``
    admin commands override per function; ``jitter`` returns a number in [0, 1] for each
    backoff (the caller's random source: the core has none of its own).
    """

    @functools.cached_property
    def _dispatch(self) -> dict[PacketType, Callable[[Session, Packet], None]]:
        """The handler of each packet type (computed once per core)."""
        dispatch: dict[PacketType, Callable[[Session, Packet], None]] = {
            P.CAN_DO: self._can_do,
            P.CAN_DO_TIMEOUT: self._can_do_timeout,
            P.CANT_DO: self._cant_do,
            P.RESET_ABILITIES: self._reset_abilities,
            P.PRE_SLEEP: self._pre_sleep,
            P.GRAB_JOB: self._grab_job,
            P.GRAB_JOB_UNIQ: self._grab_job,
            P.GRAB_JOB_ALL: self._grab_job,
            P.SUBMIT_JOB: self._submit,
            P.SUBMIT_JOB_BG: self._submit,
            P.SUBMIT_JOB_HIGH: self._submit,
            P.SUBMIT_JOB_HIGH_BG: self._submit,
            P.SUBMIT_JOB_LOW: self._submit,
            P.SUBMIT_JOB_LOW_BG: self._submit,
            P.SUBMIT_JOB_EPOCH: self._submit_epoch,
            P.SUBMIT_JOB_SCHED: self._submit_sched,
            P.SUBMIT_REDUCE_JOB: self._submit_reduce,
            P.SUBMIT_REDUCE_JOB_BACKGROUND: self._submit_reduce,
            P.WORK_STATUS: self._work_status,
            P.WORK_DATA: self._work_data,
            P.WORK_WARNING: self._work_data,
            P.WORK_COMPLETE: self._work_complete,
            P.WORK_FAIL: self._work_fail,
            P.WORK_EXCEPTION: self._work_exception,
            P.GET_STATUS: self._get_status,
            P.GET_STATUS_UNIQUE: self._get_status_unique,
            P.ECHO_REQ: self._echo,
            P.OPTION_REQ: self._option,
            P.SET_CLIENT_ID: self._set_client_id,
        }
        for type_ in _NOT_EXPECTED:
            dispatch[type_] = self._not_expected
        return dispatch

    def handle_packet(self, session: Session, packet: Packet) -> None:
        """Act on one binary packet from ``session``."""
        if not packet.request:
            self.send(session, error_packet(b"INVALID_MAGIC", b"Request magic expected"))
            return
        self._dispatch[packet.type](session, packet)

    def handle_packets(self, session: Session, events: Sequence[Event], index: int = 0) -> int:
        """Act on the packets of ``events`` from ``session``, in order, from ``index`` up to
        the first event that is not a packet; return that event's index (``len(events)``
        when there is none). The same as :meth:`handle_packet` on each packet, in fewer
        calls: a run of plain background submissions is taken in one (``_submit_run``)."""
        dispatch = self._dispatch
        end = len(events)
        while index < end:
            packet = events[index]
            if type(packet) is not Packet:
                return index
            if packet.type in _BACKGROUND_RANK and not packet.args[1] and end - index > 1:
                # Plain, with more packets behind it: maybe a run (a lone one is cheaper
                # through its handler than through a run's set-up).
                after = self._submit_run(session, events, index)
                if after > index:
                    index = after
                    continue
            index += 1
            if packet.request:
                dispatch[packet.type](session, packet)
            else:
                self.handle_packet(session, packet)
        return index

    def handle_admin(self, session: Session, line: AdminLine) -> None:
        """Act on one admin text line from ``session``."""
        self.send(session, run_admin_command(self, session, line.line))

    def _not_expected(self, session: Session, packet: Packet) -> None:
        self.send(session, error_packet(b"INVALID_COMMAND", b"Command not expected"))

    def next_deadline(self) -> float | None:
        """When :meth:`run_timers` next has something to do (epoch seconds), or None."""
        first: float | None = None
        if self._delayed:
            first = float(self._delayed[0][0])
        if self._deadlines and (first is None or self._deadlines[0][0] < first):
            first = self._deadlines[0][0]
        if self._expiries and (first is None or self._expiries[0][0] < first):
            first = self._expiries[0][0]
        if self._ticks and (first is None or self._ticks[0][0] < first):
            first = float(self._ticks[0][0])
        return first

    def run_timers(self, now: float | None = None) -> None:
        """Queue epoch jobs that fell due and requeue jobs whose worker timed out."""
        if now is None:
            now = self.clock()
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            job = heapq.heappop(delayed)[2]
            # A job cancelled while due later was let go at once: only SCHEDULED and RETRYING
            # ones are left.
            if job.state is SCHEDULED:
                self._move(job, QUEUE)
                # The operator (and the on-time test) can see how late the timer fired.
                self.notice(
                    "DEBUG",
                    f"Epoch job {job.handle.decode('latin-1')} due at {int(job.when)}"
                    f" queued at {now:.3f}",
                    key="epoch-due",
                )
            elif job.state is RETRYING:
                self._move(job, QUEUE)
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, job, worker, retries = heapq.heappop(deadlines)
            if job.worker is worker and job.retries == retries:
                self.notice(
                    "WARNING",
                    "Worker timeout reached on job, requeueing: " + job.handle.decode("latin-1"),
                    None,
                    job.handle,
                )
                self._lost(job, "worker timeout")
        if self._expiries and self._expiries[0][0] <= now:
            self._purge_remembered(now)
        ticks = self._ticks
        while ticks and ticks[0][0] <= now:
            due, _, schedule = heapq.heappop(ticks)
            if schedule.due == due and self.schedules.get(schedule.name) is schedule:
                self._tick(schedule, now)
