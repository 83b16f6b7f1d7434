"""The job server core's state and the rules that move a job through its life: sessions,
functions, the lifecycle (:meth:`JobLifecycle._move` and the ways out), retry policies, dead
letters and remembered uniques. The packet handlers build on it (``_coreclients.py``,
``_coreworkers.py``), and :mod:`gearsql.core` puts them together; its docstring is the theory
of operation.
"""

from __future__ import annotations

import collections
import functools
import heapq
import math
import struct
import time
from collections.abc import Callable, Iterator

from gearsql._corestate import (  # the short state and event names are for the hot path
    ABANDON,
    BURY,
    CANCEL,
    CANCELLED,
    DEAD,
    DISCARD,
    DONE,
    DROP,
    NEW,
    NO_EXTRAS,
    PACKED_HEAD,
    PURGE,
    QUEUED,
    REQUEUE,
    RETRY,
    RETRYING,
    RUNNING,
    SCHEDULED,
    STORING,
    TRANSITIONS,
    WAITING,
    Function,
    Job,
    JobEvent,
    JobState,
    Notice,
    RetryPolicy,
    RunEnd,
    Schedule,
    Session,
    after_loss,
    backoff_delay,
    coalescing_key,
    handle_number,
)
from gearsql.protocol import (
    MAX_FUNCTION_NAME,
    MAX_HANDLE,
    MAX_UNIQUE,
    RES,
    ArgumentProblem,
    PacketType,
    Priority,
    check_function_name,
    pack_response,
)

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
#: Jobs queued within this many seconds of each other count as queued at the same time (the
#: job wait histogram's finest bucket is a millisecond).
_SAME_INSTANT = 0.0001


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

#: Packet types a job server sends and never receives (and ALL_YOURS): gearmand answers them
#: with ERROR INVALID_COMMAND "Command not expected", and so do we. (gearmand also refuses
#: SUBMIT_JOB_SCHED so; gearsql serves it.)
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
        P.JOB_ASSIGN_UNIQ,
        P.JOB_ASSIGN_ALL,
        P.STATUS_RES_UNIQUE,
    }
)


