"""Outbox rows no job server will take never hold up the rows behind them (docs/reliability.md
case 48): the relay moves them to ``gman_outbox_dead`` with the reason, in the transaction that
deletes them from the outbox, in PostgreSQL, SQLite and MariaDB; against a real ``gearsql
server`` whose ``--max-packet-size`` is small, so that an oversized row is cheap to make."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ServerProcess
from relaying import (
    DATABASE_PARAMS,
    Database,
    Recorder,
    Relays,
    eventually,
    open_database,
)

#: The job server's limit in these tests, and a workload above it.
MAX_PACKET = 64 * 1024
OVERSIZED = "x" * (MAX_PACKET * 3)


@pytest.fixture(scope="module", params=DATABASE_PARAMS)
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    with open_database(request.param, tmp_path_factory.mktemp("dead")) as database:
        yield database


@pytest.fixture
def db(database: Database) -> Database:
    database.clear()
    return database


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A gearsql server that refuses packets above MAX_PACKET bytes."""
    server = ServerProcess(
        "gearsql",
        tmp_path / "small.log",
        ["--store", "memory", "--max-packet-size", str(MAX_PACKET)],
    ).start()
    try:
        yield server
    finally:
        server.stop()


def test_an_oversized_row_moves_to_the_dead_letters_and_the_rows_after_it_still_go(
    db: Database, relays: Relays, small_server: ServerProcess
) -> None:
    recorder = Recorder(small_server)
    try:
        conn = db.connect()
        try:
            db.enqueue(conn, "record", "before-big")
            db.enqueue(conn, "bigjob", OVERSIZED)
            for i in range(5):
                db.enqueue(conn, "record", f"after-big-{i}")
        finally:
            conn.close()
        relay = relays.start(db, server=small_server)
        recorder.wait_seen(6)
        eventually(lambda: db.outbox() == 0, what="an empty outbox")
        assert sorted(recorder.data()) == sorted(
            [b"before-big", *(f"after-big-{i}".encode() for i in range(5))]
        )
        [(_, function, reason)] = db.dead()
        assert function == b"bigjob"
        assert "ARGUMENT_TOO_LARGE" in reason or "closed the connection" in reason, reason
        # Later rows go in batches again, and the dead row is logged once.
        conn = db.connect()
        try:
            db.bulk(conn, 50)
        finally:
            conn.close()
        recorder.wait_seen(56)
        eventually(lambda: db.outbox() == 0, what="an empty outbox")
        assert relay.log().count("can never be submitted") == 1, relay.log()
        assert "moved it to gman_outbox_dead" in relay.log()
        shown = subprocess.run(
            [sys.executable, "-m", "gearsql", "relay", "status", "--dsn", db.dsn],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert "backlog: 0 row(s)\n" in shown.stdout
        assert "dead letters: 1, the newest at " in shown.stdout
        assert f"    {db.dead()[0][0]}: " in shown.stdout
    finally:
        recorder.stop()


def test_relay_status_shows_the_backlog_and_refuses_a_database_without_an_outbox(
    db: Database, tmp_path: Path
) -> None:
    conn = db.connect()
    try:
        db.enqueue(conn, "record", "waits")
        db.enqueue(conn, "record", "waits too")
    finally:
        conn.close()
    shown = subprocess.run(
        [sys.executable, "-m", "gearsql", "relay", "status", "--dsn", db.dsn],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "backlog: 2 row(s), the oldest " in shown.stdout
    assert "dead letters: 0\n" in shown.stdout
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "gearsql",
            "relay",
            "status",
            "--dsn",
            f"sqlite:///{tmp_path / 'none.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2
    assert missing.stderr.startswith("gearsql: no SQLite database at ")
    assert "Traceback" not in missing.stderr


def test_a_row_that_breaks_the_connection_in_a_batch_is_found_and_the_batch_delivered(
    db: Database, relays: Relays, small_server: ServerProcess
) -> None:
    recorder = Recorder(small_server)
    try:
        conn = db.connect()
        try:
            for i in range(20):
                db.enqueue(conn, "record", f"row-{i}")
                if i in (7, 13):
                    db.enqueue(conn, "bigjob", OVERSIZED)
        finally:
            conn.close()
        relays.start(db, server=small_server)
        recorder.wait_seen(20)
        eventually(lambda: db.outbox() == 0, what="an empty outbox")
        assert sorted(recorder.data()) == sorted(f"row-{i}".encode() for i in range(20))
        assert [function for _, function, _ in db.dead()] == [b"bigjob", b"bigjob"]
    finally:
        recorder.stop()
