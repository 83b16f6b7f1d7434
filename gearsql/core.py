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
burst of missed ticks; a clock set back repeats nothing), and a durable core writes the new
next tick (``schedule_changes``) in the group commit that stores the job.

What a client cannot make the core keep: an abandoned foreground job drops its payload at once
(no worker will ever read it), and a queue compacts itself (DISCARD of every cancelled job in it)
as soon as cancelled jobs are half of it, so cancelled jobs never outnumber live ones. A
function with no worker, no job and no ``maxqueue`` limit is forgotten (:meth:`_release`), and
``max_functions`` caps how many functions there are.

Behaviour follows C gearmand 1.1.x as real clients see it, with these choices: priority is
global across a worker's functions, functions are served round-robin, epoch jobs wake sleeping
workers when they fall due. The admin counts count live jobs only (see
:class:`~gearsql._corestate.Function`); a RETRYING job is live (waiting), a DEAD one is not.

This module is longer than the 800 lines the project aims at: it is one class, the job server's
rules, kept whole so that everything that moves a job is read in one place.
"""

from __future__ import annotations

import heapq
import math
import struct
import time
from collections.abc import Callable, Iterable

from gearsql._corestate import (  # the short state and event names are for the hot path
    ABANDON,
    ASSIGN,
    BURY,
    CANCEL,
    CANCELLED,
    DEAD,
    DELAY,
    DISCARD,
    DONE,
    DROP,
    FINISH,
    NEW,
    PURGE,
    QUEUE,
    QUEUED,
    REQUEUE,
    RETRY,
    RETRYING,
    RUNNING,
    SCHEDULED,
    STORE,
    STORING,
    TRANSITIONS,
    WAITING,
    Function,
    Job,
    JobEvent,
    JobState,
    Notice,
    PendingAck,
    RetryPolicy,
    Schedule,
    Session,
    after_loss,
    backoff_delay,
    coalescing_key,
)
from gearsql._cron import CronSpec, next_tick
from gearsql.admin import run_admin_command
from gearsql.protocol import (
    MAX_FUNCTION_NAME,
    MAX_HANDLE,
    MAX_UNIQUE,
    RES,
    SUBMIT_KINDS,
    AdminLine,
    ArgumentProblem,
    Packet,
    PacketType,
    Priority,
    check_function_name,
    frame_response,
    pack_response,
)

__all__ = [
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

P = PacketType

# TRANSITIONS by state, then event: the lookup of _move without building a tuple.
_NEXT: dict[JobState, dict[JobEvent, JobState]] = {state: {} for state in JobState}
for (_state, _event), _target in TRANSITIONS.items():
    _NEXT[_state][_event] = _target

#: The priorities in the order workers are served (a tuple: iterating the enum is slower).
_BY_RANK = tuple(Priority)

_NOOP = pack_response(P.NOOP)
_NO_JOB = pack_response(P.NO_JOB)


_JOB_CREATED_HEADERS = [struct.pack(">4sII", RES, P.JOB_CREATED, size) for size in range(65)]


#: The clock of the job wait and run time histograms.
_monotonic = time.monotonic


def _job_created(handle: bytes) -> bytes:
    """JOB_CREATED, framed from a table of headers: it is sent for every submission."""
    return _JOB_CREATED_HEADERS[len(handle)] + handle


#: Stored jobs submitted without a unique still need a key in the store's table; they get one
#: with this prefix (a control character no real unique starts with), and replay turns them
#: back into jobs without a unique. Jobs with the unique ``-`` (the payload is the key) get one
#: too, with ``-`` after the prefix: two of them with different payloads must not share a row.
ANONYMOUS_PREFIX = b"\x1egearsql:"


#: The default retry policy: none (Gearman's meaning: a failed background job is gone).
_NO_RETRIES = RetryPolicy()


def _no_jitter() -> float:
    """The jitter source of a core not given one: every retry waits its full backoff."""
    return 1.0


def error_packet(code: bytes, text: bytes) -> bytes:
    """An ERROR packet as gearmand sends it: the return code name, then a text."""
    return pack_response(P.ERROR, code, text)


def _atoi(value: bytes) -> int:
    """C's atoi on an unsigned field: leading digits, anything else is 0."""
    digits = 0
    for byte in value.strip():
        if 48 <= byte <= 57:
            digits = digits * 10 + byte - 48
        else:
            break
    return digits & 0xFFFFFFFF


_NOT_FOUND_TEXT = {
    P.WORK_STATUS: b"Job given in work result not found",
    P.WORK_COMPLETE: b"Job given in work result not found",
    P.WORK_FAIL: b"Job given in work result not found",
    P.WORK_EXCEPTION: b"An exception was received for a job that does not exist",
    P.WORK_DATA: b"Job does not exist on server",
    P.WORK_WARNING: b"Job does not exist on server",
}

#: Packet types a job server sends and never receives: gearmand answers them with
#: ERROR INVALID_COMMAND "Command not expected", and so do we.
_NOT_EXPECTED = frozenset(
    {
        P.NOOP,
        P.JOB_CREATED,
        P.NO_JOB,
        P.JOB_ASSIGN,
        P.ECHO_RES,
        P.ERROR,
        P.STATUS_RES,
        P.ALL_YOURS,
        P.OPTION_RES,
        P.SUBMIT_JOB_SCHED,
        P.JOB_ASSIGN_UNIQ,
        P.JOB_ASSIGN_ALL,
        P.STATUS_RES_UNIQUE,
    }
)