class JobLifecycle:
    """The core's tables and the rules every side shares; see :class:`gearsql.core.JobServerCore`
    for the parameters."""

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
        unconfirmed_runs: int = 1,
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
        #: Ends of workers' runs of stored jobs, not yet committed, oldest first: taken by the
        #: network layer with ``finished_stored`` and handed back to ``ends_committed`` once
        #: that commit is done. A worker's GRAB is answered only after its last end is
        #: committed (``_open_ends``), so a crash can run again only the jobs in flight
        #: (docs/reliability.md case 17).
        self.end_holds: list[RunEnd] = []
        #: Each worker's ends not yet committed, oldest first. A GRAB is answered at once
        #: while it has fewer than ``unconfirmed_runs`` of them, else when the oldest is
        #: committed: a crash runs again at most that many finished jobs per worker.
        self._open_ends: dict[Session, collections.deque[RunEnd]] = {}
        if unconfirmed_runs < 1:
            raise ValueError("unconfirmed_runs must be at least 1")
        self.unconfirmed_runs = unconfirmed_runs
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
        # When the last job was queued (its ``since``, shared by the jobs queued right after).
        self._queued_at = 0.0
        #: Jobs queued packed and not unpacked yet (see JobQueue): while there are none, a
        #: handle missing from ``jobs`` is not looked for in the queues.
        self.packed_jobs = 0

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

    def _drop_abilities(self, session: Session) -> None:
        abilities = session.abilities
        session.abilities = []
        session.timeouts.clear()
        for fn in abilities:
            fn.workers.pop(session, None)
            fn.sleepers.pop(session, None)
            if not fn.workers:
                self._release(fn)

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

    def _forward(self, job: Job, data: bytes) -> None:
        for client in job.clients:
            self.send(client, data)

    def _fail_clients(self, job: Job) -> None:
        if job.clients:
            self._forward(job, pack_response(P.WORK_FAIL, job.handle))

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
            now = _monotonic()
            if now - self._queued_at < _SAME_INSTANT:
                # One float for the jobs queued together: 32 bytes less per queued job.
                now = self._queued_at
            else:
                self._queued_at = now
            job.since = now
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
        entries = list(queue)
        # Packed jobs (bytes) are never cancelled: cancelling one unpacks it first.
        cancelled = [job for job in entries if isinstance(job, Job) and job.state is CANCELLED]
        queue.refill(
            [job for job in entries if isinstance(job, bytes) or job.state is not CANCELLED]
        )
        fn.stale[priority] = 0
        for job in cancelled:
            self._move(job, DISCARD)

    # Packed jobs (see JobQueue): plain background jobs kept as bytes while they wait.

    #: The largest payload of a job that is queued packed: above it, what packing saves is a
    #: small share of the job's memory, and the payload would be copied twice for nothing.
    PACK_LIMIT = 1024

    def _unpack(self, entry: bytes, fn: Function, priority: int, register: bool = True) -> Job:
        """The Job of a packed job, in the state it was packed in (QUEUED), in the handle
        table unless it is only for a look (``register`` false: an admin listing)."""
        number, since = PACKED_HEAD.unpack_from(entry)
        handle = self._handle_format % number
        job = Job(handle, fn, b"", entry[PACKED_HEAD.size :], _BY_RANK[priority], True)
        job.state = QUEUED
        job.since = since
        if register:
            self.packed_jobs -= 1
            self.jobs[handle] = job
        return job

    def job(self, handle: bytes) -> Job | None:
        """The job with this handle still in the handle table (waiting, running, or cancelled
        and not yet let go), or None. A packed one is unpacked in place."""
        job = self.jobs.get(handle)
        if job is not None or not self.packed_jobs:
            return job
        prefix = self.handle_prefix
        digits = handle[len(prefix) :]
        if not handle.startswith(prefix) or not digits.isdigit() or digits[:1] == b"0":
            return None
        number = int(digits)
        for fn in self.functions.values():
            for priority, queue in enumerate(fn.queues):
                index = queue.find_packed(number)
                if index < 0:
                    continue
                entry = queue.packed[index]
                if entry.__class__ is not bytes:
                    return None  # unpacked already, and since let go
                job = self._unpack(entry, fn, priority)
                queue.packed[index] = job
                return job
        return None

    def all_jobs(self) -> Iterator[Job]:
        """Every job in the handle table and every packed one (unpacked for a look only: what
        the admin listings show), oldest first."""
        if not self.packed_jobs:
            yield from self.jobs.values()
            return
        sources: list[Iterator[Job]] = [iter(self.jobs.values())]
        for fn in self.functions.values():
            for priority, queue in enumerate(fn.queues):
                if queue.packed:
                    sources.append(self._view_packed(fn, priority))
        # Each source is in creation order (the table's jobs as they were added): one merge,
        # as lazy as the reader (a search stops after so many jobs).
        yield from heapq.merge(*sources, key=handle_number)

    def _view_packed(self, fn: Function, priority: int) -> Iterator[Job]:
        for entry in fn.queues[priority].packed:
            if isinstance(entry, bytes):  # the others are in the handle table
                yield self._unpack(entry, fn, priority, register=False)

    def _forget(self, job: Job) -> None:
        """The one way out: drop every reference the server holds to ``job``."""
        worker = job.worker
        if worker is not None:
            worker.holding.pop(job.handle, None)
            job.worker = None
        jobs = self.jobs
        del jobs[job.handle]
        if not jobs:
            # A dict never shrinks as it empties: give back the table a deep queue grew.
            jobs.clear()
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
                if not by_unique:
                    by_unique.clear()  # as the handle table in _forget

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
        job = self.job(handle)
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
        for priority, queue in enumerate(fn.queues):
            queue.unpack_all(functools.partial(self._unpack, fn=fn, priority=priority))
        jobs = [job for job in self.jobs.values() if job.function is fn]
        for job in jobs:
            self.cancel(job.handle)
            if job.state is CANCELLED and job.acks is None and job.worker is None:
                self._move(job, DISCARD)
        self.functions.pop(fn.name, None)
        return len(jobs)

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

    @staticmethod
    def store_row(job: Job) -> tuple[bytes, bytes, int, bytes, int, int, bytes]:
        """How ``job`` is written to the store: (unique, function, priority, data, when, failed
        runs, last error). A retry's due time is rounded up to the second the store keeps."""
        extras = job.extras or NO_EXTRAS  # read once: every stored job is written by this
        when = extras.when
        return (
            extras.store_key or job.unique,
            job.function.name,
            int(job.priority),
            job.data,
            int(when) if when.__class__ is int else math.ceil(when),
            extras.retries,
            extras.error,
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
