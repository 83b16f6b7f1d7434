"""Epoch jobs start on time: a SUBMIT_JOB_EPOCH job reaches a sleeping worker when it falls due,
not before, on a real server with a real worker process, in memory and in a durable store.

The server arms its timer for the job's due time itself (``tests/test_core.py::
test_epoch_job_is_not_runnable_before_its_time`` proves the deadline is exactly the epoch); what
is left is how soon the event loop wakes, which depends on the machine's load. So this test
asserts that nothing starts early, prints the lateness (the target is 100 ms), and bounds it
only generously (see the comment there).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ServerProcess
from test_retries import wait_until

from gearsql import Client
from gearsql.adminclient import AdminClient

#: A worker process that writes the time each job started (epoch seconds) to LOG.
WORKER = """
import sys, time
from gearsql import Worker

address, function, log = sys.argv[1:4]

def handle(job):
    started = time.time()
    with open(log, "a") as out:
        out.write(f"{started:.6f} {job.data.decode()}\\n")
    return b"done"

worker = Worker(address)
worker.register(function, handle)
worker.run_forever()
"""

#: Lateness this test tolerates before it fails: far above the 100 ms target, because a CI
#: machine shared with other jobs can stall any process for a second or more; the measured
#: figure is printed for the reader to compare with the target.
GENEROUS = 5.0


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_an_epoch_job_starts_at_its_time_on_a_sleeping_worker(store: str, tmp_path: Path) -> None:
    url = "memory" if store == "memory" else f"sqlite:///{tmp_path}/queue.sqlite3"
    server = ServerProcess(
        "gearsql", tmp_path / "gearsql.log", ["--store", url, "--verbose", "DEBUG"]
    ).start()
    log = tmp_path / "started.log"
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, f"127.0.0.1:{server.port}", "later", str(log)],
        stdin=subprocess.DEVNULL,
    )
    try:
        with AdminClient(f"127.0.0.1:{server.port}") as admin:
            wait_until(
                lambda: any(b"later" in w.functions for w in admin.workers()),
                "the worker to register",
            )
        due = int(time.time()) + 2
        with Client(f"127.0.0.1:{server.port}") as client:
            handle = client.submit_background("later", "on-time", run_at=due).handle
        wait_until(lambda: log.exists() and log.read_text().strip() != "", "the job to start")
        started = float(log.read_text().split()[0])
        pattern = rf"Epoch job {re.escape(handle.decode())} due at (\d+) queued at ([\d.]+)"
        wait_until(
            lambda: re.search(pattern, (tmp_path / "gearsql.log").read_text()) is not None,
            "the server's due line",
        )
        match = re.search(pattern, (tmp_path / "gearsql.log").read_text())
        assert match is not None
        logged_due, queued = int(match[1]), float(match[2])
        print(
            f"\n{store}: epoch job due {due}, queued by the server {1000 * (queued - due):.1f} "
            f"ms after it, started by the worker {1000 * (started - due):.1f} ms after it"
        )
        assert logged_due == due
        # Never early: not queued, let alone started, before its time.
        assert due <= queued <= started
        assert started - due < GENEROUS
    finally:
        worker.terminate()
        worker.wait(10)
        server.stop()
