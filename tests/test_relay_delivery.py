"""The relay against real databases, a real ``gearsql server`` and real workers (docs/reliability.md
cases 27-35): PostgreSQL (LISTEN), SQLite (change counter) and MariaDB (polling; the binlog is in
test_relay_binlog.py). Rows are written in the caller's transaction, a ``gearsql relay`` process
submits what was committed, and a :class:`gearsql.Worker` records what runs."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ServerProcess, free_port, wait_for_port
from relaying import (
    DATABASE_PARAMS,
    EVIL,
    WAIT,
    Database,
    Recorder,
    Relays,
    SQLite,
    eventually,
    open_database,
    queued,
)


@pytest.fixture(scope="module", params=DATABASE_PARAMS)
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    with open_database(request.param, tmp_path_factory.mktemp("relay")) as database:
        yield database


@pytest.fixture
def db(database: Database) -> Database:
    """The database with an empty outbox."""
    database.clear()
    return database


def test_a_commit_runs_once_and_a_rollback_or_savepoint_rollback_never(
    db: Database, relays: Relays, recorder: Recorder
) -> None:
    relays.start(db)
    conn = db.connect()
    try:
        db.begin(conn)  # SQLite: BEGIN IMMEDIATE, to wait for the relay's write lock
        db.enqueue(conn, "record", "committed")
        db.execute(conn, "COMMIT")
        db.begin(conn)
        db.enqueue(conn, "record", "rolled back")
        db.execute(conn, "ROLLBACK")
        db.begin(conn)
        db.enqueue(conn, "record", "kept", priority="high")
        db.execute(conn, "SAVEPOINT partly")
        db.enqueue(conn, "record", "undone by the savepoint", priority="low")
        db.execute(conn, "ROLLBACK TO SAVEPOINT partly")
        db.execute(conn, "COMMIT")
        db.enqueue(conn, "record", "last")  # the relay goes in id order: after this, nothing
    finally:
        conn.close()
    recorder.wait_seen(3)
    eventually(lambda: db.outbox() == 0, what="an empty outbox")
    recorder.worker.stop()  # bounded wait with the worker still registered
    recorder.thread.join(10)
    assert sorted(recorder.data()) == [b"committed", b"kept", b"last"]


@pytest.mark.databases("postgres", "sqlite")  # MariaDB's binlog: test_relay_binlog.py
def test_a_commit_wakes_the_relay_without_waiting_for_its_poll(
    db: Database, relays: Relays, recorder: Recorder
) -> None:
    """PostgreSQL's NOTIFY and SQLite's change counter wake the relay: with a poll interval
    longer than the test, the row still arrives (MariaDB's binlog: test_relay_binlog.py)."""
    relay = relays.start(db, "--poll-interval", "600")
    assert "woken by " in relay.log()
    for count in (1, 2):
        conn = db.connect()
        try:
            db.enqueue(conn, "record", f"woken {count}")
        finally:
            conn.close()
        recorder.wait_seen(count)


def test_binary_payloads_injection_uniques_and_priorities_arrive_verbatim(
    db: Database, relays: Relays, recorder: Recorder
) -> None:
    relays.start(db)
    binary = bytes(range(256)) + b"\0\0end\0"
    conn = db.connect()
    try:
        db.enqueue(conn, "record", binary)
        db.enqueue(conn, EVIL, EVIL, "'; DROP TABLE canary;--")
        db.enqueue(conn, "record", "with a unique", "my-unique", priority="high")
        db.enqueue(conn, "record", "low", priority="low")
    finally:
        conn.close()
    seen = recorder.wait_seen(4)
    by_data = {data: (function, unique) for function, unique, data in seen}
    assert by_data[binary][0] == b"record"
    assert by_data[binary][1].startswith(b"outbox:")  # the relay's unique: prefix + outbox id
    assert by_data[EVIL.encode()] == (EVIL.encode(), b"'; DROP TABLE canary;--")
    assert by_data[b"with a unique"] == (b"record", b"my-unique")
    eventually(lambda: db.outbox() == 0, what="an empty outbox")
    if db.kind == "sqlite":  # the canary table is still there
        conn = db.connect()
        conn.execute("SELECT count(*) FROM canary").fetchone()
        conn.close()


def test_a_10_mb_payload_arrives_byte_exact(
    db: Database, relays: Relays, recorder: Recorder
) -> None:
    relays.start(db)
    big = os.urandom(10 * 1024 * 1024) + b"\0"
    conn = db.connect()
    try:
        db.enqueue(conn, "record", big)
        db.enqueue(conn, "record", b"small after big")
    finally:
        conn.close()
    seen = recorder.wait_seen(2, timeout=60)
    assert sorted(len(data) for _, _, data in seen) == [len(b"small after big"), len(big)]
    assert [data for _, _, data in seen if len(data) == len(big)] == [big]


def test_rows_wait_while_the_job_server_is_down_and_go_when_it_is_back(
    db: Database, relays: Relays, tmp_path: Path
) -> None:
    server = ServerProcess("gearsql", tmp_path / "late.log", ["--store", "memory"])
    relay = relays.start(db, server=server)  # nothing listens on its port yet
    conn = db.connect()
    try:
        for i in range(5):
            db.enqueue(conn, "record", f"while down {i}")
    finally:
        conn.close()
    relay.wait_log("does not take jobs")
    assert db.outbox() == 5
    server.start()
    recorder = Recorder(server)
    try:
        seen = recorder.wait_seen(5)
        assert sorted(data for _, _, data in seen) == [f"while down {i}".encode() for i in range(5)]
        eventually(lambda: db.outbox() == 0, what="an empty outbox")
        relay.wait_log("the job server takes jobs again")
        assert relay.log().count("does not take jobs") == 1  # one line per outage
    finally:
        recorder.stop()
        server.stop()


def test_a_relay_killed_between_submit_and_delete_is_coalesced_by_the_next(
    db: Database, gearsql_server: ServerProcess, relays: Relays
) -> None:
    """docs/reliability.md case 29: the first relay submits, then cannot delete (a trigger
    refuses) and is SIGKILLed; the next submits the same rows with the same uniques, which the
    server coalesces with the jobs still queued (no worker yet)."""
    admin = db.connect()
    db.refuse_deletes(admin)
    try:
        first = relays.start(db)
        for i in range(5):
            db.enqueue(admin, "record", f"crash {i}")
        first.wait_log("deletes refused")
        eventually(lambda: queued(gearsql_server) == 5, what="5 queued jobs")
        first.stop(signal.SIGKILL)
        assert db.outbox() == 5  # the rows stayed
    finally:
        db.allow_deletes(admin)
        admin.close()
    second = relays.start(db)
    eventually(lambda: db.outbox() == 0, what="an empty outbox")
    eventually(lambda: second.submitted() == 5, what="the relay's log line")
    assert queued(gearsql_server) == 5  # resubmitted with the same uniques: coalesced
    recorder = Recorder(gearsql_server)
    try:
        seen = recorder.wait_seen(5)
        eventually(lambda: queued(gearsql_server) == 0, what="no queued jobs")
        recorder.worker.stop()
        recorder.thread.join(10)
        assert sorted(recorder.data()) == [f"crash {i}".encode() for i in range(5)]
        assert len({unique for _, unique, _ in seen}) == 5
    finally:
        recorder.stop()


def _bulk_through_two_relays(db: Database, relays: Relays, recorder: Recorder, rows: int) -> None:
    first = relays.start(db, "--batch", "300")
    second = relays.start(db, "--batch", "300")
    conn = db.connect()
    try:
        db.bulk(conn, rows)
    finally:
        conn.close()
    recorder.wait_seen(rows, timeout=max(WAIT, rows / 200))
    eventually(lambda: db.outbox() == 0, what="an empty outbox")
    eventually(lambda: first.submitted() + second.submitted() == rows, what="the relays' log lines")
    recorder.worker.stop()
    recorder.thread.join(10)
    counts = collections.Counter(unique for _, unique, _ in recorder.seen)
    assert len(counts) == rows
    assert set(counts.values()) == {1}
    assert sorted(recorder.data()) == sorted(f"bulk-{i}".encode() for i in range(1, rows + 1))
    # Neither relay submitted a row the other had: the submissions add up exactly.
    assert first.submitted() + second.submitted() == rows
    # And neither met a database error (a deadlock would undo a submitted batch).
    assert "WARNING" not in first.log() + second.log()


def test_a_bulk_insert_through_two_relays_is_delivered_once_each(
    db: Database, relays: Relays, recorder: Recorder
) -> None:
    """docs/reliability.md case 32 with 10k rows: one transaction, two relays claiming at once."""
    _bulk_through_two_relays(db, relays, recorder, 10_000)


@pytest.mark.slow
def test_a_100k_row_bulk_insert_through_two_relays_is_delivered_once_each(
    db: Database, relays: Relays, recorder: Recorder
) -> None:
    _bulk_through_two_relays(db, relays, recorder, 100_000)


@pytest.mark.slow
def test_a_relay_killed_mid_bulk_duplicates_at_most_a_batch(
    db: Database, relays: Relays, recorder: Recorder
) -> None:
    """docs/reliability.md case 32: SIGKILL in the middle of a bulk insert; the next relay
    resubmits at most the batch in hand, so at most that many jobs run twice."""
    rows, batch = 20_000, 100
    conn = db.connect()
    try:
        db.bulk(conn, rows)
    finally:
        conn.close()
    first = relays.start(db, "--batch", str(batch))
    recorder.wait_seen(rows // 4, timeout=60)
    first.stop(signal.SIGKILL)
    relays.start(db, "--batch", str(batch))
    # Every row, counted once: seen jobs include the duplicates, so their number reaches `rows`
    # before the last distinct row has run.
    eventually(lambda: len(set(recorder.data())) >= rows, 120, "every row run at least once")
    eventually(lambda: db.outbox() == 0, what="an empty outbox")
    recorder.worker.stop()
    recorder.thread.join(10)
    counts = collections.Counter(recorder.data())
    assert len(counts) == rows
    assert sum(count - 1 for count in counts.values()) <= batch


def _drop_connections(db: Database) -> int:
    conn = db.connect()
    try:
        cursor = conn.cursor()
        if db.kind == "postgres":
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return int(cursor.fetchone()[0])
        cursor.execute(
            "SELECT id FROM information_schema.processlist "
            "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
        )
        ids = [row[0] for row in cursor.fetchall()]
        for id_ in ids:
            cursor.execute(f"KILL {int(id_)}")
        return len(ids)
    finally:
        conn.close()


@pytest.mark.databases("postgres", "mariadb")  # an SQLite file has no connection to drop
def test_a_dropped_database_connection_is_reconnected(
    db: Database, relays: Relays, recorder: Recorder
) -> None:
    relay = relays.start(db)
    for count, workload in enumerate(("before", "after"), 1):
        conn = db.connect()
        try:
            db.enqueue(conn, "record", workload)
        finally:
            conn.close()
        recorder.wait_seen(count)
        if count == 1:
            # Once the relay committed the delete: a worker can start the job before that,
            # and a connection dropped in between makes the row go again (at least once).
            eventually(lambda: db.outbox() == 0, what="an empty outbox")
            assert _drop_connections(db) >= 1  # the relay's
    assert sorted(recorder.data()) == [b"after", b"before"]
    relay.wait_log("connected again")


# -- not per database ---------------------------------------------------------------------------


def test_the_server_runs_a_relay_itself(tmp_path: Path) -> None:
    db = SQLite(tmp_path / "app.db")
    port = free_port()
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gearsql",
            "server",
            "--store",
            "memory",
            "-p",
            str(port),
            "--relay",
            db.dsn,
            "--log-file",
            str(log),
            "--verbose",
            "INFO",
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        server = ServerProcess("gearsql", log)
        server.port = port
        recorder = Recorder(server)
        try:
            conn = db.connect()
            try:
                db.enqueue(conn, "record", "inside")
            finally:
                conn.close()
            assert recorder.wait_seen(1)[0][2] == b"inside"
        finally:
            recorder.stop()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    text = log.read_text()
    assert "relaying sqlite " in text and "stopped after 1 rows" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dsn", "oracle://x/y"], "unknown database 'oracle://x/y'"),
        (
            ["--dsn", "postgresql://127.0.0.1/x", "--source", "binlog"],
            "--source binlog is for MySQL",
        ),
        (["--dsn", "sqlite:///x.db", "--source", "listen"], "SQLite relay watches its file"),
        (["--dsn", "postgresql://127.0.0.1/x", "--schema", "a;drop"], "not a plain SQL identifier"),
        (["--dsn", "sqlite:///x.db", "--servers", "host:notaport"], "--servers"),
        (["--dsn", "sqlite:///x.db", "--unique-prefix", "p" * 45], "at most 44 leave room"),
    ],
)
def test_bad_options_are_one_clear_line(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gearsql", "relay", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "where",
    [
        "sqlite-missing-file",
        "sqlite-without-outbox",
        "postgresql",
        "mariadb",
    ],
)
def test_a_database_without_the_outbox_stops_the_relay_with_status_2(
    tmp_path: Path, where: str
) -> None:
    """A missing outbox is a configuration error, not an outage: one line, exit status 2,
    instead of retrying for ever and calling it "cannot connect"."""
    with contextlib.ExitStack() as stack:
        if where == "sqlite-missing-file":  # relative to the relay's current directory
            dsn, message = "sqlite:///app.db", f"no SQLite database at {tmp_path}/app.db:"
        elif where == "sqlite-without-outbox":
            sqlite3.connect(tmp_path / "app.db").close()  # an empty file of another program
            dsn, message = f"sqlite:///{tmp_path}/app.db", "has no gman_outbox table"
        elif where == "postgresql":
            pytest.importorskip("psycopg")
            from databases import postgres_database

            dsn = stack.enter_context(postgres_database())  # nothing installed in it
            message = '"gearsql".gman_outbox does not exist in database'
        else:
            pytest.importorskip("mysql.connector")
            from databases import mysql_database

            dsn = stack.enter_context(mysql_database())
            message = "gman_outbox does not exist in database"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "gearsql",
                "relay",
                "--dsn",
                dsn,
                "--servers",
                f"127.0.0.1:{free_port()}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("gearsql: ")]
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "cannot connect" not in done.stderr
    assert "Traceback" not in done.stderr


def test_a_relay_started_after_register_finds_the_outbox_before_the_first_call(
    tmp_path: Path, gearsql_server: ServerProcess, recorder: Recorder
) -> None:
    """gearsql.sqlite.register() makes the outbox, so a relay may start before the
    application's first background call."""
    import gearsql.sqlite

    path = tmp_path / "app.db"
    gearsql.sqlite.connect(str(path), None).close()
    relays = Relays(gearsql_server, tmp_path)
    untouched = SQLite.__new__(SQLite)  # the file as the application left it: no call yet
    untouched.dsn = f"sqlite:///{path}"
    relay = relays.start(untouched)
    try:
        db = SQLite(path)
        conn = db.connect()
        try:
            db.enqueue(conn, "record", "first", "a unique of its own")
        finally:
            conn.close()
        assert recorder.wait_seen(1)[0][1:] == (b"a unique of its own", b"first")
        assert relay.proc.poll() is None, relay.log()
    finally:
        relays.stop_all()
