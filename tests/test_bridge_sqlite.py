"""The gman_* functions in SQLite (the same udf bodies through the plpy shim) and sqlite-utils."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ServerProcess, free_port
from test_bridge_postgres import Workers

import gearsql.sqlite as gsqlite


@pytest.fixture
def address(gearsql_server: ServerProcess) -> str:
    return f"{gearsql_server.host}:{gearsql_server.port}"


@pytest.fixture
def workers(gearsql_server: ServerProcess) -> Iterator[Workers]:
    workers = Workers(gearsql_server)
    yield workers
    workers.stop()


@pytest.fixture
def db(address: str) -> Iterator[gsqlite.Connection]:
    conn = gsqlite.connect(":memory:", address, background_mode="immediate", isolation_level=None)
    yield conn
    conn.close()


def one(conn: sqlite3.Connection, sql: str, params: tuple[object, ...] = ()) -> object:
    return conn.execute(sql, params).fetchone()[0]


@pytest.mark.parametrize("name", ["gman_do", "gman_do_high", "gman_do_low"])
def test_foreground_round_trip_in_each_priority(
    db: gsqlite.Connection, workers: Workers, name: str
) -> None:
    assert one(db, f"SELECT {name}('reverse', 'hello')") == "olleh"
    assert one(db, f"SELECT {name}('reverse', 'abc', 'my-unique')") == "cba"
    assert one(db, f"SELECT {name}('empty', 'x')") is None


@pytest.mark.parametrize(
    "name", ["gman_do_background", "gman_do_high_background", "gman_do_low_background"]
)
def test_background_job_runs_in_immediate_mode(
    db: gsqlite.Connection, workers: Workers, name: str
) -> None:
    handle = one(db, f"SELECT {name}('record', 'payload', 'u-1')")
    assert isinstance(handle, str) and handle.startswith("H:")
    assert workers.wait_seen(1) == [(b"record", b"u-1", b"payload")]


def test_binary_payloads_round_trip_byte_exact(db: gsqlite.Connection, workers: Workers) -> None:
    payload = bytes(range(256)) * 64 + b"\0\0end\0"
    assert one(db, "SELECT gman_do('echo', ?)", (payload,)) == payload
    one(db, "SELECT gman_do_background('record', ?)", (payload,))
    assert workers.wait_seen(1)[0][2] == payload


def test_gman_sum_runs_the_tasks_of_100_rows_concurrently(
    db: gsqlite.Connection, workers: Workers
) -> None:
    db.execute("CREATE TABLE n (x)")
    db.executemany("INSERT INTO n VALUES (?)", [(i,) for i in range(1, 101)])
    assert one(db, "SELECT gman_sum('together', x) FROM n") == sum(range(1, 101))
    assert workers.most_running == 100
    assert one(db, "SELECT gman_sum('together', x) FROM n WHERE x < 0") is None


def test_gman_map_runs_every_workload_at_once_and_keeps_their_order(
    db: gsqlite.Connection, workers: Workers
) -> None:
    # Each job waits until 4 run at the same time: the 4 calls ran concurrently, not in turn.
    result = one(db, "SELECT gman_map('meet4', json_array('a', 'b', 'c', 'd'))")
    assert json.loads(str(result)) == ["a", "b", "c", "d"]
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
    db.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"word-{i}") for i in range(60)])
    rows = db.execute(
        "SELECT key, value FROM json_each(gman_map('reverse',"
        " (SELECT json_group_array(x) FROM (SELECT x FROM t ORDER BY id))))"
    ).fetchall()
    assert rows == [(i, f"word-{i}"[::-1]) for i in range(60)]
    assert one(db, "SELECT gman_map('empty', json_array('x', 1))") == "[null, null]"
    assert one(db, "SELECT gman_map('reverse', json_array())") == "[]"
    assert one(db, "SELECT gman_map('echo', json_array(12, 'é'))") == '["12", "é"]'


@pytest.mark.parametrize(
    ("sql", "message", "sqlstate"),
    [
        ("SELECT gman_map('fail', json_array('x', 'y'))", "failed job", "GM003"),
        ("SELECT gman_map('boom', json_array('x'))", "raised an exception .*kaboom", "GM004"),
        ("SELECT gman_map('reverse', NULL)", "the workloads are NULL", "22023"),
        ("SELECT gman_map('reverse', 'x')", "not a JSON array", "22023"),
        ("SELECT gman_map('reverse', json_object('a', 1))", "not a JSON array", "22023"),
        ("SELECT gman_map('reverse', json_array('x', NULL))", "workload 2 is NULL", "22023"),
        ("SELECT gman_map('reverse', json('[[\"a\"]]'))", "workload 1 is not text", "22023"),
        ("SELECT gman_map('echo', json_array(char(255)))", "", ""),
    ],
)
def test_gman_map_errors(
    db: gsqlite.Connection, workers: Workers, sql: str, message: str, sqlstate: str
) -> None:
    if not message:  # not an error: a text workload comes back as it went
        assert json.loads(str(one(db, sql))) == ["\xff"]
        return
    with pytest.raises(gsqlite.GearmanSQLError, match=message) as caught:
        db.execute(sql)
    assert caught.value.sqlstate == sqlstate
    assert one(db, "SELECT gman_map('reverse', json_array('ok'))") == '["ko"]'


def test_gman_map_checks_max_workload_and_the_timeout(
    address: str, workers: Workers, gearsql_server: ServerProcess
) -> None:
    conn = gsqlite.connect(":memory:", address, max_workload=1000, timeout=0.5)
    try:
        with pytest.raises(gsqlite.GearmanSQLError, match=r"gman_map \(workload 2\)"):
            conn.execute("SELECT gman_map('reverse', json_array('x', printf('%.1001c', 'y')))")
        with pytest.raises(gsqlite.GearmanSQLError, match=r"no result within 0\.5 s") as caught:
            conn.execute("SELECT gman_map('nobody_works_this', json_array('x', 'y'))")
        assert caught.value.sqlstate == "GM002"
    finally:
        conn.close()


def test_job_status_is_json(db: gsqlite.Connection, address: str) -> None:
    handle = one(db, "SELECT gman_do_background('nobody_works_this', 'x')")
    status = json.loads(str(one(db, "SELECT gman_job_status(?)", (handle,))))
    assert status == {
        "known": True,
        "running": False,
        "numerator": 0,
        "denominator": 0,
        "state": "queued",
        "detail": address,
    }


@pytest.mark.parametrize(
    ("sql", "message", "sqlstate"),
    [
        ("SELECT gman_do(NULL, 'x')", "function name is NULL", "22023"),
        ("SELECT gman_do('', 'x')", "function name is empty", "22023"),
        (
            "SELECT gman_do('rev' || char(0) || 'erse', 'x')",
            "function name contains a NUL",
            "22023",
        ),
        ("SELECT gman_do('reverse', 'x', 'a' || char(0))", "unique id contains a NUL", "22023"),
        (
            "SELECT gman_do('reverse', 'x', printf('%.65c', 'u'))",
            "unique id is longer than 64",
            "22023",
        ),
        ("SELECT gman_do('reverse', NULL)", "workload is NULL", "22023"),
        ("SELECT gman_do('fail', 'x')", "failed job", "GM003"),
        ("SELECT gman_do('boom', 'x')", "raised an exception .*kaboom", "GM004"),
        ("SELECT gman_servers_set('169.254.169.254:80')", "is not allowed", "42501"),
        ("SELECT gman_sum('reverse', 'ab')", "not an integer", "22P02"),
    ],
)
def test_bad_input_is_a_sql_error(
    db: gsqlite.Connection, workers: Workers, sql: str, message: str, sqlstate: str
) -> None:
    with pytest.raises(gsqlite.GearmanSQLError, match=message) as caught:
        db.execute(sql).fetchall()
    assert caught.value.sqlstate == sqlstate
    assert str(caught.value).endswith(f"\nSQLSTATE: {sqlstate}")
    assert one(db, "SELECT gman_do('reverse', 'ok')") == "ko"


def test_a_plain_connection_keeps_the_message(address: str, workers: Workers) -> None:
    conn = sqlite3.connect(":memory:")
    gsqlite.register(conn, address)
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("SELECT gman_do('fail', 'x')")
    assert "failed job" in str(gsqlite.last_error(conn))
    conn.close()


def test_no_job_server_and_no_worker_are_errors(workers: Workers, address: str) -> None:
    dead = gsqlite.connect(":memory:", f"127.0.0.1:{free_port()}", background_mode="immediate")
    with pytest.raises(
        gsqlite.GearmanSQLError, match=r"(?s)cannot reach.*connection refused"
    ) as caught:
        dead.execute("SELECT gman_do_background('reverse', 'x')")
    assert caught.value.sqlstate == "GM001"
    slow = gsqlite.connect(":memory:", address, timeout=0.5)
    with pytest.raises(gsqlite.GearmanSQLError, match=r"no result within 0\.5 s") as caught:
        slow.execute("SELECT gman_do('nobody_works_this', 'x')")
    assert caught.value.sqlstate == "GM002"


def test_a_server_that_does_not_answer_within_connect_timeout_is_passed_over(
    workers: Workers, address: str
) -> None:
    """A job server whose accept queue is full (the connect times out) and one that accepts but
    never answers OPTION_REQ are each given up after ``connect_timeout``; the next one takes
    the job."""
    with socket.socket() as full, socket.socket() as silent:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        fillers = [socket.socket() for _ in range(3)]  # fill its accept queue
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(full.getsockname())
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        try:
            servers = [f"127.0.0.1:{sock.getsockname()[1]}" for sock in (full, silent)]
            alone = gsqlite.connect(
                ":memory:", servers[0], background_mode="immediate", connect_timeout=0.3
            )
            with pytest.raises(gsqlite.GearmanSQLError, match="connect timed out") as caught:
                alone.execute("SELECT gman_do_background('record', 'x')")
            assert caught.value.sqlstate == "GM001"
            db = gsqlite.connect(
                ":memory:",
                ",".join([*servers, address]),
                background_mode="immediate",
                connect_timeout=0.3,
                timeout=5,
            )
            assert str(one(db, "SELECT gman_do_background('record', 'y')")).startswith("H:")
            assert workers.wait_seen(1) == [(b"record", b"", b"y")]
        finally:
            for filler in fillers:
                filler.close()


def test_job_server_restart_between_two_calls(
    db: gsqlite.Connection, gearsql_server: ServerProcess, workers: Workers
) -> None:
    assert one(db, "SELECT gman_do('reverse', 'before')") == "erofeb"
    workers.stop()
    gearsql_server.stop()
    gearsql_server.start()
    again = Workers(gearsql_server)
    try:
        assert one(db, "SELECT gman_do('reverse', 'after')") == "retfa"
    finally:
        again.stop()


def test_interrupt_stops_a_waiting_gman_do(db: gsqlite.Connection, address: str) -> None:
    timer = threading.Timer(0.5, db.interrupt)
    timer.start()
    with pytest.raises(sqlite3.OperationalError, match="interrupt"):
        db.execute("SELECT gman_do('nobody_works_this', 'x')")  # timeout: 60 s
    timer.join()


def test_sql_injection_does_nothing_and_transactional_mode_follows_the_transaction(
    address: str, workers: Workers
) -> None:
    conn = gsqlite.connect(":memory:", address, isolation_level=None)  # transactional default
    conn.execute("CREATE TABLE canary (x)")
    evil = "x'); DROP TABLE canary;--"
    conn.execute("BEGIN")
    assert one(conn, "SELECT gman_do_background(?, ?, ?)", (evil, evil, "'--")) == "outbox:1"
    conn.execute("ROLLBACK")
    conn.execute(
        "CREATE TRIGGER t AFTER INSERT ON canary BEGIN "
        "SELECT gman_do_background('x' || char(39), NEW.x, 'x' || char(39)); END"
    )
    conn.execute("BEGIN")
    conn.execute("INSERT INTO canary VALUES (?)", (evil,))
    conn.execute("COMMIT")
    rows = conn.execute("SELECT function, unique_key, workload FROM gman_outbox").fetchall()
    assert rows == [(b"x'", b"x'", evil.encode())]
    assert one(conn, "SELECT count(*) FROM canary") == 1
    immediate = gsqlite.connect(":memory:", address, background_mode="immediate")
    one(immediate, "SELECT gman_do_background(?, ?, ?)", (evil, evil, "'; DROP TABLE x;--"))
    assert workers.wait_seen(1) == [(evil.encode(), b"'; DROP TABLE x;--", evil.encode())]


def sqlite_utils(db: Path, sql: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sqlite_utils", "query", str(db), sql]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def test_sqlite_utils_cli_has_the_functions(tmp_path: Path, address: str, workers: Workers) -> None:
    pytest.importorskip("sqlite_utils")
    env = {**os.environ, "GEARSQL_SERVERS": address, "GEARSQL_BACKGROUND_MODE": "immediate"}
    db = tmp_path / "app.db"
    done = sqlite_utils(
        db, "SELECT gman_do('reverse', 'hello') AS r, gman_do_background('record', 'cli') AS h", env
    )
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)[0]
    assert row["r"] == "olleh" and row["h"].startswith("H:")
    assert workers.wait_seen(1) == [(b"record", b"", b"cli")]
    failed = sqlite_utils(db, "SELECT gman_do('boom', 'x')", env)
    assert failed.returncode != 0
    assert "kaboom" in failed.stderr
    refused = sqlite_utils(db, "SELECT gman_servers_set('10.1.2.3:4730')", env)
    assert refused.returncode != 0 and "not allowed" in refused.stderr


def test_a_workload_above_max_workload_is_an_error_and_rolls_nothing_in(address: str) -> None:
    conn = gsqlite.connect(":memory:", address, max_workload=1000, isolation_level=None)
    try:
        conn.execute("BEGIN")
        one(conn, "SELECT gman_do_background('record', ?)", ("x" * 1000,))
        with pytest.raises(
            gsqlite.GearmanSQLError,
            match=r"gman_do_background: the workload is 2000 bytes, more than "
            r"the max_workload setting \(1000 bytes\)",
        ):
            one(conn, "SELECT gman_do_background('record', ?)", (b"x" * 2000,))
        conn.execute("ROLLBACK")
        assert one(conn, "SELECT count(*) FROM gman_outbox") == 0
    finally:
        conn.close()
    with pytest.raises(ValueError, match="max_workload"):
        gsqlite.connect(":memory:", address, max_workload=-1)


def test_job_status_and_pipeline_of_outbox_rows(address: str, tmp_path: Path) -> None:
    conn = gsqlite.connect(str(tmp_path / "app.db"), address, isolation_level=None)
    try:
        pending = str(one(conn, "SELECT gman_do_background('record', 'waits')"))
        dead = str(one(conn, "SELECT gman_do_background('bigjob', 'refused')"))
        dead_id = int(dead.split(":")[1])
        # What the relay does with a row no job server takes (tests/test_relay_dead_letters.py).
        conn.execute(
            "INSERT INTO gman_outbox_dead (id, created_at, function, workload, "
            "priority, reason) SELECT id, created_at, function, workload, priority, "
            "'the job server refused it' FROM gman_outbox WHERE id = ?",
            (dead_id,),
        )
        conn.execute("DELETE FROM gman_outbox WHERE id = ?", (dead_id,))
        status = json.loads(str(one(conn, "SELECT gman_job_status(?)", (pending,))))
        assert status["state"] == "pending" and status["known"] is True
        status = json.loads(str(one(conn, "SELECT gman_job_status(?)", (dead,))))
        assert status["state"] == "dead"
        assert status["detail"].startswith("the job server refused it (moved to")
        status = json.loads(str(one(conn, "SELECT gman_job_status('outbox:12345')")))
        assert status["state"] == "submitted"
        backlog, age, dead_count, _, reasons, contact = conn.execute(
            "SELECT * FROM gman_pipeline"
        ).fetchone()
        assert (backlog, dead_count, reasons) == (1, 1, f"{dead_id}: the job server refused it")
        assert contact is None  # no relay yet
        assert age >= 0
    finally:
        conn.close()


def test_a_pipeline_view_of_an_older_version_gets_the_last_relay_contact(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(gsqlite.load_library().SQLITE_DEAD_TABLE)
    conn.execute("CREATE TABLE gman_outbox (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL)")
    conn.execute(
        "CREATE VIEW gman_pipeline AS SELECT (SELECT count(*) FROM gman_outbox) AS backlog"
    )
    gsqlite.create_pipeline_view(conn)
    gsqlite.create_pipeline_view(conn)  # again: kept as it is
    columns = [d[0] for d in conn.execute("SELECT * FROM gman_pipeline").description]
    assert columns[0] == "backlog" and columns[-1] == "last_relay_contact"  # the new view
    conn.execute(
        "INSERT INTO gman_relay_contact VALUES ('h:1', '2026-01-01T00:00:00.000Z', 's:4730'),"
        " ('h:2', '2026-01-02T00:00:00.000Z', 's:4730')"
    )
    assert one(conn, "SELECT last_relay_contact FROM gman_pipeline") == "2026-01-02T00:00:00.000Z"
    conn.close()


def test_the_sql_functions_defaults_are_gearsqls_own() -> None:
    """udf/gman.py runs inside the database, where gearsql is not installed, so it spells the
    settings' defaults again: they must stay those of gearsql/_sqlcommon.py."""
    from gearsql._sqlcommon import BACKGROUND_MODES, SETTING_DEFAULTS
    from gearsql.bridges import load_library

    gman = load_library()
    assert gman.DEFAULTS == SETTING_DEFAULTS
    assert tuple(gman.BACKGROUND_MODES) == BACKGROUND_MODES


