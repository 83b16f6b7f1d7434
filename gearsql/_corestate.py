"""What the job-server core keeps: sessions, functions, jobs, and the table of a job's life.

:mod:`gearsql.core` holds the rules (what each packet does); this module holds the data they act
on and the lifecycle table they follow, :data:`TRANSITIONS` (read the core's module docstring
first). Nothing here does anything on its own: ``JobServerCore._move`` is the only code that
changes a job's state, and it keeps the counters of :class:`Function`.
"""

from __future__ import annotations

import enum
import struct
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, NamedTuple, TypeVar, overload

from gearsql._cron import CronSpec
from gearsql.protocol import Priority

__all__ = [
    "NO_EXTRAS",
    "PACKED_HEAD",
    "TRANSITIONS",
    "WAITING",
    "Function",
    "Job",
    "JobEvent",
    "JobExtras",
    "JobQueue",
    "JobState",
    "Notice",
    "PendingAck",
    "RetryPolicy",
    "RunEnd",
    "Schedule",
    "Session",
    "after_loss",
    "backoff_delay",
    "coalescing_key",
    "handle_number",
]


class JobState(enum.Enum):
    """Where a job is in its life (see the module docstring and :data:`TRANSITIONS`)."""

    # Members are singletons: hash them by identity, in C, not by name in Python (Enum's own
    # __hash__), which would double the cost of the core's hot path.
    __hash__ = object.__hash__

    #: Created, not yet placed anywhere (the state of a Job under construction).
    NEW = "new"
    #: A durable background job the store has not committed yet: not runnable, not acknowledged.
    STORING = "storing"
    #: An epoch job whose time has not come: on the timer heap.
    SCHEDULED = "scheduled"
    #: In its function's queue for its priority, waiting for a worker.
    QUEUED = "queued"
    #: A worker holds it.
    RUNNING = "running"
    #: A background job whose run failed, waiting on the timer heap for its backoff to pass
    #: before it is queued again.
    RETRYING = "retrying"
    #: A background job that used all its attempts: kept as a dead letter (and in the store)
    #: until an operator retries or purges it. Not in the handle table, never runs by itself.
    DEAD = "dead"
    #: It will never run (cancelled, or a foreground job whose last client left before it
    #: started). It may still sit in a queue, on the timer heap, with a worker or in a commit
    #: under way, and is let go (DISCARD) when met there.
    CANCELLED = "cancelled"
    #: Forgotten: the server holds no reference to it any more.
    DONE = "done"


class JobEvent(enum.Enum):
    """What happens to a job; :data:`TRANSITIONS` says in which states it may happen."""

    __hash__ = object.__hash__

    #: Accepted as a durable job: the store commits it before anything else.
    STORE = "store"
    #: Accepted or committed, with an epoch time still to come.
    DELAY = "delay"
    #: Accepted, committed, or fallen due: wait for a worker.
    QUEUE = "queue"
    #: A worker took it (GRAB_JOB*).
    ASSIGN = "assign"
    #: WORK_COMPLETE, WORK_FAIL or WORK_EXCEPTION from its worker.
    FINISH = "finish"
    #: Its worker disconnected or timed out, and it may run again.
    REQUEUE = "requeue"
    #: Its worker was lost once too often (``job_retries`` runs made), or the store could not
    #: commit it.
    DROP = "drop"
    #: Nobody waits for it any more (a foreground job whose last client left).
    ABANDON = "abandon"
    #: ``cancel job`` or ``drop function``.
    CANCEL = "cancel"
    #: A cancelled job is let go where it was left.
    DISCARD = "discard"
    #: A background job's run failed (WORK_FAIL, WORK_EXCEPTION, worker lost) with attempts
    #: left under its retry policy: run it again after a backoff. Also a replayed job that
    #: was waiting for its backoff when the server stopped.
    RETRY = "retry"
    #: A background job's last attempt failed: keep it as a dead letter.
    BURY = "bury"
    #: A dead letter goes (``purge dead``, ``retry dead`` once its new job exists, ``cancel job``).
    PURGE = "purge"


