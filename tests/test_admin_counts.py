"""Every admin view counts the same jobs, on a real `gearsql server`.

The decision (see gearsql/admin.py and gearsql._corestate.Function): ``status``'s total is the
live jobs of a function, waiting or running; ``prioritystatus`` splits the waiting ones by
priority, so total = HIGH + NORMAL + LOW + running, and ``gearsql top`` shows the same numbers. A
cancelled job, or a foreground job whose clients all left before it started, is counted nowhere:
``show jobs`` lists it with its ignore flag set until the server lets go of it. (C gearmand 1.1.20
counts such jobs in every number until a worker meets them: on this sequence without the epoch
job, it says total 5 and ``1 3 1`` where gearsql says 2 and ``1 1 0``.)
"""

from __future__ import annotations

import subprocess
import sys
import time

from conftest import ServerProcess
from wire import Peer

from gearsql.adminclient import AdminClient
from gearsql.protocol import PacketType as P


def connections(admin: AdminClient) -> int:
    return len(admin.workers())


def wait_until_closed(admin: AdminClient, before: int) -> None:
    """Poll until the server has seen connections close (down to ``before``)."""
    deadline = time.monotonic() + 10
    while connections(admin) > before:
        assert time.monotonic() < deadline, "the server never saw the client leave"
        time.sleep(0.02)


def top_once(server: ServerProcess) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "gearsql", "top", "--once", "-p", str(server.port)],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()[1:]
    # The counts only: the rate columns after DEAD need a second frame.
    end = lines[0].index("DEAD") + len("DEAD")
    return [line[:end].rstrip() for line in lines]


def test_cancelled_and_abandoned_jobs_are_counted_nowhere_and_every_view_agrees(
    gearsql_server: ServerProcess,
) -> None:
    with AdminClient(*gearsql_server.address) as admin, Peer(gearsql_server.address) as client:
        handles = []
        for type_, data in (
            (P.SUBMIT_JOB_BG, b"x0"),
            (P.SUBMIT_JOB_BG, b"x1"),
            (P.SUBMIT_JOB_HIGH_BG, b"x2"),
        ):
            client.send(type_, b"f", b"", data)
            handles.append(client.expect(P.JOB_CREATED).args[0])
        client.send(P.SUBMIT_JOB_EPOCH, b"f", b"", b"%d" % (time.time() + 3600), b"later")
        epoch = client.expect(P.JOB_CREATED).args[0]
        assert admin.cancel_job(handles[0])

        before = connections(admin)
        with Peer(gearsql_server.address) as leaver, Peer(gearsql_server.address) as other:
            leaver.send(P.SUBMIT_JOB, b"f", b"", b"foreground")
            abandoned = leaver.expect(P.JOB_CREATED).args[0]
            other.send(P.SUBMIT_JOB_LOW, b"f", b"u1", b"foreground, low")
            abandoned_low = other.expect(P.JOB_CREATED).args[0]
        wait_until_closed(admin, before)

        # Live: x1 (NORMAL), x2 (HIGH) and the epoch job (NORMAL, due later).
        [status] = admin.status()
        assert (status.name, status.total, status.running, status.workers) == (b"f", 3, 0, 0)
        [ranked] = admin.priority_status()
        assert (ranked.high, ranked.normal, ranked.low) == (1, 2, 0)
        # Cancelled and abandoned jobs are let go as soon as they are half of their queue:
        # x0 and the abandoned NORMAL job with the second, the LOW one at once.
        jobs = {job.handle: job.ignore for job in admin.show_jobs()}
        assert jobs == {handles[1]: False, handles[2]: False, epoch: False}
        assert handles[0] not in jobs and abandoned not in jobs and abandoned_low not in jobs
        assert top_once(gearsql_server) == [
            "FUNCTION  QUEUED  HIGH  NORMAL  LOW  RUNNING  WORKERS  DEAD",
            "f              3     1       2    0        0        0     0",
        ]

        with Peer(gearsql_server.address) as worker:
            worker.send(P.CAN_DO, b"f")
            worker.send(P.GRAB_JOB)
            assert worker.expect(P.JOB_ASSIGN).args[0] == handles[2]
            [status] = admin.status()
            assert (status.total, status.running, status.workers) == (3, 1, 1)
            [ranked] = admin.priority_status()
            assert (ranked.high, ranked.normal, ranked.low) == (0, 2, 0)
            assert top_once(gearsql_server) == [
                "FUNCTION  QUEUED  HIGH  NORMAL  LOW  RUNNING  WORKERS  DEAD",
                "f              2     0       2    0        1        1     0",
            ]