@pytest.fixture
def second_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess("gearsql", tmp_path / "second.log", ["--store", "memory"]).start()
    try:
        yield server
    finally:
        server.stop()


def test_servers_set_per_function_in_the_file_routes_direct_calls_and_the_relay(
    gearsql_server: ServerProcess, second_server: ServerProcess, tmp_path: Path
) -> None:
    """gman_servers_set(servers, function) writes gman_function_servers in the database file:
    every connection's direct calls of the function go there (others to the connection's
    servers), and so do the relay's submissions of its outbox rows."""
    from relaying import RelayProcess, eventually, queued

    from gearsql import Worker

    first = f"{gearsql_server.host}:{gearsql_server.port}"
    second = f"{second_server.host}:{second_server.port}"
    path = str(tmp_path / "app.db")
    direct = gsqlite.connect(
        path, f"{first},{second}", background_mode="immediate", timeout=10, isolation_level=None
    )
    worker = Worker(second)  # fs_sum's only worker is on server 2
    worker.register("fs_sum", lambda job: job.data)
    thread = threading.Thread(
        target=worker.run_forever, kwargs={"handle_signals": False}, daemon=True
    )
    thread.start()
    workers = Workers(gearsql_server)  # 'echo' on server 1
    try:
        assert one(direct, "SELECT gman_servers_set(?)", (first,)) == 1  # this connection's
        assert one(direct, "SELECT gman_servers_set(?, 'fs_a')", (second,)) == second
        assert one(direct, "SELECT gman_servers_set(?, 'fs_sum')", (second,)) == second
        for function in ("fs_a", "fs_b"):
            one(direct, "SELECT gman_do_background(?, 'x')", (function,))
        assert (queued(second_server, "fs_a"), queued(gearsql_server, "fs_b")) == (1, 1)
        # One aggregate over two functions routed apart: each group on its servers.
        total = one(
            direct,
            "SELECT gman_sum(f, w) FROM (SELECT 'fs_sum' AS f, '5' AS w "
            "UNION ALL SELECT 'echo', '7' UNION ALL SELECT 'fs_sum', '11')",
        )
        assert total == 23
        with pytest.raises(gsqlite.GearmanSQLError, match="is not allowed") as caught:
            direct.execute("SELECT gman_servers_set('127.0.0.1:1', 'fs_a')")
        assert caught.value.sqlstate == "42501"

        # The relay (told both servers) follows the file's choice for the outbox rows.
        outbox = gsqlite.connect(path, f"{first},{second}", isolation_level=None)
        for number in range(10):
            for function in ("fs_a", "fs_b"):
                one(outbox, "SELECT gman_do_background(?, ?)", (function, f"row{number}"))
        outbox.close()
        relay = RelayProcess(f"sqlite:///{path}", f"{first},{second}", tmp_path / "relay.log")
        try:
            relay.wait_log(f"jobs of function 'fs_a' go to {second}")
            eventually(lambda: queued(second_server, "fs_a") == 11, what="fs_a on server 2")
            eventually(
                lambda: queued(gearsql_server, "fs_b") + queued(second_server, "fs_b") == 11,
                what="fs_b relayed",
            )
            assert queued(gearsql_server, "fs_a") == 0
        finally:
            assert relay.stop() == 0, relay.log()

        assert one(direct, "SELECT gman_servers_set(NULL, 'fs_a')") is None
        one(direct, "SELECT gman_do_background('fs_a', 'y')")
        assert queued(gearsql_server, "fs_a") == 1
    finally:
        direct.close()
        workers.stop()
        worker.stop()
        thread.join(10)


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_a_call_that_cannot_wait_for_the_write_lock_says_so_and_begin_immediate_waits(
    tmp_path: Path, journal: str
) -> None:
    """SQLite waits for another connection's write lock only in a transaction that has not read
    yet: after a deferred BEGIN the outbox INSERT inside the call fails at once, with the hint;
    with BEGIN IMMEDIATE the caller waits for the lock and the call goes through."""
    path = str(tmp_path / "app.db")
    conn = gsqlite.connect(path, "127.0.0.1:1", isolation_level=None)  # transactional mode
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA journal_mode = {journal}")
        conn.execute("PRAGMA busy_timeout = 60000")
        # Not the connection's first call: that one runs the CREATE TABLE of the outbox as
        # register() prepared it (for a file without the table: a write), which does wait.
        assert one(conn, "SELECT gman_do_background('record', 'first')") == "outbox:1"
        holder.execute("BEGIN IMMEDIATE")  # as the relay's claim, or any writer, holds it
        conn.execute("BEGIN")
        # Had the call waited for the lock, it would get it and succeed: no error.
        late = threading.Timer(5, holder.commit)
        late.start()
        with pytest.raises(gsqlite.GearmanSQLError) as failed:
            conn.execute("SELECT gman_do_background('record', 'after a read')")
        late.cancel()
        assert holder.in_transaction, "the call waited for the lock"
        assert str(failed.value) == f"database is locked\nHINT: {gsqlite.LOCKED_HINT}"
        assert "BEGIN IMMEDIATE" in gsqlite.LOCKED_HINT
        conn.execute("ROLLBACK")

        release = threading.Timer(0.2, holder.commit)
        release.start()
        conn.execute("BEGIN IMMEDIATE")  # waits for the holder's commit
        assert one(conn, "SELECT gman_do_background('record', 'immediate')") == "outbox:2"
        conn.execute("COMMIT")
        release.join()
        assert not holder.in_transaction
        rows = holder.execute("SELECT workload FROM gman_outbox ORDER BY id").fetchall()
        assert rows == [(b"first",), (b"immediate",)]
    finally:
        holder.close()
        conn.close()


def test_close_rolls_back_so_a_failed_statement_kept_alive_holds_no_lock(tmp_path: Path) -> None:
    """A cursor kept alive after its statement failed (by the traceback pytest or a logger
    keeps) makes sqlite3's close() leave a zombie connection with its transaction open; in a
    rollback-journal file its read lock keeps every writer from committing. Connection.close
    rolls back first."""
    path = str(tmp_path / "app.db")
    conn = gsqlite.connect(path, "127.0.0.1:1", isolation_level=None)
    writer = sqlite3.connect(path, isolation_level=None, timeout=2)
    try:
        one(conn, "SELECT gman_do_background('record', 'first')")  # see the test above
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM gman_outbox")
        conn.execute("BEGIN")
        with pytest.raises(gsqlite.GearmanSQLError) as failed:  # keeps the traceback
            conn.execute("SELECT gman_do_background('record', 'x')")
        conn.close()
        writer.execute("COMMIT")  # "database is locked" after 2 s behind a zombie
        assert failed.value.__traceback__ is not None
    finally:
        writer.close()
        conn.close()