# Short names for the members, for the table below and for the core, whose hot path reads a
# module global faster than an enum's attribute.
NEW, STORING, SCHEDULED, QUEUED, RUNNING, RETRYING, DEAD, CANCELLED, DONE = JobState
(
    STORE,
    DELAY,
    QUEUE,
    ASSIGN,
    FINISH,
    REQUEUE,
    DROP,
    ABANDON,
    CANCEL,
    DISCARD,
    RETRY,
    BURY,
    PURGE,
) = JobEvent


#: (state, event) -> next state. Anything not listed is a bug in the core and raises.
TRANSITIONS: dict[tuple[JobState, JobEvent], JobState] = {
    (NEW, STORE): STORING,
    (NEW, DELAY): SCHEDULED,
    (NEW, QUEUE): QUEUED,
    (STORING, DELAY): SCHEDULED,
    (STORING, QUEUE): QUEUED,
    (STORING, DROP): DONE,
    (STORING, CANCEL): CANCELLED,
    (SCHEDULED, QUEUE): QUEUED,
    (SCHEDULED, CANCEL): CANCELLED,
    (QUEUED, ASSIGN): RUNNING,
    (QUEUED, ABANDON): CANCELLED,
    (QUEUED, CANCEL): CANCELLED,
    (RUNNING, FINISH): DONE,
    (RUNNING, REQUEUE): QUEUED,
    (RUNNING, DROP): DONE,
    # Lost by its worker with nobody waiting: no queue holds it, so it goes at once.
    (RUNNING, ABANDON): DONE,
    (RUNNING, CANCEL): CANCELLED,
    # Retries of background jobs (a retry policy with attempts left), then dead letters.
    (RUNNING, RETRY): RETRYING,
    (NEW, RETRY): RETRYING,
    (RETRYING, QUEUE): QUEUED,
    (RETRYING, CANCEL): CANCELLED,
    (RUNNING, BURY): DEAD,
    # A dead letter read back from the store at start-up.
    (NEW, BURY): DEAD,
    (DEAD, PURGE): DONE,
    # A cancelled job its worker still held: the result goes nowhere.
    (CANCELLED, FINISH): DONE,
    (CANCELLED, DISCARD): DONE,
}

#: States counted in ``Function.waiting``: live jobs that wait for a worker (or for their time,
#: or for the store).
WAITING = frozenset({STORING, SCHEDULED, QUEUED, RETRYING})


class Notice(NamedTuple):
    """Something the operator should hear of; the network layer logs it.

    ``level`` is a :mod:`logging` level name (``"WARNING"``...), ``handle`` the job concerned (or
    empty).
    """

    level: str
    message: str
    event: JobEvent | None = None
    handle: bytes = b""
    #: The kind of notice, for the network layer's log rate limit.
    key: str = ""


class Session:
    """The core's view of one connection (a client, a worker or an admin, or all at once)."""

    __slots__ = (
        "abilities",
        "client_id",
        "closed",
        "exceptions",
        "fd",
        "holding",
        "id",
        "in_dirty",
        "out",
        "peer",
        "rr",
        "sleeping",
        "timeouts",
        "trusted",
        "unacked",
        "waiting",
    )

    def __init__(self, id_: int, peer: str = "-", fd: int = -1, trusted: bool = True):
        self.id = id_
        #: The peer's address as shown by the ``workers`` admin command.
        self.peer = peer
        self.fd = fd
        #: Bytes waiting to be written, in order (with PendingAck placeholders in between).
        self.out: list[bytes | PendingAck] = []
        self.in_dirty = False
        self.client_id = b"-"
        #: The client asked for WORK_EXCEPTION packets (OPTION_REQ exceptions).
        self.exceptions = False
        #: Functions this worker can do, in registration order.
        self.abilities: list[Function] = []
        #: CAN_DO_TIMEOUT in seconds per function, for the functions that have one.
        self.timeouts: dict[Function, float] = {}
        self.sleeping = False
        #: Jobs assigned to this worker and not yet finished.
        self.holding: dict[bytes, Job] = {}
        #: Foreground jobs this client waits for.
        self.waiting: set[Job] = set()
        #: Where the next GRAB starts in ``abilities`` (round-robin between functions).
        self.rr = 0
        self.closed = False
        #: May run mutating admin commands (loopback or a configured admin source).
        self.trusted = trusted
        #: PendingAck placeholders in ``out`` (answered or not): while there are any, output
        #: is written only up to the first one still waiting for a store commit.
        self.unacked = 0

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.peer}>"

    def take_output(self) -> bytes:
        """The bytes that may be written now, removed from ``out``.

        Replies leave in the order their requests came: output queued behind a JOB_CREATED
        that still waits for the store stays queued until that commit is done.
        """
        out = self.out
        if not self.unacked:
            self.out = []
            return out[0] if len(out) == 1 else b"".join(out)  # type: ignore[return-value,arg-type]
        ready: list[bytes] = []
        for index, item in enumerate(out):
            if item.__class__ is PendingAck:
                data = item.data
                if data is None:
                    self.out = out[index:]
                    return b"".join(ready)
                self.unacked -= 1
                ready.append(data)
            else:
                ready.append(item)  # type: ignore[arg-type]
        self.out = []
        return b"".join(ready)


