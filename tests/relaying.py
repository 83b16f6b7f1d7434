"""What the relay tests share: databases with an outbox (PostgreSQL and SQLite through the gman_*
functions, MariaDB with the outbox table the MariaDB bridge installs), a recording worker,
``gearsql relay`` as a child process, and a private MariaDB with the binlog on."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import REQUIRE_TOOLS, ServerProcess, free_port
from wire import Peer

from gearsql import Worker, WorkerJob

WAIT = 30.0
EVIL = "x'); DROP TABLE canary;--"

#: The outbox of the MariaDB bridge (sql/mysql/install.sql), created here directly so that these
#: tests depend on the relay only.
MYSQL_OUTBOX = (
    "CREATE TABLE gman_outbox (id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, "
    "created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), "
    "function VARBINARY(512) NOT NULL, unique_key VARBINARY(64) NULL, "
    "workload LONGBLOB NOT NULL, "
    "priority ENUM('high','normal','low') NOT NULL DEFAULT 'normal') ENGINE=InnoDB"
)
#: Its dead letters, as the bridge installs them.
MYSQL_OUTBOX_DEAD = (
    "CREATE TABLE gman_outbox_dead (id BIGINT UNSIGNED NOT NULL PRIMARY KEY, "
    "created_at TIMESTAMP(6) NOT NULL, function VARBINARY(512) NOT NULL, "
    "unique_key VARBINARY(64) NULL, workload LONGBLOB NOT NULL, "
    "priority ENUM('high','normal','low') NOT NULL DEFAULT 'normal', "
    "reason VARCHAR(1000) CHARACTER SET utf8mb4 NOT NULL, "
    "dead_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB"
)


def eventually(check: Any, timeout: float = WAIT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(0.02)


class Recorder:
    """A real worker in a thread that records (function, unique, data) of every job."""

    def __init__(
        self,
        server: ServerProcess,
        functions: tuple[str, ...] = ("record", EVIL),
        concurrency: int = 16,
    ) -> None:
        self.worker = Worker(f"{server.host}:{server.port}", concurrency=concurrency)
        self.seen: list[tuple[bytes, bytes, bytes]] = []
        self.lock = threading.Lock()
        for name in functions:
            self.worker.register(name, self.record)
        self.thread = threading.Thread(
            target=self.worker.run_forever, kwargs={"handle_signals": False}, daemon=True
        )
        self.thread.start()

    async def record(self, job: WorkerJob) -> bytes:
        # A coroutine runs on the worker's loop: no hop to a thread per job, so 100k jobs
        # take seconds, not a minute.
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


def queued(server: ServerProcess, function: str = "record") -> int:
    """Jobs of ``function`` the server holds (its `status` line), 0 when it has none."""
    with Peer(server.address) as peer:
        for line in peer.admin("status").decode().splitlines():
            parts = line.split("\t")
            if parts[0] == function:
                return int(parts[1])
    return 0


# -- databases ---------------------------------------------------------------------------------


class Database:
    """One database with an outbox. ``enqueue`` does what ``gman_do*_background`` does in the
    transactional mode (in PostgreSQL and SQLite it calls the function itself)."""

    kind = ""
    dsn = ""
    table = "gman_outbox"
    dead_table = "gman_outbox_dead"

    def connect(self) -> Any:
        raise NotImplementedError

    def execute(self, conn: Any, sql: str, args: tuple[Any, ...] = ()) -> None:
        cursor = conn.cursor()
        cursor.execute(sql, args)
        cursor.close()

    def begin(self, conn: Any) -> None:
        """Begin a transaction that will write to the outbox."""
        self.execute(conn, "BEGIN")

    def enqueue(
        self,
        conn: Any,
        function: str | bytes,
        workload: str | bytes,
        unique: str | None = None,
        priority: str = "normal",
    ) -> None:
        raise NotImplementedError

    def bulk(self, conn: Any, rows: int) -> None:
        """One transaction that enqueues ``record`` jobs with workloads bulk-1..bulk-N."""
        raise NotImplementedError

    def outbox(self) -> int:
        conn = self.connect()
        try:
            cursor = conn.cursor()
            cursor.execute(f"SELECT count(*) FROM {self.table}")
            count = int(cursor.fetchone()[0])
            cursor.close()
            return count
        finally:
            conn.close()

    def clear(self) -> None:
        conn = self.connect()
        try:
            self.execute(conn, f"DELETE FROM {self.table}")
            if self.has_dead(conn):
                self.execute(conn, f"DELETE FROM {self.dead_table}")
        finally:
            conn.close()

    def has_dead(self, conn: Any) -> bool:
        return True

    def dead(self) -> list[tuple[int, bytes, str]]:
        """(id, function, reason) of every dead letter."""
        conn = self.connect()
        try:
            cursor = conn.cursor()
            cursor.execute(f"SELECT id, function, reason FROM {self.dead_table} ORDER BY id")
            rows = [(int(i), bytes(f), str(r)) for i, f, r in cursor.fetchall()]
            cursor.close()
            return rows
        finally:
            conn.close()

    def refuse_deletes(self, conn: Any) -> None:
        """A trigger that makes every DELETE of the outbox fail, as a relay's connection dying
        between its submissions and its DELETE would."""
        raise NotImplementedError

    def allow_deletes(self, conn: Any) -> None:
        raise NotImplementedError


def _suffix(function: str, priority: str) -> str:
    return function + ("" if priority == "normal" else "_" + priority) + "_background"


class Postgres(Database):
    kind = "postgres"
    table = "gearsql.gman_outbox"
    dead_table = "gearsql.gman_outbox_dead"

    def __init__(self, dsn: str) -> None:
        from gearsql.bridges.postgres import install

        self.dsn = dsn
        install(dsn, "gearsql")

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True)

    def enqueue(
        self,
        conn: Any,
        function: str | bytes,
        workload: str | bytes,
        unique: str | None = None,
        priority: str = "normal",
    ) -> None:
        name = _suffix("gman_do", priority)
        args = (function, workload) if unique is None else (function, workload, unique)
        marks = ", ".join(["%s"] * len(args))
        assert (
            conn.execute(f"SELECT gearsql.{name}({marks})", args)
            .fetchone()[0]
            .startswith("outbox:")
        )

    def bulk(self, conn: Any, rows: int) -> None:
        with conn.transaction():
            conn.execute(
                "SELECT count(gearsql.gman_do_background('record', 'bulk-' || i)) "
                "FROM generate_series(1, %s) AS i",
                (rows,),
            )

    def refuse_deletes(self, conn: Any) -> None:
        conn.execute(
            "CREATE OR REPLACE FUNCTION gearsql.no_delete() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'deletes refused'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER no_delete BEFORE DELETE ON gearsql.gman_outbox "
            "FOR EACH ROW EXECUTE FUNCTION gearsql.no_delete()"
        )

    def allow_deletes(self, conn: Any) -> None:
        conn.execute("DROP TRIGGER no_delete ON gearsql.gman_outbox")


class SQLite(Database):
    kind = "sqlite"

    def has_dead(self, conn: Any) -> bool:
        return (
            conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'gman_outbox_dead'").fetchone()
            is not None
        )

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dsn = f"sqlite:///{path}"
        conn = self.connect()
        conn.execute("CREATE TABLE IF NOT EXISTS canary (x)")
        self.enqueue(conn, "record", "creates the outbox")  # as the first call would
        conn.execute("DELETE FROM gman_outbox")
        conn.close()

    def connect(self) -> Any:
        import gearsql.sqlite

        # timeout= is the gman_* functions' setting; SQLite's own wait for a lock is the pragma.
        conn = gearsql.sqlite.connect(str(self.path), None, isolation_level=None, timeout=WAIT)
        conn.execute(f"PRAGMA busy_timeout = {int(WAIT * 1000)}")
        return conn

    def begin(self, conn: Any) -> None:
        """Take the write lock first, as an application should: SQLite waits for the relay's
        (held while it submits a batch) only in a transaction that has not read yet, and a
        gman_* call reads before it writes its outbox row (gearsql/sqlite.py)."""
        conn.execute("BEGIN IMMEDIATE")

    def enqueue(
        self,
        conn: Any,
        function: str | bytes,
        workload: str | bytes,
        unique: str | None = None,
        priority: str = "normal",
    ) -> None:
        name = _suffix("gman_do", priority)
        args = (function, workload) if unique is None else (function, workload, unique)
        marks = ", ".join(["?"] * len(args))
        own = not conn.in_transaction  # outside one: a transaction of its own, as begin() makes
        if own:
            self.begin(conn)
        try:
            reply = conn.execute(f"SELECT {name}({marks})", args).fetchone()[0]
        except BaseException:
            if own:
                conn.execute("ROLLBACK")
            raise
        if own:
            conn.execute("COMMIT")
        assert reply.startswith("outbox:")

    def bulk(self, conn: Any, rows: int) -> None:
        self.begin(conn)
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "SELECT count(gman_do_background('record', 'bulk-' || i)) FROM n",
            (rows,),
        )
        conn.execute("COMMIT")

    def refuse_deletes(self, conn: Any) -> None:
        conn.execute(
            "CREATE TRIGGER no_delete BEFORE DELETE ON gman_outbox "
            "BEGIN SELECT RAISE(ABORT, 'deletes refused'); END"
        )

    def allow_deletes(self, conn: Any) -> None:
        conn.execute("DROP TRIGGER no_delete")


class MariaDB(Database):
    kind = "mariadb"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        conn = self.connect()
        try:
            self.execute(conn, "DROP TABLE IF EXISTS gman_outbox")
            self.execute(conn, "DROP TABLE IF EXISTS gman_outbox_dead")
            self.execute(conn, MYSQL_OUTBOX)
            self.execute(conn, MYSQL_OUTBOX_DEAD)
        finally:
            conn.close()

    def connect(self) -> Any:
        import mysql.connector
        from databases import mysql_connect_args

        return mysql.connector.connect(**mysql_connect_args(self.dsn), autocommit=True)

    def enqueue(
        self,
        conn: Any,
        function: str | bytes,
        workload: str | bytes,
        unique: str | None = None,
        priority: str = "normal",
    ) -> None:
        self.execute(
            conn,
            "INSERT INTO gman_outbox (function, unique_key, workload, priority) "
            "VALUES (%s, %s, %s, %s)",
            (function, unique, workload, priority),
        )

    def bulk(self, conn: Any, rows: int) -> None:
        self.execute(conn, "START TRANSACTION")
        self.execute(
            conn,
            "INSERT INTO gman_outbox (function, workload) "
            f"SELECT 'record', CONCAT('bulk-', seq) FROM seq_1_to_{int(rows)}",
        )
        self.execute(conn, "COMMIT")

    def refuse_deletes(self, conn: Any) -> None:
        self.execute(
            conn,
            "CREATE TRIGGER no_delete BEFORE DELETE ON gman_outbox FOR EACH ROW "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'deletes refused'",
        )

    def allow_deletes(self, conn: Any) -> None:
        self.execute(conn, "DROP TRIGGER no_delete")


# -- the relay as a process ----------------------------------------------------------------------


#: The databases a relay test runs against, as fixture parameters.
DATABASE_PARAMS = [
    pytest.param("postgres", marks=pytest.mark.pg),
    pytest.param("sqlite"),
    pytest.param("mariadb", marks=pytest.mark.mysql),
]


@contextmanager
def open_database(kind: str, directory: Path) -> Iterator[Database]:
    """A fresh database of ``kind`` (a :data:`DATABASE_PARAMS` value) for one test module;
    SQLite's file goes in ``directory``."""
    if kind == "sqlite":
        yield SQLite(directory / "app.db")
        return
    from databases import mysql_database, postgres_database

    if kind == "postgres":
        pytest.importorskip("psycopg")
        with postgres_database() as dsn:
            yield Postgres(dsn)
    else:
        pytest.importorskip("mysql.connector")
        with mysql_database() as dsn:
            yield MariaDB(dsn)


