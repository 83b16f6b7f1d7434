"""The client side of the job server core: submissions (``SUBMIT_JOB*``, and the
submissions of replay, ``retry dead`` and schedules), their acknowledgement after the store's
commit, the unique window's recall, and the status queries. See :mod:`gearsql.core`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

from gearsql._corejobs import (
    _JOB_CREATED_HEADERS,
    ANONYMOUS_PREFIX,
    JobLifecycle,
    P,
    _job_created,
    _monotonic,
    error_packet,
)
from gearsql._corestate import (  # the short state and event names are for the hot path
    BURY,
    CANCELLED,
    DELAY,
    DISCARD,
    DROP,
    NEW,
    PACKED_HEAD,
    PURGE,
    QUEUE,
    RETRY,
    STORE,
    Function,
    Job,
    PendingAck,
    Schedule,
    Session,
    coalescing_key,
)
from gearsql._cron import CATCH_UP_LIMIT, LATE, CronError, CronSpec, fields_spec, next_tick
from gearsql.protocol import (
    SUBMIT_KINDS,
    ArgumentProblem,
    Event,
    Packet,
    Priority,
    frame_response,
    pack_response,
)

#: The queue of each background submission type (for ``_submit_run``).
_BACKGROUND_RANK = {
    type_: int(priority) for type_, (priority, background) in SUBMIT_KINDS.items() if background
}


class ClientRules(JobLifecycle):
    """What clients' packets do, and every way a job is submitted."""

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

    def _submit_sched(self, session: Session, packet: Packet) -> None:
        """SUBMIT_JOB_SCHED: a background job at the next whole minute (UTC) after now that
        its minute, hour, day of month, month and weekday match (an empty field matches any;
        each field may be anything a cron field may be). From then on it is an epoch job."""
        name, unique, minute, hour, day, month, weekday, data = packet.args
        try:
            spec = fields_spec(minute, hour, day, month, weekday)
        except CronError as exc:
            self.send(session, error_packet(b"INVALID_ARGUMENT", str(exc).encode()[:200]))
            return
        when = next_tick(spec, self.clock())
        if when is None:
            self.send(session, error_packet(b"INVALID_ARGUMENT", b"The time never comes"))
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

        Returns the job, or None when it was refused or queued packed (a client's plain
        background job, see :class:`~gearsql._corestate.JobQueue`): a caller without a
        session always gets its job.
        """
        fn = self.functions.get(name)
        if fn is None or unique:
            # What a plain submission (a known function, no unique) skips: checks, the
            # function's creation, the unique window and coalescing.
            if fn is None and session is not None and not self._check_name(session, name):
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
            if fn is None:
                if session is not None and not self._room_for_function(session):
                    return None
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
        if (
            background
            and not unique
            and session is not None
            and not (when or reducer or self.durable)
            and len(data) <= self.PACK_LIMIT
        ):
            self._submit_packed(session, fn, priority, data)
            return None
        limit = fn.max_queue[priority]
        if limit and fn.total >= limit and session is not None:
            self.send(session, error_packet(b"QUEUE_ERROR", b"Job queue is full"))
            return None
        self._counter += 1
        handle = self._handle_format % self._counter
        fn.submitted += 1
        job = Job(handle, fn, unique, data, priority, background)
        if when or reducer or retries:
            job.when = when
            job.reducer = reducer
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
        if when:
            self._start(job)
        else:
            self._move(job, QUEUE)
        if session is not None:
            self.send(session, _job_created(handle))
        return job

    def _submit_packed(self, session: Session, fn: Function, priority: int, data: bytes) -> None:
        """Accept a client's plain background job (no unique, no epoch time or reducer, at
        most ``PACK_LIMIT`` bytes, no durable store) packed: as one bytes object in its queue,
        without a Job (see :class:`~gearsql._corestate.JobQueue`). This is what entering
        QUEUED does (see ``_move``); the job gets its Job, in state QUEUED, when something
        needs it (``_unpack``)."""
        limit = fn.max_queue[priority]
        if limit and fn.total >= limit:
            self.send(session, error_packet(b"QUEUE_ERROR", b"Job queue is full"))
            return
        self._counter = number = self._counter + 1
        fn.submitted += 1
        fn.queues[priority].append_packed(PACKED_HEAD.pack(number, _monotonic()) + data)
        fn.waiting[priority] += 1
        self.packed_jobs += 1
        if fn.sleepers:
            self._wake(fn)
        self.send(session, _job_created(self._handle_format % number))

    def _submit_run(self, session: Session, packets: Sequence[Event], index: int) -> int:
        """Take the run of plain background submissions that starts at ``packets[index]``:
        request packets SUBMIT_JOB_BG, SUBMIT_JOB_HIGH_BG or SUBMIT_JOB_LOW_BG, without a
        unique, with at most ``PACK_LIMIT`` bytes, to a function that exists, with room in its
        queue, on a core without a durable store. Each is what ``_submit`` makes of it (see
        ``_submit_packed``), byte for byte; what that looks up per packet is looked up once
        per run, or once per function and priority, the queued time is taken once per run (the
        packets came in one read), and the counters move once per stretch of one function and
        priority. A pipelining client's submissions come in such runs.

        Returns the index of the first packet not taken (``index`` itself when the first is
        not such a submission): the caller hands that one to its handler."""
        if session.closed or self.durable:
            return index
        functions = self.functions
        largest = self.PACK_LIMIT
        out = session.out
        entry_head = PACKED_HEAD.pack
        handle_format = self._handle_format
        headers = _JOB_CREATED_HEADERS
        now = _monotonic()
        number = self._counter
        start = index
        end = len(packets)
        fn: Function | None = None
        name = b""
        priority = -1
        room = 0  # jobs the function's queue takes before it is full; negative: no limit
        entries: list[bytes] = []
        while index < end:
            packet = packets[index]
            if type(packet) is not Packet or not packet.request:
                break
            rank = _BACKGROUND_RANK.get(packet.type)
            if rank is None:
                break
            this_name, unique, data = packet.args
            if unique or len(data) > largest:
                break
            if rank != priority or this_name != name:
                if entries:
                    self._counter = number
                    self._queue_run(fn, priority, entries)  # type: ignore[arg-type]
                    entries = []
                fn = functions.get(this_name)
                if fn is None:
                    break
                name = this_name
                priority = rank
                limit = fn.max_queue[rank]
                room = max(limit - fn.total, 0) if limit else -1
            if not room:
                break  # full: its handler refuses it
            room -= 1
            number += 1
            entries.append(entry_head(number, now) + data)
            if fn.sleepers:  # type: ignore[union-attr]
                self._counter = number
                self._queue_run(fn, priority, entries)  # type: ignore[arg-type]
                entries = []
                if not session.in_dirty:
                    session.in_dirty = True
                    self.dirty.append(session)
                self._wake(fn)  # type: ignore[arg-type]
            handle = handle_format % number
            out.append(headers[len(handle)] + handle)
            index += 1
        if entries:
            self._counter = number
            self._queue_run(fn, priority, entries)  # type: ignore[arg-type]
        if index > start and not session.in_dirty:
            session.in_dirty = True
            self.dirty.append(session)
        return index

    def _queue_run(self, fn: Function, priority: int, entries: list[bytes]) -> None:
        """Queue packed jobs of one function and priority, oldest first (``_submit_run``)."""
        fn.queues[priority].extend_packed(entries)
        count = len(entries)
        fn.waiting[priority] += count
        fn.submitted += count
        self.packed_jobs += count

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

    def _start(self, job: Job) -> None:
        """Queue a new (or newly committed) job, or hold it until its epoch time."""
        when = job.when
        if when and when > self.clock():
            # A replayed job that was waiting for its retry keeps waiting as a retry.
            self._move(job, RETRY if job.retries and job.state is NEW else DELAY)
        else:
            self._move(job, QUEUE)

    def _acknowledge(self, session: Session, job: Job) -> None:
        """JOB_CREATED now, or a placeholder for it while the job's commit is under way."""
        acks = job.acks
        if acks is None:
            self.send(session, _job_created(job.handle))
            return
        ack = PendingAck()
        acks.append((session, ack))
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
        job = self.job(handle)
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

    def define_schedules(self, defined: Iterable[tuple[bytes, bytes, CronSpec, bytes]]) -> None:
        """The schedules of the config file (``--schedule``), once the stored ones are loaded:
        one stored with the same function, spec and data keeps its next tick (a restart
        neither repeats nor skips a tick); any other is added, or replaces the stored one of
        its name, from its next tick on. Stored schedules the config does not name stay."""
        for name, function, spec, data in defined:
            old = self.schedules.get(name)
            if old is None or (old.function, old.spec.text, old.data) != (
                function,
                spec.text,
                data,
            ):
                self.add_schedule(name, function, spec, data)

    def _tick(self, schedule: Schedule, now: float) -> None:
        """Submit the job of ``schedule``'s due tick, and move it to its next tick after now.

        Ticks missed while the server was down (or skipped by a clock jumped forward) go as
        the schedule's catch-up mode says: ``one`` submits the tick that was due and not the
        rest, ``none`` submits nothing for a tick more than a minute late, ``all`` submits
        every missed tick up to now (the first :data:`~gearsql._cron.CATCH_UP_LIMIT`). Each
        job's unique names its tick (``NAME@EPOCH``), and the jobs and the schedule's next
        tick are committed together."""
        due = schedule.due
        assert due is not None
        spec = schedule.spec
        ticks = [due]
        if spec.catch_up == "none" and due < now - LATE:
            ticks = []
        elif spec.catch_up == "all":
            later = next_tick(spec, due)
            while later is not None and later <= now and len(ticks) < CATCH_UP_LIMIT:
                ticks.append(later)
                later = next_tick(spec, later)
        for tick in ticks:
            self.submit(
                None,
                schedule.function,
                schedule.name + b"@%d" % tick,
                schedule.data,
                Priority.NORMAL,
                True,
            )
        name = schedule.name.decode("latin-1")
        if not ticks:
            message = f"Schedule {name} skipped its tick due at {due} (catch-up=none)"
        elif len(ticks) == 1:
            message = f"Schedule {name} submitted its tick due at {due}"
        else:
            message = f"Schedule {name} submitted {len(ticks)} ticks due from {due} to {ticks[-1]}"
        self.notice("INFO", message, key="schedule")
        schedule.due = next_tick(spec, max(now, ticks[-1] if ticks else due))
        if self.durable:
            self.schedule_changes.append((schedule.name, schedule))
            self.pending_writes = True
        self._arm_tick(schedule)

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