class PendingAck:
    """A reply not yet known: a JOB_CREATED (or ERROR), or the answer to a worker's GRAB that
    waits for the end of its last stored job to be written. It waits for the durable store's
    commit."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: bytes | None = None


class RunEnd:
    """A worker ended a run of a stored job (its deletion, or its retry's or dead letter's
    rows, go in the next group commit): its GRABs wait here until that commit is done."""

    __slots__ = ("grabs", "worker")

    def __init__(self, worker: Session) -> None:
        self.worker = worker
        #: The worker's GRABs meanwhile: their reply placeholders and packet types.
        self.grabs: list[tuple[PendingAck, int]] = []


#: Upper bounds (seconds) of the job wait and run time histograms' buckets; one more bucket
#: counts what lies above the last (Prometheus's ``+Inf``).
TIME_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0)


class Histogram:
    """Durations counted in the fixed TIME_BUCKETS (each observation lands in one bucket, the
    first whose bound it does not exceed), and their sum: cheap enough for every job."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(TIME_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(TIME_BUCKETS, seconds)] += 1
        self.sum += seconds


class Function:
    """One function name: its three FIFO queues, registered and sleeping workers, counters.

    The counters count live jobs only, so that every admin view agrees: ``waiting`` per priority
    counts jobs that will still run (queued, due later, or being stored), ``running`` the jobs a
    worker runs for someone, and ``total`` (``status``) is their sum. A cancelled job, or a
    foreground job whose clients all left before it started, is in none of them; ``show jobs``
    lists it with its ``ignore`` column set until the server lets go of it.

    A function without workers, jobs or a ``maxqueue`` limit is forgotten (see
    ``JobServerCore._release``): a name costs nothing once nobody uses it. Its event counters
    and histograms (served as metrics) go with it, and start again from 0 if the name comes back.
    """

    __slots__ = (
        "by_unique",
        "completed",
        "dead",
        "exceptions",
        "failed",
        "max_queue",
        "name",
        "queues",
        "retried",
        "run_time",
        "running",
        "sleepers",
        "stale",
        "submitted",
        "wait_time",
        "waiting",
        "workers",
    )

    def __init__(self, name: bytes):
        self.name = name
        self.queues = (JobQueue(), JobQueue(), JobQueue())
        #: Registered worker sessions (a dict used as an ordered set).
        self.workers: dict[Session, None] = {}
        #: Sleeping workers that have not been sent a NOOP yet.
        self.sleepers: dict[Session, None] = {}
        #: Live jobs waiting per priority (states in WAITING).
        self.waiting = [0, 0, 0]
        #: Jobs in state RUNNING.
        self.running = 0
        #: ``maxqueue`` limits per priority; 0 is unlimited.
        self.max_queue = [0, 0, 0]
        #: Live jobs by coalescing key (see :func:`coalescing_key`).
        self.by_unique: dict[bytes, Job] = {}
        #: Cancelled jobs still sitting in each queue (left there, as in gearmand, and let go
        #: when a worker meets them or when they are half of their queue).
        self.stale = [0, 0, 0]
        #: Events since the function was created: jobs created (submitted, or read back from
        #: the store), WORK_COMPLETE, WORK_FAIL and WORK_EXCEPTION received, runs scheduled
        #: again after a failure (retry policy), jobs kept as dead letters.
        self.submitted = 0
        self.completed = 0
        self.failed = 0
        self.exceptions = 0
        self.retried = 0
        self.dead = 0
        #: Seconds jobs were runnable (queued) before a worker took them, and seconds they ran.
        self.wait_time = Histogram()
        self.run_time = Histogram()

    @property
    def total(self) -> int:
        """Live jobs, waiting or running (the ``status`` total, gearmand's job_total)."""
        waiting = self.waiting
        return waiting[0] + waiting[1] + waiting[2] + self.running