class RelayProcess:
    """``gearsql relay -v`` as a child process with its log in a file."""

    def __init__(self, dsn: str, servers: str | None, log: Path, *args: str) -> None:
        """``servers`` None: no --servers (and no $GEARMAN_SERVERS), so the relay follows the
        database's servers setting."""
        self.log_path = log
        self.handle = open(log, "ab")
        given = [] if servers is None else ["--servers", servers]
        env = {name: value for name, value in os.environ.items() if name != "GEARMAN_SERVERS"}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gearsql",
                "relay",
                "--dsn",
                dsn,
                *given,
                "--poll-interval",
                "0.2",
                "-v",
                *args,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert time.monotonic() < deadline, f"{text!r} not in the relay's log:\n{self.log()}"
            assert self.proc.poll() is None, f"the relay exited:\n{self.log()}"
            time.sleep(0.02)

    def submitted(self) -> int:
        """Rows the relay said it submitted (its -v lines)."""
        total = 0
        for line in self.log().splitlines():
            if ": submitted " in line:
                total += int(line.split(": submitted ", 1)[1].split()[0])
        return total

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.handle.close()
        return code


#: Part of the line a relay logs once it has connected and started relaying (not of its
#: earlier notices, such as "relaying to ... as given" when --servers overrides the setting).
READY = "; unique prefix "