class JobServerCore:
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

    def __init__(
        self,
        *,
        handle_prefix: bytes = b"H:gearsql",
        job_retries: int = -1,
        worker_wakeup: int = 0,
        exceptions: bool = False,
        max_unique: int = MAX_UNIQUE,
        max_function_name: int = MAX_FUNCTION_NAME,
        clock: Callable[[], float] = time.time,
        version: str = "0.1.0",
        pid: int = 0,
        verbose: str = "ERROR",
        durable: bool = False,
        max_functions: int = 0,
        run_id: bytes,
        retry_policy: RetryPolicy = _NO_RETRIES,
        jitter: Callable[[], float] = _no_jitter,
        unique_window: float = 0.0,
        keep_results: bool = False,
    ):
        # Handles must stay under 64 bytes with room for a 20-digit counter.
        self.handle_prefix = handle_prefix[: MAX_HANDLE - 23] + b":"
        self._handle_format = self.handle_prefix.replace(b"%", b"%%") + b"%d"
        self.job_retries = job_retries
        self.worker_wakeup = worker_wakeup
        self.exceptions = exceptions
        self.max_unique = max_unique
        self.max_function_name = max_function_name
        #: Most functions at once (0: no limit); a CAN_DO or submission that would create one
        #: more gets ERROR TOO_MANY_FUNCTIONS.
        self.max_functions = max_functions
        self.clock = clock
        self.version = version
        self.pid = pid
        self.verbose = verbose
        self.functions: dict[bytes, Function] = {}
        self.jobs: dict[bytes, Job] = {}
        self.sessions: dict[int, Session] = {}
        #: Sessions with bytes to write; the network layer empties this after each event.
        self.dirty: list[Session] = []
        #: Stored jobs that finished; the network layer deletes them from the durable store.
        self.finished_stored: list[Job] = []
        #: Whether background jobs go to a durable store before JOB_CREATED.
        self.durable = durable
        #: Background jobs accepted but not yet committed; the network layer commits them in
        #: one transaction (group commit) and calls :meth:`commit_done`.
        self.to_store: list[Job] = []
        #: What the operator should hear of, oldest first; the network layer takes and logs them.
        self.notices: list[Notice] = []
        self.retry_policy = retry_policy
        self.jitter = jitter
        #: Retry policies set per function (``retries`` admin command), kept in the store.
        self.retry_policies: dict[bytes, RetryPolicy] = {}
        #: Dead letters by number (jobs in state DEAD), oldest first.
        self.dead: dict[int, Job] = {}
        self._dead_counter = 0
        # Writes for the durable store besides new and finished jobs, taken by the network
        # layer with the next group commit: rows to rewrite (a retry's attempts, error and due
        # time), dead letters to add and to delete (by number), and retry policies to set
        # (None: back to the server default). ``pending_writes`` says whether any is waiting.
        self.updated_stored: list[Job] = []
        self.buried: list[Job] = []
        self.purged: list[int] = []
        self.policy_changes: list[tuple[bytes, RetryPolicy | None]] = []
        self.pending_writes = False
        #: Seconds a completed background job's unique is remembered (0: not at all), and the
        #: functions' own windows (``uniquewindow`` admin command), kept in the store.
        self.unique_window = unique_window
        self.unique_windows: dict[bytes, float] = {}
        #: Keep a remembered job's WORK_COMPLETE data, for foreground submissions of its unique.
        self.keep_results = keep_results
        #: Remembered uniques: unique -> function -> (expiry in epoch seconds, result).
        self.remembered: dict[bytes, dict[bytes, tuple[float, bytes]]] = {}
        # (expiry, unique, function) of every remembered unique, soonest first: the purge.
        self._expiries: list[tuple[float, bytes, bytes]] = []
        # Store writes of the unique window, with the others above: uniques to remember
        # (function, unique, expiry, result), the time before which remembered rows go (0:
        # none to purge), and window changes (None: back to the server default).
        self.remembered_added: list[tuple[bytes, bytes, float, bytes]] = []
        self.remembered_expired = 0.0
        self.window_changes: list[tuple[bytes, float | None]] = []
        #: Recurring schedules by name (``schedule add``), and their due ticks, soonest first:
        #: (due, sequence, schedule); an entry whose schedule moved on or went is stale.
        self.schedules: dict[bytes, Schedule] = {}
        self._ticks: list[tuple[int, int, Schedule]] = []
        #: Schedules to write (new, or their next tick moved on; None: removed), committed with
        #: the tick's job, so a tick is submitted once across a crash.
        self.schedule_changes: list[tuple[bytes, Schedule | None]] = []
        # Keys of stored jobs that came without a unique: unique per server run and across runs.
        self._anonymous_format = ANONYMOUS_PREFIX + run_id + b":%d"
        self._payload_key_format = ANONYMOUS_PREFIX + b"-" + run_id + b":%d"
        self._counter = 0
        self._next_session = 0
        # Epoch jobs not yet due and retries waiting for their backoff: (when, sequence, job).
        self._delayed: list[tuple[float, int, Job]] = []
        # CAN_DO_TIMEOUT deadlines: (deadline, sequence, job, worker, retries at assignment).
        self._deadlines: list[tuple[float, int, Job, Session, int]] = []
        self._seq = 0
        self._dispatch: dict[PacketType, Callable[[Session, Packet], None]] = {
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
            self._dispatch[type_] = self._not_expected

    # ------------------------------------------------------------------ sessions

    def connect(self, peer: str = "-", fd: int = -1, trusted: bool = True) -> Session:
        """Register a new connection and return its session."""
        self._next_session += 1
        session = Session(self._next_session, peer, fd, trusted)
        self.sessions[session.id] = session
        return session

    def disconnect(self, session: Session) -> None:
        """Forget a connection: requeue what it was running, detach it from what it waited on."""
        if session.closed:
            return
        session.closed = True
        self.sessions.pop(session.id, None)
        # Leave the sleeper lists first: a requeue must not spend its wakeup on this session.
        self._drop_abilities(session)
        for job in list(session.holding.values()):
            self._lost(job, "worker disconnected")
        session.holding.clear()
        for job in session.waiting:
            clients = job.clients
            if not isinstance(clients, list) or session not in clients:
                continue
            clients.remove(session)
            if not job.clients and not job.background and job.state is QUEUED:
                # Nobody waits for it any more and it has not started: it never runs.
                self._move(job, ABANDON)
        session.waiting.clear()
        session.out.clear()
        session.unacked = 0

    def send(self, session: Session, data: bytes) -> None:
        if session.closed:
            return
        session.out.append(data)
        if not session.in_dirty:
            session.in_dirty = True
            self.dirty.append(session)

    def take_dirty(self) -> list[Session]:
        """Return the sessions with output and reset the list; their ``out`` stays to be
        written by the caller."""
        dirty = self.dirty
        self.dirty = []
        for session in dirty:
            session.in_dirty = False
        return dirty

    # ------------------------------------------------------------------ dispatch

    def handle_packet(self, session: Session, packet: Packet) -> None:
        """Act on one binary packet from ``session``."""
        if not packet.request:
            self.send(session, error_packet(b"INVALID_MAGIC", b"Request magic expected"))
            return
        handler = self._dispatch.get(packet.type)
        if handler is None:
            self._not_expected(session, packet)
            return
        handler(session, packet)

    def handle_admin(self, session: Session, line: AdminLine) -> None:
        """Act on one admin text line from ``session``."""
        self.send(session, run_admin_command(self, session, line.line))

    def _not_expected(self, session: Session, packet: Packet) -> None:
        self.send(session, error_packet(b"INVALID_COMMAND", b"Command not expected"))

    # ------------------------------------------------------------------ functions

    def function(self, name: bytes) -> Function:
        """The function called ``name``, created on first use."""
        fn = self.functions.get(name)
        if fn is None:
            fn = self.functions[name] = Function(name)
        return fn

    def _check_name(self, session: Session, name: bytes) -> bool:
        """Whether ``name`` may be a function name; if not, ``session`` gets gearmand's ERROR.

        A NUL byte can only come as the whole argument of CAN_DO: taken as it is, as gearmand
        does."""
        problem = check_function_name(name, self.max_function_name, nul_allowed=True)
        if problem is None:
            return True
        self._refuse(session, problem)
        return False

    def _refuse(self, session: Session, problem: ArgumentProblem) -> None:
        self.send(session, error_packet(problem.code, problem.value[1]))

    def _room_for_function(self, session: Session) -> bool:
        """Whether one more function may be created; if not, ``session`` gets an ERROR."""
        limit = self.max_functions
        if not limit or len(self.functions) < limit:
            return True
        self.send(
            session,
            error_packet(b"TOO_MANY_FUNCTIONS", b"Too many functions (limit %d)" % limit),
        )
        self.notice(
            "WARNING",
            f"refused a new function from connection {session.id} ({session.peer}):"
            f" the limit of {limit} functions is reached",
            key="max-functions",
        )
        return False

    def _release(self, fn: Function) -> None:
        """Forget ``fn`` if nobody uses it: no worker, no job in any state, no ``maxqueue``."""
        if (
            fn.workers
            or fn.running
            or fn.waiting != [0, 0, 0]
            or any(fn.queues)
            or fn.max_queue != [0, 0, 0]
        ):
            return
        if self.functions.get(fn.name) is fn:
            del self.functions[fn.name]

    # ------------------------------------------------------------------ worker side

    def _register(self, session: Session, name: bytes, timeout: float | None) -> None:
        fn = self.functions.get(name)
        if fn is None:
            if not self._check_name(session, name) or not self._room_for_function(session):
                return
            fn = self.functions[name] = Function(name)
        if session not in fn.workers:
            fn.workers[session] = None
            session.abilities.append(fn)
            if session.sleeping:
                fn.sleepers[session] = None
        if timeout:
            session.timeouts[fn] = timeout
        else:
            session.timeouts.pop(fn, None)

    def _can_do(self, session: Session, packet: Packet) -> None:
        self._register(session, packet.args[0], None)

    def _can_do_timeout(self, session: Session, packet: Packet) -> None:
        name, raw = packet.args
        try:
            milliseconds = int(raw.strip() or b"0")
        except ValueError:
            self.send(session, error_packet(b"INVALID_ARGUMENT", b"Timeout is not a number"))
            return
        # gearmand reads the value as milliseconds and raises anything below one second to
        # one second (libgearman-server/connection.cc); 0 or less means no timeout.
        timeout = max(milliseconds, 1000) / 1000.0 if milliseconds > 0 else None
        self._register(session, name, timeout)

    def _cant_do(self, session: Session, packet: Packet) -> None:
        fn = self.functions.get(packet.args[0])
        if fn is None or session not in fn.workers:
            return
        del fn.workers[session]
        fn.sleepers.pop(session, None)
        session.abilities.remove(fn)
        session.timeouts.pop(fn, None)
        if not fn.workers:
            self._release(fn)

    def _reset_abilities(self, session: Session, packet: Packet) -> None:
        self._drop_abilities(session)

    def _drop_abilities(self, session: Session) -> None:
        abilities = session.abilities
        session.abilities = []
        session.timeouts.clear()
        for fn in abilities:
            fn.workers.pop(session, None)
            fn.sleepers.pop(session, None)
            if not fn.workers:
                self._release(fn)

    def _set_client_id(self, session: Session, packet: Packet) -> None:
        session.client_id = packet.args[0].replace(b" ", b"_").replace(b"\n", b"_") or b"-"

    def _pre_sleep(self, session: Session, packet: Packet) -> None:
        if self._runnable(session):
            # A job arrived between the worker's NO_JOB and its PRE_SLEEP: wake it now.
            self.send(session, _NOOP)
            return
        session.sleeping = True
        for fn in session.abilities:
            fn.sleepers[session] = None

    def _runnable(self, session: Session) -> bool:
        for fn in session.abilities:
            for priority, queue in enumerate(fn.queues):
                while queue and queue[0].state is CANCELLED:
                    fn.stale[priority] -= 1
                    self._move(queue.popleft(), DISCARD)
                if queue:
                    return True
        return False

    def _wake(self, fn: Function) -> None:
        """NOOP the sleeping workers of ``fn``: all of them, or ``worker_wakeup`` of them."""
        limit = self.worker_wakeup
        sleepers = fn.sleepers
        woken = 0
        while sleepers:
            session = next(iter(sleepers))
            del sleepers[session]
            session.sleeping = False
            for other in session.abilities:
                other.sleepers.pop(session, None)
            self.send(session, _NOOP)
            woken += 1
            if woken == limit:
                break

    def _take(self, session: Session) -> Job | None:
        """The next job for this worker: the oldest of the highest priority among all of its
        functions, starting the scan after the function served last time."""
        abilities = session.abilities
        count = len(abilities)
        if not count:
            return None
        start = session.rr % count
        for priority in _BY_RANK:
            for offset in range(count):
                index = (start + offset) % count
                fn = abilities[index]
                queue = fn.queues[priority]
                while queue:
                    job = queue.popleft()
                    if job.state is CANCELLED:
                        fn.stale[priority] -= 1
                        self._move(job, DISCARD)
                        continue
                    session.rr = index + 1
                    return job
        return None

    def _grab_job(self, session: Session, packet: Packet) -> None:
        session.sleeping = False
        if session.abilities:
            for fn in session.abilities:
                fn.sleepers.pop(session, None)
        job = self._take(session)
        if job is None:
            self.send(session, _NO_JOB)
            return
        fn = job.function
        self._move(job, ASSIGN)
        job.worker = session
        session.holding[job.handle] = job
        kind = packet.type
        if kind == P.GRAB_JOB:
            self.send(session, frame_response(P.JOB_ASSIGN, job.handle, fn.name, job.data))
        elif kind == P.GRAB_JOB_ALL and job.reducer:
            self.send(
                session,
                frame_response(
                    P.JOB_ASSIGN_ALL, job.handle, fn.name, job.unique, job.reducer, job.data
                ),
            )
        else:
            self.send(
                session,
                frame_response(P.JOB_ASSIGN_UNIQ, job.handle, fn.name, job.unique, job.data),
            )
        timeout = session.timeouts.get(fn) if session.timeouts else None
        if timeout:
            self._seq += 1
            # (worker, retries) names this assignment: a requeue always counts a retry.
            heapq.heappush(
                self._deadlines,
                (self.clock() + timeout, self._seq, job, session, job.retries),
            )

    def _held_job(self, session: Session, packet: Packet) -> Job | None:
        """The job a WORK_* packet names, if this very connection was assigned it."""
        job = session.holding.get(packet.args[0])
        if job is None:
            if len(packet.args[0]) >= MAX_HANDLE:
                # No handle this server gives out is that long (64 bytes with gearmand's NUL).
                self.send(session, error_packet(b"ARGUMENT_TOO_LARGE", b"Job handle too large"))
            else:
                self.send(session, error_packet(b"JOB_NOT_FOUND", _NOT_FOUND_TEXT[packet.type]))
        return job

    def _work_status(self, session: Session, packet: Packet) -> None:
        job = self._held_job(session, packet)
        if job is None:
            return
        job.numerator = _atoi(packet.args[1])
        job.denominator = _atoi(packet.args[2])
        self._forward(job, frame_response(P.WORK_STATUS, *packet.args))

    def _work_data(self, session: Session, packet: Packet) -> None:
        job = self._held_job(session, packet)
        if job is not None:
            self._forward(job, frame_response(packet.type, *packet.args))

    def _work_complete(self, session: Session, packet: Packet) -> None:
        job = self._held_job(session, packet)
        if job is None:
            return
        job.function.completed += 1
        if job.clients:
            self._forward(job, frame_response(P.WORK_COMPLETE, *packet.args))
        if job.background and job.state is RUNNING and job.unique and job.unique != b"-":
            window = self.unique_windows.get(job.function.name, self.unique_window)
            if window > 0:
                self.remember(
                    job.function.name,
                    job.unique,
                    self.clock() + window,
                    packet.args[1] if self.keep_results else b"",
                )
        self._move(job, FINISH)

    def _work_fail(self, session: Session, packet: Packet) -> None:
        job = self._held_job(session, packet)
        if job is None:
            return
        job.function.failed += 1
        self._fail_clients(job)
        if job.background and job.state is RUNNING and self.retry_policy_for(job).active:
            self._failed(job, b"failed", "failed")
        else:
            self._move(job, FINISH)

    def _work_exception(self, session: Session, packet: Packet) -> None:
        job = self._held_job(session, packet)
        if job is None:
            return
        job.function.exceptions += 1
        exception = pack_response(P.WORK_EXCEPTION, *packet.args)
        fail = pack_response(P.WORK_FAIL, job.handle)
        for client in job.clients:
            # Only clients that asked (or every client with --exceptions) get the exception;
            # the others get a plain WORK_FAIL with the bare handle.
            self.send(client, exception if client.exceptions or self.exceptions else fail)
        if job.background and job.state is RUNNING and self.retry_policy_for(job).active:
            self._failed(job, packet.args[1] or b"exception", "exception")
        else:
            self._move(job, FINISH)

    def _forward(self, job: Job, data: bytes) -> None:
        for client in job.clients:
            self.send(client, data)

    def _fail_clients(self, job: Job) -> None:
        if job.clients:
            self._forward(job, pack_response(P.WORK_FAIL, job.handle))

    # ------------------------------------------------------------------ job lifecycle

    def _move(self, job: Job, event: JobEvent) -> None:
        """Change ``job``'s state by ``event`` (see TRANSITIONS), keep the counters, and do what
        entering the new state means. Every change of state goes through here."""
        old = job.state
        new = _NEXT[old].get(event)
        if new is None:
            raise RuntimeError(f"core bug: {event.name} of job {job.handle!r} in state {old.name}")
        job.state = new
        fn = job.function
        if old is RUNNING:
            fn.running -= 1
            fn.run_time.observe(_monotonic() - job.since)
        elif old in WAITING:
            fn.waiting[job.priority] -= 1
        if new is QUEUED:
            job.since = _monotonic()
            fn.waiting[job.priority] += 1
            fn.queues[job.priority].append(job)
            if fn.sleepers:
                self._wake(fn)
        elif new is RUNNING:
            fn.running += 1
            now = _monotonic()
            fn.wait_time.observe(now - job.since)
            job.since = now
        elif new is DONE:
            if old is DEAD:
                self._unbury(job)
            else:
                self._forget(job)
        elif new is SCHEDULED:
            fn.waiting[job.priority] += 1
            self._seq += 1
            heapq.heappush(self._delayed, (job.when, self._seq, job))
        elif new is STORING:
            fn.waiting[job.priority] += 1
            job.acks = []
            self.to_store.append(job)
        elif new is CANCELLED:
            self._unindex(job)
            for client in job.clients:
                client.waiting.discard(job)
            job.clients = ()
            if job.stored and old is not STORING:
                # The durable row goes now (a commit under way is undone by its DISCARD).
                self.finished_stored.append(job)
                job.stored = False
            if not job.background:
                # No worker will read it (a stored job's row still needs it for the deletion).
                job.data = b""
            if old is QUEUED:
                stale = fn.stale
                stale[job.priority] += 1
                if stale[job.priority] * 2 > len(fn.queues[job.priority]):
                    self._compact(fn, job.priority)
        elif new is RETRYING:
            fn.retried += 1
            fn.waiting[job.priority] += 1
            self._seq += 1
            heapq.heappush(self._delayed, (job.when, self._seq, job))
            if job.stored and old is RUNNING:
                # Its row is rewritten with the failure count, the error and the due time,
                # so that a restart neither forgets the retry nor runs it early.
                self.updated_stored.append(job)
                self.pending_writes = True
        elif new is DEAD:
            if old is not NEW:  # not one read back from the store
                fn.dead += 1
            self._bury(job, old)

    def _bury(self, job: Job, old: JobState) -> None:
        """``job`` becomes a dead letter: out of the handle table and the unique index (a new
        submission with its unique runs), its queue row replaced by a dead-letter row."""
        if old is not NEW:  # not one read back from the store
            del self.jobs[job.handle]
            self._unindex(job)
            self._dead_counter += 1
            job.dead_mark = (self._dead_counter, self.clock())
            if job.stored:
                self.finished_stored.append(job)
                job.stored = False
            if self.durable:
                self.buried.append(job)
                self.pending_writes = True
        else:
            self._dead_counter = max(self._dead_counter, job.dead_id)
        self.dead[job.dead_id] = job

    def _unbury(self, job: Job) -> None:
        """A dead letter goes, here and in the store."""
        del self.dead[job.dead_id]
        if self.durable:
            self.purged.append(job.dead_id)
            self.pending_writes = True

    def _compact(self, fn: Function, priority: int) -> None:
        """Let go of every cancelled job in one queue (amortised: they are half of it)."""
        queue = fn.queues[priority]
        cancelled = [job for job in queue if job.state is CANCELLED]
        live = [job for job in queue if job.state is not CANCELLED]
        queue.clear()
        queue.extend(live)
        fn.stale[priority] = 0
        for job in cancelled:
            self._move(job, DISCARD)

    def _forget(self, job: Job) -> None:
        """The one way out: drop every reference the server holds to ``job``."""
        worker = job.worker
        if worker is not None:
            worker.holding.pop(job.handle, None)
            job.worker = None
        del self.jobs[job.handle]
        self._unindex(job)
        for client in job.clients:
            client.waiting.discard(job)
        job.clients = ()
        if job.stored:
            self.finished_stored.append(job)
            job.stored = False
        fn = job.function
        if not fn.workers and not fn.running:
            self._release(fn)

    def _unindex(self, job: Job) -> None:
        """Stop coalescing new submissions onto ``job``."""
        if job.unique:
            key = coalescing_key(job.unique, job.data)
            by_unique = job.function.by_unique
            if by_unique.get(key) is job:  # type: ignore[arg-type]
                del by_unique[key]  # type: ignore[arg-type]

    def _lost(self, job: Job, reason: str) -> None:
        """``job``'s worker disconnected or timed out: run it again, or let it go."""
        if job.background and job.state is RUNNING and self.retry_policy_for(job).active:
            # Under a retry policy a lost worker (gone or timed out) is one more failed
            # attempt, with backoff. Foreground clients coalesced onto the job get the failure.
            self._fail_clients(job)
            self._failed(job, b"worker lost", reason)
            return
        worker = job.worker
        if worker is not None:
            worker.holding.pop(job.handle, None)
            job.worker = None
        job.retries += 1
        job.numerator = job.denominator = 0
        event = after_loss(job, self.job_retries)
        handle = job.handle.decode("latin-1")
        if event is DROP:
            self.notice(
                "ERROR",
                f"Dropped job due to max retry count: {handle} {job.function.name!r} "
                f"after {job.retries} attempts ({reason})",
                DROP,
                job.handle,
            )
            self._fail_clients(job)
        elif event is REQUEUE:
            self.notice(
                "WARNING",
                f"Requeued job {handle} ({reason}), retry {job.retries}",
                REQUEUE,
                job.handle,
            )
        self._move(job, event)

    def _failed(self, job: Job, error: bytes, reason: str) -> None:
        """A background job's run failed (WORK_FAIL, WORK_EXCEPTION, its worker lost) under an
        active retry policy: run it again after a backoff, or, when that was its last attempt,
        keep it as a dead letter. Its clients (foreground submissions coalesced onto it) have
        had their failure already and are let go: Gearman's meaning for them."""
        worker = job.worker
        if worker is not None:
            worker.holding.pop(job.handle, None)
            job.worker = None
        for client in job.clients:
            client.waiting.discard(job)
        job.clients = ()
        job.retries += 1
        job.error = error
        job.numerator = job.denominator = 0
        policy = self.retry_policy_for(job)
        handle = job.handle.decode("latin-1")
        if job.retries >= policy.attempts:
            self._move(job, BURY)
            self.notice(
                "WARNING",
                f"Job {handle} {job.function.name!r} failed ({reason}) after {job.retries} "
                f"attempts: kept as dead letter {job.dead_id}",
                BURY,
                job.handle,
            )
            return
        delay = backoff_delay(policy, job.retries, self.jitter())
        job.when = self.clock() + delay
        self._move(job, RETRY)
        self.notice(
            "INFO",
            f"Job {handle} {job.function.name!r} failed ({reason}), attempt {job.retries} of "
            f"{policy.attempts}: retry in {delay:.3g} s",
            RETRY,
            job.handle,
        )

    def retry_policy_for(self, job: Job) -> RetryPolicy:
        """The retry policy of ``job``'s function: its own, or the server's default."""
        return self.retry_policies.get(job.function.name, self.retry_policy)

    def set_retry_policy(self, name: bytes, policy: RetryPolicy | None) -> None:
        """Give function ``name`` its own retry policy (None: back to the server default), and
        have it stored. Jobs waiting for a retry keep their due time; the new policy counts from
        their next failure."""
        if policy is None:
            self.retry_policies.pop(name, None)
        else:
            self.retry_policies[name] = policy
        if self.durable:
            self.policy_changes.append((name, policy))
            self.pending_writes = True

    def find_dead(self, handle: bytes) -> Job | None:
        """The dead letter that was the job ``handle`` (dead letters are few: a scan)."""
        for job in self.dead.values():
            if job.handle == handle:
                return job
        return None

    def dead_letters(self, name: bytes | None = None) -> list[Job]:
        """Dead letters, oldest first; only those of function ``name`` if given."""
        if name is None:
            return list(self.dead.values())
        return [job for job in self.dead.values() if job.function.name == name]

    def revive(self, dead_id: int) -> Job | None:
        """``retry dead``: submit dead letter ``dead_id`` again as a new background job, with
        all its attempts, and let the dead letter go (both in one group commit). Returns the
        new job (or the live twin it coalesced onto), None when there is no such dead letter."""
        dead = self.dead.get(dead_id)
        if dead is None:
            return None
        job = self.submit(None, dead.function.name, dead.unique, dead.data, dead.priority, True)
        self._move(dead, PURGE)
        if job is not None:
            self.notice(
                "INFO",
                f"Dead letter {dead_id} submitted again as {job.handle.decode('latin-1')}",
            )
        return job

    def purge(self, dead_id: int) -> bool:
        """``purge dead``: forget dead letter ``dead_id``; False when there is none."""
        dead = self.dead.get(dead_id)
        if dead is None:
            return False
        self._move(dead, PURGE)
        return True

    def cancel(self, handle: bytes) -> bool:
        """Cancel a job (admin ``cancel job``): its clients get WORK_FAIL, it never runs again.
        A job waiting for its retry is let go at once; a dead letter is purged.

        False when there is no such live or dead job."""
        job = self.jobs.get(handle)
        if job is None:
            dead = self.find_dead(handle)
            if dead is None:
                return False
            self._move(dead, PURGE)
            return True
        if job.state is CANCELLED:
            return False
        self._fail_clients(job)
        delayed = job.state is SCHEDULED or job.state is RETRYING
        self._move(job, CANCEL)
        if delayed:
            # A delayed job reaches no queue head before it is due: let it go now (the timer
            # heap skips it).
            self._move(job, DISCARD)
        return True

    def drop_function(self, fn: Function) -> int:
        """Forget a function nobody works on (admin ``drop function``); its jobs are cancelled
        and let go. Returns how many jobs were cancelled."""
        jobs = [job for job in self.jobs.values() if job.function is fn]
        for job in jobs:
            self.cancel(job.handle)
            if job.state is CANCELLED and job.acks is None and job.worker is None:
                self._move(job, DISCARD)
        self.functions.pop(fn.name, None)
        return len(jobs)

    # ------------------------------------------------------------------ client side

    def _submit(self, session: Session, packet: Packet) -> None:
        priority, background = SUBMIT_KINDS[packet.type]
        name, unique, data = packet.args
        self.submit(session, name, unique, data, priority, background)

    def _submit_epoch(self, session: Session, packet: Packet) -> None:
        name, unique, epoch, data = packet.args
        try:
            when = int(epoch.strip() or b"0")
        except ValueError:
            self.send(session, error_packet(b"INVALID_ARGUMENT", b"Epoch is not a number"))
            return
        self.submit(session, name, unique, data, Priority.NORMAL, True, when=when)

    def _submit_reduce(self, session: Session, packet: Packet) -> None:
        name, unique, reducer, _aggregator, data = packet.args
        background = packet.type == P.SUBMIT_REDUCE_JOB_BACKGROUND
        self.submit(session, name, unique, data, Priority.NORMAL, background, reducer=reducer)

    def submit(
        self,
        session: Session | None,
        name: bytes,
        unique: bytes,
        data: bytes,
        priority: Priority,
        background: bool,
        *,
        when: int = 0,
        reducer: bytes = b"",
        stored: bool = False,
        store_key: bytes | None = None,
        retries: int = 0,
        error: bytes = b"",
    ) -> Job | None:
        """Create (or coalesce onto) a job and answer ``session`` with JOB_CREATED or ERROR.

        ``session`` is None when a job is replayed from the durable store (``stored`` then says
        the row already exists, and ``retries`` and ``error`` are its failed runs so far) or
        submitted again from a dead letter.
        """
        # The common case (a known function, no unique, no limit) runs straight through.
        fn = self.functions.get(name)
        if fn is None:
            if session is not None and not self._check_name(session, name):
                return None
        if unique and session is not None and len(unique) > self.max_unique:
            # Refused before the function is created: a refused submission leaves no trace.
            self._refuse(session, ArgumentProblem.UNIQUE_TOO_LARGE)
            return None
        if (
            self.remembered
            and unique
            and session is not None
            and (fn is None or unique not in fn.by_unique)
            and self._recall(session, name, unique, background)
        ):
            # Completed within its unique window: acknowledged, not run again.
            return None
        if fn is None and session is not None and not self._room_for_function(session):
            return None
        if fn is None:
            fn = self.functions[name] = Function(name)
        if unique:
            key = b"\0" + data if unique == b"-" else unique
            existing = fn.by_unique.get(key)
            if existing is not None:
                if session is not None:
                    if not background:
                        if isinstance(existing.clients, list):
                            existing.clients.append(session)
                        else:
                            existing.clients = [session]
                        session.waiting.add(existing)
                    self._acknowledge(session, existing)
                return existing
        limit = fn.max_queue[priority]
        if limit and fn.total >= limit and session is not None:
            self.send(session, error_packet(b"QUEUE_ERROR", b"Job queue is full"))
            return None
        self._counter += 1
        handle = self._handle_format % self._counter
        job = Job(handle, fn, unique, data, priority, background, when, reducer)
        fn.submitted += 1
        if retries:
            job.retries = retries
            job.error = error
        if background and (stored or self.durable):
            job.stored = True
            if not unique:
                job.store_key = store_key or self._anonymous_format % self._counter
            elif unique == b"-":
                job.store_key = store_key or self._payload_key_format % self._counter
        if unique:
            fn.by_unique[key] = job
        self.jobs[handle] = job
        if not background and session is not None:
            job.clients = [session]
            session.waiting.add(job)
        if job.stored and not stored:
            # Not runnable and not acknowledged before the store has committed it.
            self._move(job, STORE)
            if session is not None:
                self._acknowledge(session, job)
            return job
        self._start(job)
        if session is not None:
            self.send(session, _job_created(handle))
        return job

    def _recall(self, session: Session, name: bytes, unique: bytes, background: bool) -> bool:
        """Answer a submission whose unique is remembered (it completed within its window):
        JOB_CREATED with a fresh handle and nothing run for a background one; for a foreground
        one, with ``keep_results``, JOB_CREATED and WORK_COMPLETE with the stored result at
        once. False when it must run (not remembered, expired, or foreground without kept
        results)."""
        entry = self.remembered.get(unique, {}).get(name)
        if entry is None or entry[0] <= self.clock():
            return False
        if not background and not self.keep_results:
            return False
        self._counter += 1
        handle = self._handle_format % self._counter
        self.send(session, _job_created(handle))
        if not background:
            self.send(session, pack_response(P.WORK_COMPLETE, handle, entry[1]))
        return True

    def remember(
        self, name: bytes, unique: bytes, expires: float, result: bytes, *, stored: bool = False
    ) -> None:
        """Remember that function ``name``'s job with ``unique`` completed, until ``expires``,
        and have it stored (``stored``: the store holds it already, read back at start-up)."""
        self.remembered.setdefault(unique, {})[name] = (expires, result)
        heapq.heappush(self._expiries, (expires, unique, name))
        if self.durable and not stored:
            self.remembered_added.append((name, unique, expires, result))
            self.pending_writes = True

    def find_remembered(self, unique: bytes) -> bool:
        """Whether a job with this unique completed within its window, in any function."""
        now = self.clock()
        return any(expires > now for expires, _ in self.remembered.get(unique, {}).values())

    def _purge_remembered(self, now: float) -> None:
        """Forget remembered uniques whose window ended (here and, with the next commit, in
        the store): memory holds at most the uniques completed within one window."""
        expiries = self._expiries
        purged = False
        while expiries and expiries[0][0] <= now:
            expires, unique, name = heapq.heappop(expiries)
            by_function = self.remembered.get(unique)
            if by_function is None:
                continue
            entry = by_function.get(name)
            if entry is not None and entry[0] == expires:  # not remembered again since
                del by_function[name]
                if not by_function:
                    del self.remembered[unique]
                purged = True
        if purged and self.durable:
            self.remembered_expired = now
            self.pending_writes = True

    def unique_window_for(self, name: bytes) -> float:
        """Function ``name``'s unique window: its own, or the server's default."""
        return self.unique_windows.get(name, self.unique_window)

    def set_unique_window(self, name: bytes, seconds: float | None) -> None:
        """Give function ``name`` its own unique window (None: back to the server default), and
        have it stored. Uniques remembered already keep their expiry."""
        if seconds is None:
            self.unique_windows.pop(name, None)
        else:
            self.unique_windows[name] = seconds
        if self.durable:
            self.window_changes.append((name, seconds))
            self.pending_writes = True

    def _start(self, job: Job) -> None:
        """Queue a new (or newly committed) job, or hold it until its epoch time."""
        if job.when and job.when > self.clock():
            # A replayed job that was waiting for its retry keeps waiting as a retry.
            self._move(job, RETRY if job.retries and job.state is NEW else DELAY)
        else:
            self._move(job, QUEUE)

    def _acknowledge(self, session: Session, job: Job) -> None:
        """JOB_CREATED now, or a placeholder for it while the job's commit is under way."""
        if job.acks is None:
            self.send(session, _job_created(job.handle))
            return
        ack = PendingAck()
        job.acks.append((session, ack))
        session.unacked += 1
        self.send(session, ack)  # type: ignore[arg-type]

    def commit_done(self, jobs: list[Job], error: str | None = None) -> None:
        """The store committed ``jobs`` (``error`` is None) or could not (``error`` says why).

        Committed jobs become runnable and their submitters get JOB_CREATED. Jobs that could
        not be stored are forgotten and their submitters get ERROR QUEUE_ERROR: nothing is
        acknowledged that is not durable.
        """
        for job in jobs:
            acks = job.acks or []
            job.acks = None
            if error is None:
                reply = _job_created(job.handle)
                if job.state is CANCELLED:
                    # Cancelled while its commit was under way: the row goes again.
                    self._move(job, DISCARD)
                else:
                    self._start(job)
            else:
                reply = error_packet(b"QUEUE_ERROR", error.encode("utf-8", "replace")[:200])
                job.stored = False
                self._move(job, DISCARD if job.state is CANCELLED else DROP)
            for session, ack in acks:
                ack.data = reply
                if not session.closed and not session.in_dirty:
                    session.in_dirty = True
                    self.dirty.append(session)

    def _get_status(self, session: Session, packet: Packet) -> None:
        # The handle is the reply's first argument, where a NUL would break the framing. No
        # handle holds one: cut at the first, as gearmand does (it copies a C string).
        handle = packet.args[0].partition(b"\0")[0]
        job = self.jobs.get(handle)
        if job is None or job.state is CANCELLED:
            self.send(session, pack_response(P.STATUS_RES, handle, b"0", b"0", b"0", b"0"))
            return
        self.send(
            session,
            pack_response(
                P.STATUS_RES,
                handle,
                b"1",
                b"0" if job.worker is None else b"1",
                b"%d" % job.numerator,
                b"%d" % job.denominator,
            ),
        )

    def find_unique(self, unique: bytes) -> Job | None:
        """A live job with this unique in any function (GET_STATUS_UNIQUE has no function)."""
        key = coalescing_key(unique, b"")
        if key is None:
            return None
        for fn in self.functions.values():
            job = fn.by_unique.get(key)
            if job is not None:
                return job
        return None

    def _get_status_unique(self, session: Session, packet: Packet) -> None:
        unique = packet.args[0].partition(b"\0")[0]  # as in _get_status
        job = self.find_unique(unique)
        if job is None and self.remembered and self.find_remembered(unique):
            # "Done": known, not running, 1 of 1 done, nobody waiting (docs/protocol.md).
            self.send(
                session, pack_response(P.STATUS_RES_UNIQUE, unique, b"1", b"0", b"1", b"1", b"0")
            )
            return
        if job is None:
            self.send(
                session, pack_response(P.STATUS_RES_UNIQUE, unique, b"0", b"0", b"0", b"0", b"0")
            )
            return
        self.send(
            session,
            pack_response(
                P.STATUS_RES_UNIQUE,
                unique,
                b"1",
                b"0" if job.worker is None else b"1",
                b"%d" % job.numerator,
                b"%d" % job.denominator,
                b"%d" % len(job.clients),
            ),
        )

    def _echo(self, session: Session, packet: Packet) -> None:
        self.send(session, frame_response(P.ECHO_RES, packet.args[0]))

    def _option(self, session: Session, packet: Packet) -> None:
        option = packet.args[0]
        if option.lower() == b"exceptions":
            session.exceptions = True
            self.send(session, pack_response(P.OPTION_RES, option))
        else:
            self.send(
                session, error_packet(b"UNKNOWN_OPTION", b"Server does not recognize given option")
            )

    # ------------------------------------------------------------------ time

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

    # ------------------------------------------------------------------ schedules

    def add_schedule(
        self, name: bytes, function: bytes, spec: CronSpec, data: bytes, due: int | None = None
    ) -> Schedule:
        """Define (or replace) recurring schedule ``name``: a background job of ``function``
        with ``data`` at each time ``spec`` matches, from the next one on (``due``: the tick
        a stored schedule waits for, read back at start-up; it is not written again)."""
        schedule = Schedule(name, function, spec, data)
        self.schedules[name] = schedule
        if due is None:
            schedule.due = next_tick(spec, self.clock())
            if self.durable:
                self.schedule_changes.append((name, schedule))
                self.pending_writes = True
        else:
            schedule.due = due
        self._arm_tick(schedule)
        return schedule

    def remove_schedule(self, name: bytes) -> bool:
        """Forget schedule ``name`` (jobs it submitted already stay); False if there is none."""
        if self.schedules.pop(name, None) is None:
            return False
        if self.durable:
            self.schedule_changes.append((name, None))
            self.pending_writes = True
        return True

    def _arm_tick(self, schedule: Schedule) -> None:
        if schedule.due is not None:
            self._seq += 1
            heapq.heappush(self._ticks, (schedule.due, self._seq, schedule))

    def _tick(self, schedule: Schedule, now: float) -> None:
        """Submit the job of ``schedule``'s due tick, and move it to its next tick after now:
        ticks missed while the server was down (or the clock jumped) are not made up, only
        the one that was due runs. The job's unique names the tick (``NAME@EPOCH``), and the
        job and the schedule's next tick are committed together."""
        due = schedule.due
        assert due is not None
        self.submit(
            None,
            schedule.function,
            schedule.name + b"@%d" % due,
            schedule.data,
            Priority.NORMAL,
            True,
        )
        self.notice(
            "INFO",
            f"Schedule {schedule.name.decode('latin-1')} submitted its tick due at {due}",
            key="schedule",
        )
        schedule.due = next_tick(schedule.spec, max(now, due))
        if self.durable:
            self.schedule_changes.append((schedule.name, schedule))
            self.pending_writes = True
        self._arm_tick(schedule)

    # ------------------------------------------------------------------ replay and views

    def replay(self, rows: Iterable[tuple[bytes, bytes, int, bytes, int, int, bytes]]) -> int:
        """Re-create stored jobs (unique, function, priority, data, when, failed runs, last
        error) at start-up.

        Priority, unique, function, due time and failures are kept; handles are new, as in
        gearmand. A job with failures and a due time still to come waits for its retry.
        """
        count = 0
        for unique, name, priority, data, when, retries, error in rows:
            store_key = None
            if unique.startswith(ANONYMOUS_PREFIX):
                kind = unique[len(ANONYMOUS_PREFIX) : len(ANONYMOUS_PREFIX) + 1]
                store_key, unique = unique, b"-" if kind == b"-" else b""
            try:
                level = Priority(priority)
            except ValueError:
                level = Priority.NORMAL
            job = self.submit(
                None,
                name,
                unique,
                data,
                level,
                True,
                when=when,
                stored=True,
                store_key=store_key,
                retries=retries,
                error=error,
            )
            if job is not None:
                count += 1
        return count

    def replay_dead(
        self, rows: Iterable[tuple[int, bytes, bytes, int, bytes, int, bytes, float]]
    ) -> int:
        """Re-create stored dead letters (number, function, unique, priority, data, failed
        runs, last error, time of death) at start-up; each gets a new handle."""
        count = 0
        for dead_id, name, unique, priority, data, retries, error, died in rows:
            try:
                level = Priority(priority)
            except ValueError:
                level = Priority.NORMAL
            self._counter += 1
            fn = self.functions.get(name) or Function(name)
            job = Job(self._handle_format % self._counter, fn, unique, data, level, True)
            job.retries, job.error, job.dead_mark = retries, error, (dead_id, died)
            self._move(job, BURY)
            count += 1
        return count

    @staticmethod
    def store_row(job: Job) -> tuple[bytes, bytes, int, bytes, int, int, bytes]:
        """How ``job`` is written to the store: (unique, function, priority, data, when, failed
        runs, last error). A retry's due time is rounded up to the second the store keeps."""
        when = job.when
        return (
            job.store_key or job.unique,
            job.function.name,
            int(job.priority),
            job.data,
            int(when) if when.__class__ is int else math.ceil(when),
            job.retries,
            job.error,
        )

    @staticmethod
    def dead_row(job: Job) -> tuple[int, bytes, bytes, int, bytes, int, bytes, float]:
        """How dead letter ``job`` is written to the store: (number, function, unique,
        priority, data, failed runs, last error, time of death)."""
        return (
            job.dead_id,
            job.function.name,
            job.unique,
            int(job.priority),
            job.data,
            job.retries,
            job.error,
            job.died,
        )

    def notice(
        self,
        level: str,
        message: str,
        event: JobEvent | None = None,
        handle: bytes = b"",
        *,
        key: str = "",
    ) -> None:
        """Tell the operator (through :attr:`notices`, which the network layer logs).

        ``key`` names the kind of notice for the network layer's log rate limit (the event's
        name when empty): a peer can provoke most notices, so none may flood the log."""
        kind = key or (event.value if event is not None else level)
        self.notices.append(Notice(level, message, event, handle, kind))

    def take_notices(self) -> list[Notice]:
        """The notices since the last call, oldest first (for the network layer to log)."""
        notices = self.notices
        self.notices = []
        return notices