#: The head of a packed job (see :class:`JobQueue`): its handle's number and the monotonic
#: time it was queued; the payload follows.
PACKED_HEAD = struct.Struct(">Qd")


def handle_number(entry: bytes | Job) -> int:
    """The number at the end of a job's handle (the order of its creation), or of a packed
    job's (an entry of ``JobQueue.packed``)."""
    if entry.__class__ is bytes:
        return int.from_bytes(entry[:8], "big")
    return int(entry.handle.rpartition(b":")[2])  # type: ignore[union-attr]


class JobQueue:
    """One priority's FIFO queue of a function, where plain background jobs are kept packed.

    A deep queue is mostly plain background jobs: no unique, no store row, nothing in
    :class:`JobExtras`, a small payload. Until something needs one of them as a :class:`Job`
    (a worker takes it, a client asks its status, an admin cancels it), such a job is one
    bytes object, :data:`PACKED_HEAD` then its payload: no Job, no handle object, no entry
    in the handle table, about 200 bytes less per queued job. The core packs and unpacks
    (``ClientRules._submit_packed`` and ``JobLifecycle._unpack``); this class keeps the order.

    ``packed`` holds the packed jobs in the order they were queued, which is the order of
    their handle numbers, so that one is found by bisection. ``items`` is the queue's order
    across both kinds: a Job, or how many of the next entries of ``packed`` come now; the last
    ``tail`` entries of ``packed`` come after all of ``items`` (a queue of packed jobs only,
    the common case, has no ``items`` at all). A packed job looked up by its handle is unpacked
    in place: its Job takes its entry in ``packed``, where the order still holds.
    """

    __slots__ = ("items", "packed", "size", "tail")

    def __init__(self) -> None:
        self.items: deque[Job | int] = deque()
        self.packed: deque[bytes | Job] = deque()
        self.tail = 0
        #: Entries of both kinds (cancelled jobs not yet let go included).
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[Job | bytes]:
        """The entries, oldest first: Jobs and packed jobs (bytes)."""
        packed = iter(self.packed)
        for item in self.items:
            if item.__class__ is int:
                for _ in range(item):
                    yield next(packed)
            else:
                yield item  # type: ignore[misc]
        yield from packed

    def append(self, job: Job) -> None:
        if self.tail:
            self.items.append(self.tail)
            self.tail = 0
        self.items.append(job)
        self.size += 1

    def append_packed(self, entry: bytes) -> None:
        self.packed.append(entry)
        self.tail += 1
        self.size += 1

    def extend_packed(self, entries: list[bytes]) -> None:
        """``append_packed`` of each of ``entries``, in their order."""
        self.packed.extend(entries)
        self.tail += len(entries)
        self.size += len(entries)

    def head(self) -> Job | bytes:
        """The oldest entry, left in place (the queue is not empty)."""
        items = self.items
        if items and items[0].__class__ is not int:
            return items[0]  # type: ignore[return-value]
        return self.packed[0]

    def popleft(self) -> Job | bytes:
        """Take the oldest entry (the queue is not empty)."""
        self.size -= 1
        items = self.items
        if not items:
            self.tail -= 1
            return self.packed.popleft()
        first = items[0]
        if first.__class__ is int:
            if first == 1:
                items.popleft()
            else:
                items[0] = first - 1
            return self.packed.popleft()
        return items.popleft()  # type: ignore[return-value]

    def refill(self, entries: list[Job | bytes]) -> None:
        """Hold ``entries`` instead, in their order (a compaction's survivors)."""
        self.items.clear()
        self.packed.clear()
        self.size = self.tail = 0
        for entry in entries:
            if entry.__class__ is bytes:
                self.append_packed(entry)
            else:
                self.append(entry)  # type: ignore[arg-type]

    def find_packed(self, number: int) -> int:
        """The index in ``packed`` of the job with this handle number, or -1."""
        packed = self.packed
        if not packed:
            return -1
        first, last = handle_number(packed[0]), handle_number(packed[-1])
        if not first <= number <= last:
            return -1
        # A deque reaches its middle in steps of 64 entries: guess where the number would be
        # if the queue's numbers were evenly spread (one function's queue of jobs submitted
        # in a row: exactly there), and bisect only the side the guess leaves.
        guess = (number - first) * (len(packed) - 1) // max(last - first, 1)
        found = handle_number(packed[guess])
        if found == number:
            return guess
        if found < number:
            index = bisect_left(packed, number, guess + 1, key=handle_number)
        else:
            index = bisect_left(packed, number, 0, guess, key=handle_number)
        return index if handle_number(packed[index]) == number else -1

    def unpack_all(self, unpack: Callable[[bytes], Job]) -> None:
        """Unpack every packed job in place (``unpack`` builds the Job of an entry)."""
        self.packed = deque(
            unpack(entry) if entry.__class__ is bytes else entry for entry in self.packed
        )


