"""The worker side of the job server core: abilities, sleeping and waking, handing out jobs,
and the work results (``WORK_*``). See :mod:`gearsql.core`.
"""

from __future__ import annotations

import collections
import heapq

from gearsql._corejobs import (
    _BY_RANK,
    _NO_JOB,
    _NOOP,
    _NOT_FOUND_TEXT,
    JobLifecycle,
    P,
    _atoi,
    error_packet,
)
from gearsql._corestate import (  # the short state and event names are for the hot path
    ASSIGN,
    CANCELLED,
    DISCARD,
    FINISH,
    RUNNING,
    Function,
    Job,
    PendingAck,
    RunEnd,
    Session,
)
from gearsql.protocol import (
    MAX_HANDLE,
    Packet,
    frame_response,
    pack_response,
)


class WorkerRules(JobLifecycle):
    """What workers' packets do."""

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
                while queue:
                    head = queue.head()
                    if isinstance(head, bytes) or head.state is not CANCELLED:
                        return True
                    fn.stale[priority] -= 1
                    queue.popleft()
                    self._move(head, DISCARD)
        return False

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
                    entry = queue.popleft()
                    if isinstance(entry, bytes):
                        job = self._unpack(entry, fn, priority)
                    else:
                        job = entry
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
        ends = self._open_ends.get(session)
        if ends is None or len(ends) < self.unconfirmed_runs:
            self.send(session, self._assignment(session, packet.type))
            return
        # As many ends of its stored jobs as allowed are not committed yet: the answer waits
        # for the oldest (and the job stays queued meanwhile, for any worker that may run it).
        reply = PendingAck()
        session.unacked += 1
        self.send(session, reply)  # type: ignore[arg-type]
        ends[0].grabs.append((reply, packet.type))

    def _run_ended(self, worker: Session) -> None:
        """``worker`` ended a run of a stored job: it goes in the next commit, and the
        worker's GRABs wait for it once ``unconfirmed_runs`` of its ends are uncommitted."""
        end = RunEnd(worker)
        ends = self._open_ends.get(worker)
        if ends is None:
            ends = self._open_ends[worker] = collections.deque()
        ends.append(end)
        self.end_holds.append(end)

    def ends_committed(self, ends: list[RunEnd]) -> None:
        """The commit that took ``ends`` (from ``end_holds``) is done: answer the GRABs that
        waited for it."""
        open_ends = self._open_ends
        for end in ends:
            worker = end.worker
            pending = open_ends.get(worker)
            if pending is not None and end in pending:  # the oldest: commits keep their order
                pending.remove(end)
                if not pending:
                    del open_ends[worker]
            if worker.closed:
                continue
            for reply, kind in end.grabs:
                reply.data = self._assignment(worker, kind)
            if end.grabs and not worker.in_dirty:
                worker.in_dirty = True
                self.dirty.append(worker)

    def _assignment(self, session: Session, kind: int) -> bytes:
        """The answer to a GRAB: the next job, now RUNNING on ``session``, or NO_JOB."""
        job = self._take(session)
        if job is None:
            return _NO_JOB
        fn = job.function
        self._move(job, ASSIGN)
        job.worker = session
        session.holding[job.handle] = job
        if kind == P.GRAB_JOB:
            reply = frame_response(P.JOB_ASSIGN, job.handle, fn.name, job.data)
        elif kind == P.GRAB_JOB_ALL and job.reducer:
            reply = frame_response(
                P.JOB_ASSIGN_ALL, job.handle, fn.name, job.unique, job.reducer, job.data
            )
        else:
            reply = frame_response(P.JOB_ASSIGN_UNIQ, job.handle, fn.name, job.unique, job.data)
        timeout = session.timeouts.get(fn) if session.timeouts else None
        if timeout:
            self._seq += 1
            # (worker, retries) names this assignment: a requeue always counts a retry.
            heapq.heappush(
                self._deadlines,
                (self.clock() + timeout, self._seq, job, session, job.retries),
            )
        return reply

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
        stored = job.stored
        self._move(job, FINISH)
        if stored:
            self._run_ended(session)

    def _work_fail(self, session: Session, packet: Packet) -> None:
        job = self._held_job(session, packet)
        if job is None:
            return
        job.function.failed += 1
        self._fail_clients(job)
        stored = job.stored
        if job.background and job.state is RUNNING and self.retry_policy_for(job).active:
            self._failed(job, b"failed", "failed")
        else:
            self._move(job, FINISH)
        if stored:
            self._run_ended(session)

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
        stored = job.stored
        if job.background and job.state is RUNNING and self.retry_policy_for(job).active:
            self._failed(job, packet.args[1] or b"exception", "exception")
        else:
            self._move(job, FINISH)
        if stored:
            self._run_ended(session)