class Relays:
    """Starts relays; stops them at the end and checks they stopped cleanly; ``start`` waits
    for ``ready`` in the relay's log."""

    def __init__(self, server: ServerProcess, tmp_path: Path) -> None:
        self.server = server
        self.tmp_path = tmp_path
        self.started: list[RelayProcess] = []

    def start(
        self,
        db: Database,
        *args: str,
        server: ServerProcess | None = None,
        ready: str = READY,
    ) -> RelayProcess:
        target = server or self.server
        relay = RelayProcess(
            db.dsn,
            f"{target.host}:{target.port}",
            self.tmp_path / f"relay{len(self.started)}.log",
            *args,
        )
        self.started.append(relay)
        if ready:
            relay.wait_log(ready)
        return relay

    def stop_all(self) -> None:
        for relay in self.started:
            if relay.proc.returncode is not None:
                relay.handle.close()
                continue
            code = relay.stop()
            assert code == 0, f"relay exit {code}:\n{relay.log()}"


# -- copies of a database (docs/reliability.md case 52) ----------------------------------------


def enqueue_all(db: Database, *workloads: str) -> None:
    """One ``record`` job per workload, each in its own transaction."""
    conn = db.connect()
    try:
        for workload in workloads:
            db.enqueue(conn, "record", workload)
    finally:
        conn.close()


