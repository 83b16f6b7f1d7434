"""A queue that C gearmand left in its persistent store is taken over by gearsql.

C gearmand (Debian's gearman-job-server) writes background jobs to its own queue table; gearsql
pointed at the same table replays them, and a finished job leaves the table.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import urlsplit

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


def _sqlite_queue(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[list[str], str]:
    db = tmp_path / "gearmand-queue.sqlite3"
    return ["-q", "libsqlite3", "--libsqlite3-db", str(db)], f"sqlite:///{db}"


def _postgres_queue(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[list[str], str]:
    dsn = request.getfixturevalue("pg_dsn")
    parts = urlsplit(dsn)
    table = f"gmq_{secrets.token_hex(4)}"
    conninfo = (
        f"host={parts.hostname} port={parts.port or 5432} "
        f"user={parts.username or 'postgres'} dbname={parts.path.strip('/')}"
    )
    if parts.password:
        conninfo += f" password={parts.password}"
    return (
        ["-q", "Postgres", "--libpq-conninfo", conninfo, "--libpq-table", table],
        f"{dsn}?table={table}",
    )


QUEUES = {"libsqlite3": _sqlite_queue, "postgres": _postgres_queue}


@pytest.mark.parametrize("queue", sorted(QUEUES))
def test_gearsql_replays_the_queue_c_gearmand_left(
    tmp_path: Path, request: pytest.FixtureRequest, queue: str
) -> None:
    need_tool("gearmand")
    gearmand_args, store_url = QUEUES[queue](tmp_path, request)
    gearmand = ServerProcess("gearmand", tmp_path / "gearmand.log", gearmand_args).start()
    try:
        submit_with_c_gearmand(
            gearmand,
            [
                (b"low-one", b"low payload", P.SUBMIT_JOB_LOW_BG),
                (b"normal-one", b"normal payload", P.SUBMIT_JOB_BG),
                (b"high-one", b"high \x00 payload", P.SUBMIT_JOB_HIGH_BG),
            ],
        )
    finally:
        gearmand.stop()

    gearsql = ServerProcess("gearsql", tmp_path / "gearsql.log", ["--store", store_url])
    gearsql.start()
    try:
        assert "3 jobs replayed" in gearsql.log()
        assert drain(gearsql, 3) == [
            (b"high-one", b"high \x00 payload"),
            (b"normal-one", b"normal payload"),
            (b"low-one", b"low payload"),
        ]
    finally:
        gearsql.stop()
    # Finished jobs left gearmand's table: a new server replays nothing.
    again = ServerProcess("gearsql", tmp_path / "again.log", ["--store", store_url]).start()
    try:
        assert "0 jobs replayed" in again.log()
    finally:
        again.stop()