class JobExtras:
    """What few jobs have, kept apart from :class:`Job` so that a plain queued job is small: an
    epoch job's due time, a reduce job's reducer,
    a running job's progress, failed runs and their last error, a dead letter's mark, and what
    a durable store needs. A job gets one the first time any of these is set; until then
    :class:`Job` reads each as its default."""

    __slots__ = (
        "acks",
        "dead_mark",
        "denominator",
        "error",
        "numerator",
        "reducer",
        "retries",
        "store_key",
        "when",
    )

    def __init__(self) -> None:
        self.when: float = 0
        self.reducer = b""
        self.numerator = 0
        self.denominator = 0
        self.retries = 0
        self.error = b""
        self.dead_mark: tuple[int, float] = (0, 0.0)
        self.store_key: bytes | None = None
        self.acks: list[tuple[Session, PendingAck]] | None = None


#: What a job without a :class:`JobExtras` reads: the defaults, never written (setting a field
#: makes the job its own).
NO_EXTRAS = JobExtras()

_T = TypeVar("_T")


class _Extra(Generic[_T]):
    """A :class:`Job` attribute kept in its :class:`JobExtras`: read from :data:`NO_EXTRAS`
    while the job has none, which setting it to anything but the default creates."""

    __slots__ = ("name",)

    def __init__(self) -> None:
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, job: None, owner: type) -> _Extra[_T]: ...

    @overload
    def __get__(self, job: Job, owner: type) -> _T: ...

    def __get__(self, job: Job | None, owner: type) -> _T | _Extra[_T]:
        if job is None:
            return self
        value: _T = getattr(job.extras or NO_EXTRAS, self.name)
        return value

    def __set__(self, job: Job, value: _T) -> None:
        extras = job.extras
        if extras is None:
            if value == getattr(NO_EXTRAS, self.name):
                return
            extras = job.extras = JobExtras()
        setattr(extras, self.name, value)


