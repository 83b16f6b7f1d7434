"""The relay against real databases, a real job server and real workers (RELIABILITY 27-35).

Each test runs against PostgreSQL (LISTEN), SQLite (polling) and MariaDB (polling; the binlog
source has tests/test_relay_binlog.py): the gman_*_background functions write the outbox in the
caller's transaction, a ``gearsql relay`` process submits what was committed, and a
:class:`gearsql.Worker` records what runs.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerProcess, free_port, wait_for_port
from wire import Peer

from gearsql import Worker, WorkerJob
from gearsql.relay import Relay, open_source

EVIL = "x'); DROP TABLE canary;--"
WAIT = 20.0


class Recorder:
    """A real worker in a thread that records (function, unique, data) of every job."""

    def __init__(self, server: ServerProcess, functions: tuple[str, ...] = ("record", EVIL)):
        self.worker = Worker(f"{server.host}:{server.port}", concurrency=8)
        self.seen: list[tuple[bytes, bytes, bytes]] = []
        self.lock = threading.Lock()
        for name in functions:
            self.worker.register(name, self.record)
        self.thread = threading.Thread(target=self.worker.run_forever,
                                       kwargs={"handle_signals": False}, daemon=True)
        self.thread.start()

    def record(self, job: WorkerJob) -> bytes:
        with self.lock:
            self.seen.append((job.function, job.unique, job.data))
        return b""

    def wait_seen(self, count: int, timeout: float = WAIT) -> list[tuple[bytes, bytes, bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.seen) >= count:
                    return list(self.seen)
            time.sleep(0.02)
        raise AssertionError(f"the worker saw {len(self.seen)} jobs, expected {count}")

    def data(self) -> list[bytes]:
        with self.lock:
            return [data for _, _, data in self.seen]

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(10)


class Database:
    """One database with the gman_* functions installed, in transactional mode."""

    kind = ""
    dsn = ""
    placeholder = "%s"
    prefix = ""

    def connect(self) -> Any:
        raise NotImplementedError

    def function(self, name: str, with_unique: bool) -> str:
        return name

    def call(self, conn: Any, name: str, *args: Any) -> Any:
        sql = (f"SELECT {self.prefix}{self.function(name, len(args) == 3)}"
               f"({', '.join([self.placeholder] * len(args))})")
        cursor = conn.cursor()
        cursor.execute(sql, args)
        value = cursor.fetchone()[0]
        cursor.close()
        return value

    def execute(self, conn: Any, sql: str) -> None:
        cursor = conn.cursor()
        cursor.execute(sql)
        cursor.close()

    def outbox(self) -> int:
        conn = self.connect()
        try:
            cursor = conn.cursor()
            cursor.execute(f"SELECT count(*) FROM {self.prefix}gman_outbox")
            count = int(cursor.fetchone()[0])
            cursor.close()
            return count
        finally:
            conn.close()


class Postgres(Database):
    kind = "postgres"

    def __init__(self, dsn: str) -> None:
        from gearsql.bridges.postgres import install

        self.dsn = dsn
        install(dsn, "gearsql")
        self.prefix = "gearsql."

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True)

    def bulk(self, conn: Any, rows: int) -> None:
        self.execute(conn, "BEGIN")
        conn.execute(
            "SELECT gearsql.gman_do_background('record', 'bulk-' || i) "
            "FROM generate_series(1, %s) AS i", (rows,)
        )
        self.execute(conn, "COMMIT")


class SQLite(Database):
    kind = "sqlite"
    placeholder = "?"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dsn = f"sqlite:///{path}"
        conn = self.connect()
        conn.execute("CREATE TABLE IF NOT EXISTS canary (x)")
        conn.close()

    def connect(self) -> Any:
        import gearsql.sqlite

        return gearsql.sqlite.connect(str(self.path), None, isolation_level=None, timeout=WAIT)

    def bulk(self, conn: Any, rows: int) -> None:
        conn.execute("BEGIN")
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "SELECT count(gman_do_background('record', 'bulk-' || i)) FROM n", (rows,)
        )
        conn.execute("COMMIT")


class MariaDB(Database):
    kind = "mariadb"

    def __init__(self, dsn: str) -> None:
        from gearsql.bridges.mysql import install

        self.dsn = dsn
        install(dsn)

    def function(self, name: str, with_unique: bool) -> str:
        return name + "_unique" if with_unique else name

    def connect(self) -> Any:
        import mysql.connector
        from databases import mysql_connect_args

        return mysql.connector.connect(**mysql_connect_args(self.dsn), autocommit=True)

    def bulk(self, conn: Any, rows: int) -> None:
        self.execute(conn, "START TRANSACTION")
        self.execute(conn, "CREATE TEMPORARY TABLE IF NOT EXISTS n (i INT PRIMARY KEY)")
        self.execute(conn, "DELETE FROM n")
        cursor = conn.cursor()
        cursor.executemany("INSERT INTO n VALUES (%s)", [(i,) for i in range(1, rows + 1)])
        cursor.execute(
            "SELECT count(gman_do_background('record', CONCAT('bulk-', i))) FROM n"
        )
        cursor.fetchall()
        cursor.close()
        self.execute(conn, "COMMIT")


@pytest.fixture(scope="module", params=[
    pytest.param("postgres", marks=pytest.mark.pg),
    pytest.param("sqlite"),
    pytest.param("mariadb", marks=pytest.mark.mysql),
])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Database]:
    if request.param == "sqlite":
        yield SQLite(tmp_path_factory.mktemp("relay") / "app.db")
        return
    from databases import mysql_database, postgres_database

    if request.param == "postgres":
        pytest.importorskip("psycopg")
        with postgres_database() as dsn:
            yield Postgres(dsn)
    else:
        pytest.importorskip("mysql.connector")
        with mysql_database() as dsn:
            yield MariaDB(dsn)


@pytest.fixture
def empty(database: Database) -> Database:
    """The database with an empty outbox (what an earlier test left is cleared)."""
    conn = database.connect()
    try:
        database.execute(conn, f"DELETE FROM {database.prefix}gman_outbox"
                         if database.kind != "sqlite" or _has_outbox(conn) else "SELECT 1")
    finally:
        conn.close()
    return database


def _has_outbox(conn: Any) -> bool:
    return bool(conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE name = 'gman_outbox'").fetchone()[0])


class RelayProcess:
    """``gearsql relay`` as a child process with its log in a file."""

    def __init__(self, database: Database, servers: str, log: Path, *args: str) -> None:
        self.log_path = log
        self.handle = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gearsql", "relay", "--dsn", database.dsn,
             "--servers", servers, "--poll-interval", "0.1", "--verbose", "INFO", *args],
            stdin=subprocess.DEVNULL, stdout=self.handle, stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert time.monotonic() < deadline, f"{text!r} not in the relay's log:\n{self.log()}"
            assert self.proc.poll() is None, f"the relay exited:\n{self.log()}"
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.handle.close()
        return code


@pytest.fixture
def relays(gearsql_server: ServerProcess, tmp_path: Path) -> Iterator[Any]:
    started: list[RelayProcess] = []

    def start(database: Database, *args: str, server: ServerProcess | None = None
              ) -> RelayProcess:
        target = server or gearsql_server
        relay = RelayProcess(database, f"{target.host}:{target.port}",
                             tmp_path / f"relay{len(started)}.log", *args)
        started.append(relay)
        relay.wait_log("relaying ")
        return relay

    yield start
    for relay in started:
        code = relay.stop()
        assert code in (0, -signal.SIGKILL), f"relay exit {code}:\n{relay.log()}"


@pytest.fixture
def recorder(gearsql_server: ServerProcess) -> Iterator[Recorder]:
    recorder = Recorder(gearsql_server)
    yield recorder
    recorder.stop()


def queued(server: ServerProcess, function: str = "record") -> int:
    """Jobs of ``function`` the server holds (its `status` line), 0 when it has none."""
    with Peer(server.address) as peer:
        for line in peer.admin("status").decode().splitlines():
            parts = line.split("\t")
            if parts[0] == function:
                return int(parts[1])
    return 0


def test_commit_runs_once_and_rollback_never(
    empty: Database, relays: Any, recorder: Recorder
) -> None:
    db = empty
    relays(db)
    conn = db.connect()
    try:
        db.execute(conn, "BEGIN")
        assert str(db.call(conn, "gman_do_background", "record", "committed")).startswith(
            "outbox:")
        db.execute(conn, "COMMIT")
        db.execute(conn, "BEGIN")
        db.call(conn, "gman_do_background", "record", "rolled back")
        db.execute(conn, "ROLLBACK")
        db.execute(conn, "BEGIN")
        db.call(conn, "gman_do_high_background", "record", "kept")
        db.execute(conn, "SAVEPOINT partly")
        db.call(conn, "gman_do_low_background", "record", "undone by the savepoint")
        db.execute(conn, "ROLLBACK TO SAVEPOINT partly")
        db.execute(conn, "COMMIT")
    finally:
        conn.close()
    recorder.wait_seen(2)
    time.sleep(2)  # anything rolled back would have run by now
    assert sorted(recorder.data()) == [b"committed", b"kept"]
    assert db.outbox() == 0


def test_binary_payloads_injection_and_uniques_arrive_verbatim(
    empty: Database, relays: Any, recorder: Recorder
) -> None:
    db = empty
    relays(db)
    binary = bytes(range(256)) + b"\0\0end\0"
    conn = db.connect()
    try:
        db.call(conn, "gman_do_background", "record", binary)
        db.call(conn, "gman_do_background", EVIL, EVIL, "'; DROP TABLE canary;--")
        db.call(conn, "gman_do_background", "record", "with a unique", "my-unique")
    finally:
        conn.close()
    seen = recorder.wait_seen(3)
    by_data = {data: (function, unique) for function, unique, data in seen}
    assert by_data[binary][0] == b"record"
    assert by_data[binary][1].startswith(b"outbox:")  # the relay's unique: outbox id
    assert by_data[EVIL.encode()] == (EVIL.encode(), b"'; DROP TABLE canary;--")
    assert by_data[b"with a unique"] == (b"record", b"my-unique")
    conn = db.connect()
    try:
        cursor = conn.cursor()
        cursor.execute(f"SELECT count(*) FROM {db.prefix}gman_outbox")
        assert cursor.fetchone()[0] == 0
        if db.kind == "sqlite":  # the canary table is still there
            cursor.execute("SELECT count(*) FROM canary")
            cursor.fetchone()
        cursor.close()
    finally:
        conn.close()


def test_a_10_mb_payload_arrives_byte_exact(
    empty: Database, relays: Any, recorder: Recorder
) -> None:
    db = empty
    relays(db)
    big = os.urandom(10 * 1024 * 1024)
    conn = db.connect()
    try:
        db.call(conn, "gman_do_background", "record", big)
        db.call(conn, "gman_do_background", "record", b"small after big")
    finally:
        conn.close()
    seen = recorder.wait_seen(2, timeout=60)
    assert sorted(len(data) for _, _, data in seen) == [len(b"small after big"), len(big)]
    assert [data for _, _, data in seen if len(data) == len(big)] == [big]


def test_rows_wait_while_the_job_server_is_down(
    empty: Database, relays: Any, tmp_path: Path
) -> None:
    db = empty
    server = ServerProcess("gearsql", tmp_path / "late.log", ["--store", "memory"])
    relay = relays(db, server=server)  # nothing listens on its port yet
    conn = db.connect()
    try:
        for i in range(5):
            db.call(conn, "gman_do_background", "record", f"while down {i}")
    finally:
        conn.close()
    relay.wait_log("they wait in the outbox")
    time.sleep(0.5)
    assert db.outbox() == 5
    server.start()
    recorder = Recorder(server)
    try:
        seen = recorder.wait_seen(5, timeout=30)
        assert sorted(data for _, _, data in seen) == [f"while down {i}".encode()
                                                        for i in range(5)]
        assert db.outbox() == 0
        assert relay.log().count("they wait in the outbox") == 1  # one line per outage
        relay.wait_log("the job server takes jobs again")
    finally:
        recorder.stop()
        server.stop()


class _CrashBeforeDelete(Exception):
    pass


def test_a_relay_that_dies_before_deleting_is_coalesced_by_the_next(
    empty: Database, gearsql_server: ServerProcess, relays: Any
) -> None:
    """RELIABILITY 29: the crash between submit and delete is injected at that exact point
    (the real source's finish raises instead of deleting); the next relay resubmits the same
    uniques and the server coalesces them while they are still queued."""
    db = empty
    conn = db.connect()
    try:
        for i in range(5):
            db.call(conn, "gman_do_background", "record", f"crash {i}")
    finally:
        conn.close()
    source = open_source(db.dsn)

    def crash(ids: list[int]) -> None:
        raise _CrashBeforeDelete()

    source.finish = crash  # type: ignore[method-assign]

    async def first_relay() -> None:
        relay = Relay(source, f"{gearsql_server.host}:{gearsql_server.port}",
                      poll_interval=0.1)
        with pytest.raises(_CrashBeforeDelete):
            await relay._connect()
            await relay._round()
        await relay.client.close()
        source.close()
        relay._executor.shutdown()

    asyncio.run(first_relay())
    assert queued(gearsql_server) == 5  # submitted, no worker yet
    assert db.outbox() == 5  # the rows stayed
    relays(db)
    deadline = time.monotonic() + WAIT
    while db.outbox():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert queued(gearsql_server) == 5  # resubmitted with the same uniques: coalesced
    recorder = Recorder(gearsql_server)
    try:
        seen = recorder.wait_seen(5)
        time.sleep(1)
        assert sorted(recorder.data()) == [f"crash {i}".encode() for i in range(5)]
        assert len({unique for _, unique, _ in seen}) == 5
    finally:
        recorder.stop()


def test_a_bulk_insert_through_two_relays_is_delivered_once_each(
    empty: Database, relays: Any, recorder: Recorder
) -> None:
    """RELIABILITY 32: one transaction of many rows, two relays claiming at once."""
    db = empty
    rows = 5000
    relays(db, "--batch", "200")
    relays(db, "--batch", "200")
    conn = db.connect()
    try:
        db.bulk(conn, rows)  # type: ignore[attr-defined]
    finally:
        conn.close()
    recorder.wait_seen(rows, timeout=60)
    time.sleep(1)
    counts = collections.Counter(unique for _, unique, _ in recorder.seen)
    assert len(counts) == rows
    assert set(counts.values()) == {1}
    assert sorted(recorder.data()) == sorted(f"bulk-{i}".encode() for i in range(1, rows + 1))
    assert db.outbox() == 0


@pytest.mark.slow
def test_a_relay_killed_mid_bulk_duplicates_at_most_a_batch(
    empty: Database, relays: Any, recorder: Recorder
) -> None:
    db = empty
    rows, batch = 20000, 100
    conn = db.connect()
    try:
        db.bulk(conn, rows)  # type: ignore[attr-defined]
    finally:
        conn.close()
    first = relays(db, "--batch", str(batch))
    recorder.wait_seen(rows // 4, timeout=60)
    first.stop(signal.SIGKILL)
    relays(db, "--batch", str(batch))
    recorder.wait_seen(rows, timeout=120)
    time.sleep(1)
    counts = collections.Counter(data for _, _, data in recorder.seen)
    assert len(counts) == rows
    duplicates = sum(count - 1 for count in counts.values())
    print(f"{duplicates} jobs ran twice after the kill")
    assert duplicates <= batch


def test_the_server_runs_a_relay_itself(tmp_path: Path) -> None:
    db = SQLite(tmp_path / "app.db")
    port = free_port()
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gearsql", "server", "--store", "memory", "-p", str(port),
         "--relay", db.dsn, "--log-file", str(log), "--verbose", "INFO"],
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
                db.call(conn, "gman_do_background", "record", "inside")
            finally:
                conn.close()
            assert recorder.wait_seen(1)[0][2] == b"inside"
        finally:
            recorder.stop()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    text = log.read_text()
    assert "relaying sqlite:" in text and "stopped after 1 rows" in text


@pytest.mark.parametrize(("args", "message"), [
    (["--dsn", "oracle://x/y"], "unknown database 'oracle://x/y'"),
    (["--dsn", "postgresql://127.0.0.1/x", "--source", "binlog"], "--source binlog is for MySQL"),
    (["--dsn", "sqlite:///x.db", "--source", "listen"], "an SQLite relay can only poll"),
    (["--dsn", "postgresql://127.0.0.1/x", "--schema", "a;drop"], "not a plain SQL identifier"),
    (["--dsn", "sqlite:///x.db", "--servers", "host:notaport"], "--servers"),
])
def test_bad_options_are_one_clear_line(args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "gearsql", "relay", *args],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_relay_started_before_the_outbox_exists_delivers_the_first_row(
    tmp_path: Path, gearsql_server: ServerProcess, recorder: Recorder
) -> None:
    """SQLite creates gman_outbox on the first transactional call; a relay already running on
    the file finds it then."""
    db = SQLite(tmp_path / "later.db")
    relay = RelayProcess(db, f"{gearsql_server.host}:{gearsql_server.port}",
                         tmp_path / "relay.log")
    try:
        relay.wait_log("relaying ")
        conn = db.connect()
        try:
            db.call(conn, "gman_do_background", "record", "first")
        finally:
            conn.close()
        assert recorder.wait_seen(1)[0][2] == b"first"
    finally:
        assert relay.stop() == 0


def test_a_relay_without_a_database_reports_it(tmp_path: Path) -> None:
    log = tmp_path / "relay.log"
    with open(log, "ab") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gearsql", "relay", "--dsn",
             f"sqlite:///{tmp_path / 'nowhere.db'}", "--poll-interval", "0.1"],
            stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + WAIT
            while "no SQLite database at" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            assert proc.poll() is None  # it keeps trying
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0

