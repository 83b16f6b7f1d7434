"""A queue that C gearmand left in its persistent store is taken over by gearsql.

C gearmand (Debian's gearman-job-server) writes background jobs to its own queue table; gearsql
pointed at the same table replays them, and a finished job leaves the table.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from conftest import ServerProcess, need_tool
from wire import Peer

from gearsql.protocol import PacketType as P

pytestmark = pytest.mark.interop


def submit_with_c_gearmand(server: ServerProcess, jobs: list[tuple[bytes, bytes, P]]) -> None:
    with Peer(server.address) as client:
        for unique, data, kind in jobs:
            client.send(kind, b"takeover", unique, data)
            client.expect(P.JOB_CREATED)


def drain(server: ServerProcess, count: int) -> list[tuple[bytes, bytes]]:
    """Run ``count`` jobs of function "takeover"; return (unique, data) in the order given."""
    done = []
    with Peer(server.address) as worker:
        worker.send(P.CAN_DO, b"takeover")
        for _ in range(count):
            worker.send(P.GRAB_JOB_UNIQ)
            packet = worker.expect(P.JOB_ASSIGN_UNIQ)
            handle, _function, unique, data = packet.args
            done.append((unique, data))
            worker.send(P.WORK_COMPLETE, handle, b"")
        worker.send(P.GRAB_JOB_UNIQ)
        worker.expect(P.NO_JOB)
    return done


def test_gearsql_replays_a_libsqlite3_queue_left_by_c_gearmand(tmp_path: Path) -> None:
    need_tool("gearmand")
    db = tmp_path / "gearmand-queue.sqlite3"
    gearmand = ServerProcess(
        "gearmand", tmp_path / "gearmand.log", ["-q", "libsqlite3", "--libsqlite3-db", str(db)]
    ).start()
    try:
        submit_with_c_gearmand(gearmand, [
            (b"low-one", b"low payload", P.SUBMIT_JOB_LOW_BG),
            (b"normal-one", b"normal payload", P.SUBMIT_JOB_BG),
            (b"high-one", b"high \x00 payload", P.SUBMIT_JOB_HIGH_BG),
        ])
    finally:
        gearmand.stop()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM gearman_queue").fetchone()[0] == 3

    gearsql = ServerProcess("gearsql", tmp_path / "gearsql.log", ["--store", f"sqlite://{db}"])
    gearsql.start()
    try:
        assert "3 jobs replayed" in gearsql.log()
        assert drain(gearsql, 3) == [
            (b"high-one", b"high \x00 payload"),
            (b"normal-one", b"normal payload"),
            (b"low-one", b"low payload"),
        ]
        deadline = time.monotonic() + 5
        while True:
            with sqlite3.connect(db) as conn:
                left = conn.execute("SELECT count(*) FROM gearman_queue").fetchone()[0]
            if left == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert left == 0, "finished jobs must leave gearmand's table"
    finally:
        gearsql.stop()