class Job:
    """One job, from submission until it is forgotten (state DONE).

    A queued background job is the payload and this object with twelve slots (128 bytes): the
    fields few jobs need live in a :class:`JobExtras` created on first use, read through the
    attributes below as if they were the job's own."""

    __slots__ = (
        "background",
        "clients",
        "data",
        "extras",
        "function",
        "handle",
        "priority",
        "since",
        "state",
        "stored",
        "unique",
        "worker",
    )

    def __init__(
        self,
        handle: bytes,
        function: Function,
        unique: bytes,
        data: bytes,
        priority: Priority,
        background: bool,
    ):
        self.handle = handle
        self.function = function
        self.unique = unique
        self.data = data
        self.priority = priority
        self.background = background
        self.state = NEW
        #: Monotonic time it was last queued, then (while it runs) when it started.
        self.since = 0.0
        #: Clients waiting for the result (foreground submitters, coalesced ones included);
        #: a shared empty tuple until there is one, which saves memory on deep background queues.
        self.clients: list[Session] | tuple[()] = ()
        self.worker: Session | None = None
        #: The durable store holds (or is committing) a row for it.
        self.stored = False
        #: The fields below, once one of them is set.
        self.extras: JobExtras | None = None

    #: Epoch second before which the job may not run; 0 for "now". For a job waiting for its
    #: retry, when the backoff ends (a float: backoffs may be shorter than a second).
    when: _Extra[float] = _Extra()
    #: The reducer of SUBMIT_REDUCE_JOB*, handed to a GRAB_JOB_ALL worker.
    reducer: _Extra[bytes] = _Extra()
    #: The last WORK_STATUS of its current run.
    numerator: _Extra[int] = _Extra()
    denominator: _Extra[int] = _Extra()
    #: Runs that ended without success so far: worker losses and, under a retry policy,
    #: WORK_FAIL and WORK_EXCEPTION (gearmand's ``job_retries``, ``show jobs``' second
    #: column). Stored with the job, so it survives a restart.
    retries: _Extra[int] = _Extra()
    #: Why the last run failed: the WORK_EXCEPTION data, ``failed`` or ``worker lost``.
    error: _Extra[bytes] = _Extra()
    #: A dead letter's (number, time of death); set when the job becomes one.
    dead_mark: _Extra[tuple[int, float]] = _Extra()
    #: The store's key for a job submitted without a unique, or with ``-`` (see
    #: ANONYMOUS_PREFIX).
    store_key: _Extra[bytes | None] = _Extra()
    #: While the store has not committed the job: who waits for its JOB_CREATED.
    acks: _Extra[list[tuple[Session, PendingAck]] | None] = _Extra()

    @property
    def dead_id(self) -> int:
        """A dead letter's number (``show dead``); only for a job in state DEAD."""
        return self.dead_mark[0]

    @property
    def died(self) -> float:
        """When a dead letter's last run failed (epoch seconds); only for a job in state DEAD."""
        return self.dead_mark[1]

    @property
    def ignore(self) -> bool:
        """gearmand's ignore_job: it will never run (``show jobs``' third column)."""
        return self.state is CANCELLED

    def __repr__(self) -> str:
        return f"<Job {self.handle!r} {self.function.name!r} {self.state.value}>"


class RetryPolicy(NamedTuple):
    """How a function's failed background jobs are run again.

    ``attempts`` is how many runs a job gets in all; 0 turns retries off (Gearman's meaning: a
    failure is final and the job is gone). After a failed run with attempts left, the job waits
    ``base * 2 ** (failures - 1)`` seconds, at most ``limit``, shortened by jitter to between
    half and all of that; after the last one it becomes a dead letter.
    """

    attempts: int = 0
    base: float = 1.0
    limit: float = 300.0

    @property
    def active(self) -> bool:
        return self.attempts > 0


class Schedule:
    """A recurring job (``schedule add``): ``function`` with ``data`` at each time ``spec``
    matches. ``due`` is its next tick (epoch seconds, UTC minutes), None when the spec never
    matches again."""

    __slots__ = ("data", "due", "function", "name", "spec")

    def __init__(self, name: bytes, function: bytes, spec: CronSpec, data: bytes):
        self.name = name
        self.function = function
        self.spec = spec
        self.data = data
        self.due: int | None = None

    def __repr__(self) -> str:
        return f"<Schedule {self.name!r} {self.spec.text!r} due {self.due}>"


def backoff_delay(policy: RetryPolicy, failures: int, jitter: float) -> float:
    """Seconds before the retry that follows the ``failures``-th failed run. ``jitter`` in
    [0, 1] picks a point between half the exponential delay and all of it (0.5 + 0.5 *
    jitter), so retries of many jobs that failed together spread out instead of returning in
    one burst."""
    exponent = min(max(failures - 1, 0), 62)
    delay = min(policy.base * (2.0**exponent), policy.limit)
    return delay * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


def after_loss(job: Job, job_retries: int) -> JobEvent:
    """What becomes of a job whose worker was lost (its ``retries`` already counts this loss):
    REQUEUE, DROP once ``job_retries`` runs were made (gearmand's meaning; 0 or less is
    unlimited), ABANDON when nobody waits for it any more, DISCARD when it was cancelled."""
    if job.state is CANCELLED:
        return DISCARD
    if not job.clients and not job.background:
        return ABANDON
    if 0 < job_retries <= job.retries:
        return DROP
    return REQUEUE


def coalescing_key(unique: bytes, data: bytes) -> bytes | None:
    """The key under which a job coalesces with its twins, or None when it never does.

    An empty unique never coalesces; ``-`` means "the payload is the key". A real unique cannot
    contain NUL, so prefixing payload keys with one keeps the two kinds apart.
    """
    if not unique:
        return None
    if unique == b"-":
        return b"\0" + data
    return unique