def relays_only_new_rows(db: Database, relays: Relays, server: ServerProcess) -> None:
    """After ``relay adopt --discard``: a relay started on ``db`` submits a row written now,
    and nothing of the discarded ones."""
    recorder = Recorder(server)
    try:
        relays.start(db)
        enqueue_all(db, "new")
        recorder.wait_seen(1)
        eventually(lambda: db.outbox() == 0, what="an empty outbox")
        assert recorder.data() == [b"new"]
    finally:
        recorder.stop()


def gearsql_command(*args: str) -> subprocess.CompletedProcess[str]:
    """``gearsql ARGS`` run to its end, with its output."""
    return subprocess.run(
        [sys.executable, "-m", "gearsql", *args], capture_output=True, text=True, timeout=60
    )


def start_refused(relays: Relays, db: Database) -> str:
    """Start a relay on ``db`` and return its output after it stopped with exit status 2."""
    relay = relays.start(db, ready="")
    code = relay.proc.wait(60)
    assert code == 2, relay.log()
    return relay.log()


# -- a private MariaDB with the binlog on ---------------------------------------------------------


@contextmanager
def private_mariadb(*server_args: str) -> Iterator[str]:
    """A MariaDB of its own in a temporary directory (the machine's server is never touched),
    with the binlog on in ROW format; yields ``mysql://root@127.0.0.1:PORT/app``."""
    install_db = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    daemon = shutil.which("mariadbd") or (
        "/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None
    )
    if install_db is None or daemon is None:
        message = "mariadbd / mariadb-install-db are not installed (Debian: mariadb-server)"
        if REQUIRE_TOOLS or os.environ.get("GEARSQL_TEST_REQUIRE_DB") == "1":
            pytest.fail(message + "; GEARSQL_TEST_REQUIRE_DB=1 forbids skipping")
        pytest.skip(message)
    pytest.importorskip("mysql.connector")
    pytest.importorskip("pymysqlreplication")
    with tempfile.TemporaryDirectory(prefix="gearsql-mariadb-") as tmp:
        data = Path(tmp) / "data"
        subprocess.run(
            [
                install_db,
                "--no-defaults",
                f"--datadir={data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        port = free_port()
        log = open(Path(tmp) / "error.log", "ab")
        proc = subprocess.Popen(
            [
                daemon,
                "--no-defaults",
                f"--datadir={data}",
                f"--socket={tmp}/sock",
                f"--port={port}",
                "--bind-address=127.0.0.1",
                f"--log-bin={tmp}/binlog",
                "--binlog-format=ROW",
                "--server-id=1",
                "--user=root",
                f"--pid-file={tmp}/pid",
                "--innodb-buffer-pool-size=64M",
                "--max-allowed-packet=64M",
                f"--log-error={tmp}/error.log",
                *server_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            import mysql.connector

            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, (Path(tmp) / "error.log").read_text()
                try:
                    conn = mysql.connector.connect(
                        host="127.0.0.1", port=port, user="root", autocommit=True
                    )
                    break
                except mysql.connector.Error:
                    assert time.monotonic() < deadline, "the private MariaDB did not start"
                    time.sleep(0.1)
            cursor = conn.cursor()
            cursor.execute("CREATE DATABASE app")
            cursor.close()
            conn.close()
            yield f"mysql://root@127.0.0.1:{port}/app"
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
