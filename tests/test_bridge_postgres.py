"""The gman_* functions in a real PostgreSQL (PL/Python) against a real job server and workers."""

from __future__ import annotations

import importlib.util
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerProcess

from gearsql import Worker, WorkerJob

ROOT = Path(__file__).resolve().parent.parent


def test_generated_install_files_are_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("sql_generate", ROOT / "sql" / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    assert generate.stale() == [], "run `python sql/generate.py`"


def test_install_sql_refuses_names_that_are_not_identifiers() -> None:
    from gearsql.bridges.postgres import install_sql

    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        install_sql('x"; DROP TABLE t; --')
    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        install_sql("gearsql", role="a b")
    with pytest.raises(ValueError, match="bad job server address"):
        install_sql("gearsql", servers="host:notaport")


def test_install_and_relay_take_the_same_schema_names() -> None:
    """One rule for SQL names: a schema the install accepts, the relay and its status accept."""
    from gearsql.bridges.postgres import install_sql
    from gearsql.relay._postgres import PostgresSource
    from gearsql.relay.status import pipeline_status

    for name in ("app$q", "_x1", "a" * 63):
        install_sql(name)
        assert PostgresSource("postgresql://127.0.0.1/x", schema=name).schema == name
    for name in ("1abc", "a b", "a" * 64, 'x"y', "$x"):
        with pytest.raises(ValueError, match="not a plain SQL identifier"):
            install_sql(name)
        with pytest.raises(ValueError, match="not a plain SQL identifier"):
            PostgresSource("postgresql://127.0.0.1/x", schema=name)
        with pytest.raises(ValueError, match="not a plain SQL identifier"):
            pipeline_status("postgresql://127.0.0.1/x", name)


class Workers:
    """A real gearsql Worker in a thread, serving the functions the tests call."""

    def __init__(self, server: ServerProcess, concurrency: int = 100) -> None:
        self.worker = Worker(f"{server.host}:{server.port}", concurrency=concurrency)
        self.seen: list[tuple[bytes, bytes, bytes]] = []
        self.ran = threading.Event()
        self.barrier = threading.Barrier(100, timeout=20)
        self.meeting = threading.Barrier(4, timeout=20)
        self.lock = threading.Lock()
        self.running = 0
        self.most_running = 0
        for name, handler in {
            "reverse": lambda job: job.data[::-1],
            "echo": lambda job: job.data,
            "empty": lambda job: None,
            "fail": lambda job: job.fail(),
            "boom": self.boom,
            "record": self.record,
            "together": self.together,
            "meet4": self.meet4,
            "x'); DROP TABLE canary;--": self.record,
        }.items():
            self.worker.register(name, handler)
        self.thread = threading.Thread(
            target=self.worker.run_forever, kwargs={"handle_signals": False}, daemon=True
        )
        self.thread.start()

    @staticmethod
    def boom(job: WorkerJob) -> bytes:
        raise RuntimeError("kaboom")

    def record(self, job: WorkerJob) -> bytes:
        with self.lock:
            self.seen.append((job.function, job.unique, job.data))
        self.ran.set()
        return b"ok"

    def together(self, job: WorkerJob) -> bytes:
        """Returns its number only once 100 of these run at the same time (else it raises)."""
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            self.barrier.wait()
        finally:
            with self.lock:
                self.running -= 1
        return job.data

    def meet4(self, job: WorkerJob) -> bytes:
        """Returns its workload once 4 of these run at the same time (else it raises)."""
        self.meeting.wait()
        return job.data

    def wait_seen(self, count: int = 1, timeout: float = 10) -> list[tuple[bytes, bytes, bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.seen) >= count:
                    return list(self.seen)
            time.sleep(0.02)
        raise AssertionError(f"workers saw {self.seen!r}, expected {count} jobs")

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(10)


@pytest.fixture(scope="module")
def installed(pg_dsn: str) -> Iterator[dict[str, str]]:
    psycopg = pytest.importorskip("psycopg")
    from gearsql.bridges.postgres import install, uninstall

    suffix = secrets.token_hex(4)
    schema, role = f"gearsql_bridge_{suffix}", f"gearsql_caller_{suffix}"
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" NOLOGIN')
        try:
            install(pg_dsn, schema, role=role, background_mode="immediate")
            yield {"schema": schema, "role": role}
        finally:
            uninstall(pg_dsn, schema, force=True)
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            admin.execute(f'DROP OWNED BY "{role}"')
            admin.execute(f'DROP ROLE "{role}"')


@pytest.fixture
def admin(pg_dsn: str) -> Iterator[Any]:
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def configure(admin: Any, installed: dict[str, str]) -> Any:
    schema = installed["schema"]

    def set_(name: str, value: str) -> None:
        admin.execute(
            f'UPDATE "{schema}".gman_settings SET value = %s WHERE name = %s', (value, name)
        )

    yield set_
    set_("background_mode", "immediate")
    set_("timeout", "60")
    set_("max_workload", "67107840")


@pytest.fixture
def server(gearsql_server: ServerProcess, configure: Any) -> ServerProcess:
    configure("servers", f"{gearsql_server.host}:{gearsql_server.port}")
    return gearsql_server


@pytest.fixture
def workers(server: ServerProcess) -> Iterator[Workers]:
    workers = Workers(server)
    yield workers
    workers.stop()


class Session:
    """A connection of the unprivileged role that was granted the functions."""

    def __init__(self, dsn: str, installed: dict[str, str]) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute(f'SET ROLE "{installed["role"]}"')
        self.conn.execute(f'SET search_path = "{installed["schema"]}"')
        self.pid = self.conn.execute("SELECT pg_backend_pid()").fetchone()[0]

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.conn.execute(sql, params).fetchone()[0]


@pytest.fixture
def db(pg_dsn: str, installed: dict[str, str]) -> Iterator[Session]:
    session = Session(pg_dsn, installed)
    yield session
    session.conn.close()


pytestmark = pytest.mark.pg


@pytest.mark.parametrize("name", ["gman_do", "gman_do_high", "gman_do_low"])
def test_foreground_round_trip_in_each_priority(db: Session, workers: Workers, name: str) -> None:
    assert db.one(f"SELECT {name}('reverse', 'hello')") == "olleh"
    assert db.one(f"SELECT {name}('reverse', 'abc', 'my-unique')") == "cba"
    assert db.one(f"SELECT {name}('empty', 'x')") is None


@pytest.mark.parametrize(
    "name", ["gman_do_background", "gman_do_high_background", "gman_do_low_background"]
)
def test_background_job_runs_in_immediate_mode(db: Session, workers: Workers, name: str) -> None:
    handle = db.one(f"SELECT {name}('record', 'payload', 'u-1')")
    assert handle.startswith("H:")
    assert workers.wait_seen(1) == [(b"record", b"u-1", b"payload")]
    status = db.conn.execute("SELECT * FROM gman_job_status(%s)", (handle,)).fetchone()
    assert status[0] in (True, False)  # answered; the job may already be done


def test_binary_payloads_round_trip_byte_exact(db: Session, workers: Workers) -> None:
    payload = bytes(range(256)) * 64 + b"\0\0end\0"
    assert db.one("SELECT gman_do('echo', %s::bytea)", (payload,)) == payload
    db.one("SELECT gman_do_background('record', %s::bytea)", (payload,))
    assert workers.wait_seen(1)[0][2] == payload


def test_gman_sum_runs_the_tasks_of_100_rows_concurrently(db: Session, workers: Workers) -> None:
    total = db.one("SELECT gman_sum('together', n::text) FROM generate_series(1, 100) AS n")
    assert total == sum(range(1, 101))
    # Every task waited at a 100-party barrier: all 100 ran at once, not one after another.
    assert workers.most_running == 100
    assert db.one("SELECT gman_sum('together', 'x') FROM generate_series(1, 0)") is None


def test_the_install_stores_the_library_compiled_for_the_servers_python(
    admin: Any, installed: dict[str, str], workers: Workers, pg_dsn: str
) -> None:
    from gearsql.bridges import library_package

    schema = installed["schema"]
    rows = admin.execute(
        f'SELECT package, module, magic IS NOT NULL, code IS NOT NULL FROM "{schema}"._gman_library'
    ).fetchall()
    assert sorted((module, magic, code) for _, module, magic, code in rows) == [
        ("_clientconn", True, True),
        ("gman", True, True),
        ("loader", True, True),
        ("protocol", True, True),
    ]
    assert {package for package, *_ in rows} == {library_package()}
    # Stored uncompressed: every new backend reads them.
    storage = admin.execute(
        "SELECT attname, attstorage FROM pg_attribute WHERE attrelid = %s::regclass"
        " AND attname IN ('source', 'code') ORDER BY attname",
        (f'"{schema}"._gman_library',),
    ).fetchall()
    assert storage == [("code", "e"), ("source", "e")]
    # Without the compiled code (a new Python on the server), the sources are compiled; code of
    # the right magic that does not load makes the backend read the sources after all.
    for broken in (
        "magic = NULL, code = NULL",
        "code = 'not marshal data' WHERE module <> 'loader'",
    ):
        admin.execute(f'UPDATE "{schema}"._gman_library SET {broken}')
        try:
            fresh = Session(pg_dsn, installed)  # a new backend: it loads the library now
            try:
                assert fresh.one("SELECT gman_do('reverse', 'compiled')") == "delipmoc"
            finally:
                fresh.conn.close()
        finally:
            assert admin.execute(f'SELECT "{schema}"._gman_compile()').fetchone() == (4,)


#: What a backend's first calls may import besides the library itself: C modules (``struct`` too
#: is served by its C part, ``_struct``: udf/loader.py).
#: The first call of every new backend pays for each import (bench/README.md, "the first call
#: of a backend"): ``socket`` brings ``enum`` and ``selectors``, ``enum`` ``functools`` and
#: ``collections``, a str host name for getaddrinfo the ``idna`` codec and ``re``.
CHEAP_IMPORTS = {"_collections", "_socket", "_struct", "gc", "select", "zlib"}


def test_the_first_calls_of_a_backend_import_only_cheap_modules(
    pg_dsn: str, installed: dict[str, str], workers: Workers
) -> None:
    from gearsql.bridges import library_package

    fresh = Session(pg_dsn, installed)
    try:
        # The superuser who opened the connection notes the modules PL/Python started with.
        fresh.conn.execute("RESET ROLE")
        fresh.conn.execute(
            "DO $$ import sys; GD['test.modules'] = set(sys.modules) $$ LANGUAGE plpython3u"
        )
        fresh.conn.execute(
            "CREATE FUNCTION pg_temp.new_modules() RETURNS text[] LANGUAGE plpython3u AS "
            "$$ import sys; return sorted(set(sys.modules) - GD['test.modules']) $$"
        )
        fresh.conn.execute(f'SET ROLE "{installed["role"]}"')
        handle = fresh.one("SELECT gman_do_background('record', 'first')")
        assert fresh.one("SELECT gman_do('reverse', 'abc')") == "cba"
        assert fresh.one("SELECT known FROM gman_job_status(%s)", (handle,)) in (True, False)
        assert fresh.conn.execute("SELECT gman_map('reverse', ARRAY['x', 'yz'])").fetchall() == [
            ("x",),
            ("zy",),
        ]
        fresh.conn.execute("RESET ROLE")
        new = fresh.one("SELECT pg_temp.new_modules()")
    finally:
        fresh.conn.close()
    package = library_package()
    library = [name for name in new if name == package or name.startswith(package + ".")]
    assert len(library) == 4  # the package, protocol, _clientconn, gman
    costly = set(new) - set(library) - CHEAP_IMPORTS
    assert not costly, f"the first calls of a backend imported {sorted(costly)}"


def test_gman_map_runs_every_workload_at_once_and_keeps_their_order(
    db: Session, workers: Workers
) -> None:
    # Each job waits until 4 run at the same time: the 4 calls ran concurrently, not in turn.
    rows = db.conn.execute(
        "SELECT * FROM gman_map('meet4', ARRAY['a', 'b', 'c', 'd']) WITH ORDINALITY"
    ).fetchall()
    assert rows == [("a", 1), ("b", 2), ("c", 3), ("d", 4)]
    words = [f"word-{n}" for n in range(60)]
    assert [r[0] for r in db.conn.execute("SELECT gman_map('reverse', %s::text[])", (words,))] == [
        w[::-1] for w in words
    ]
    # Joined back to the rows it came from.
    rows = db.conn.execute(
        "WITH t(id, x) AS (VALUES (7, 'one'), (3, 'two'), (5, 'three')),"
        " a AS (SELECT array_agg(id ORDER BY id) AS ids, array_agg(x ORDER BY id) AS xs FROM t)"
        " SELECT i.id, r.result FROM a,"
        " unnest(a.ids) WITH ORDINALITY AS i(id, n)"
        " JOIN gman_map('reverse', a.xs) WITH ORDINALITY AS r(result, n) USING (n)"
    ).fetchall()
    assert rows == [(3, "owt"), (5, "eerht"), (7, "eno")]


def test_gman_map_text_bytea_empty_and_null(db: Session, workers: Workers) -> None:
    payloads = [bytes(range(256)), b"\0x\0", b"\xff"]
    rows = db.conn.execute("SELECT gman_map('echo', %s::bytea[])", (payloads,)).fetchall()
    assert [bytes(r[0]) for r in rows] == payloads
    assert db.conn.execute("SELECT gman_map('empty', ARRAY['x', 'y'])").fetchall() == [
        (None,),
        (None,),
    ]
    assert db.conn.execute("SELECT gman_map('reverse', ARRAY[]::text[])").fetchall() == []
    assert db.one("SELECT pg_typeof(gman_map('echo', ARRAY['x']))::text") == "text"
    assert db.one("SELECT pg_typeof(gman_map('echo', ARRAY['x'::bytea]))::text") == "bytea"


@pytest.mark.parametrize(
    ("sql", "message", "sqlstate"),
    [
        ("SELECT gman_map('fail', ARRAY['x', 'y'])", "failed job", "GM003"),
        ("SELECT gman_map('boom', ARRAY['x'])", "raised an exception .*kaboom", "GM004"),
        ("SELECT gman_map('reverse', NULL::text[])", "the workloads are NULL", "22023"),
        ("SELECT gman_map('reverse', ARRAY['x', NULL])", "workload 2 is NULL", "22023"),
        ("SELECT gman_map('reverse', ARRAY[['a'], ['b']])", "workload 1 is not text", "22023"),
        ("SELECT gman_map(NULL, ARRAY['x'])", "function name is NULL", "22023"),
        (
            "SELECT gman_map('reverse', ARRAY['x', repeat('y', 1001)])",
            r"gman_map \(workload 2\): the workload is 1001 bytes, more than the max_workload",
            "22023",
        ),
    ],
)
def test_gman_map_errors(
    db: Session, workers: Workers, configure: Any, sql: str, message: str, sqlstate: str
) -> None:
    import psycopg

    configure("max_workload", "1000")
    try:
        with pytest.raises(psycopg.Error, match=message) as caught:
            db.conn.execute(sql)
        assert caught.value.sqlstate == sqlstate
    finally:
        configure("max_workload", "67107840")
    assert db.conn.execute("SELECT gman_map('reverse', ARRAY['ok'])").fetchall() == [("ko",)]


def test_gman_map_timeout_bounds_the_whole_call(
    db: Session, server: ServerProcess, configure: Any
) -> None:
    configure("timeout", "0.5")
    assert _sqlstate_of(db, "SELECT gman_map('nobody_works_this', ARRAY['x', 'y'])") == "GM002"


def test_job_status_of_a_queued_job(db: Session, server: ServerProcess) -> None:
    handle = db.one("SELECT gman_do_background('nobody_works_this', 'x')")
    row = db.conn.execute("SELECT * FROM gman_job_status(%s)", (handle,)).fetchone()
    assert row == (True, False, 0, 0, "queued", f"{server.host}:{server.port}")
    row = db.conn.execute("SELECT * FROM gman_job_status('H:nowhere:1')").fetchone()
    assert row == (False, False, None, None, "unknown", None)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT gman_do(NULL, 'x')", "function name is NULL"),
        ("SELECT gman_do('', 'x')", "function name is empty"),
        ("SELECT gman_do(repeat('f', 513), 'x')", "longer than 512 bytes"),
        ("SELECT gman_do('reverse', NULL::text)", "workload is NULL"),
        ("SELECT gman_do('reverse', 'x', repeat('u', 65))", "unique id is longer than 64"),
        ("SELECT gman_do_background('reverse', 'x', repeat('u', 65))", "longer than 64"),
        ("SELECT gman_do('fail', 'x')", "failed job"),
        ("SELECT gman_do('boom', 'x')", "raised an exception .*kaboom"),
        ("SELECT gman_servers_set('169.254.169.254:80')", "is not allowed"),
        ("SELECT gman_sum('boom', 'x') FROM generate_series(1, 3)", "kaboom"),
        ("SELECT gman_sum('reverse', 'ab')", "not an integer"),
    ],
)
def test_bad_input_is_a_sql_error(db: Session, workers: Workers, sql: str, message: str) -> None:
    import psycopg

    with pytest.raises(psycopg.Error, match=message):
        db.conn.execute(sql)
    assert db.one("SELECT gman_do('reverse', 'ok')") == "ko"  # the session still works


def _sqlstate_of(db: Session, sql: str) -> str:
    """The SQLSTATE of the error ``sql`` raises, after checking that the error shows no Python
    internals (PL/Python's ``plpy.Error:`` prefix, a traceback in CONTEXT)."""
    import psycopg

    with pytest.raises(psycopg.Error) as caught:
        db.conn.execute(sql)
    diag = caught.value.diag
    assert not (diag.message_primary or "").startswith("plpy"), diag.message_primary
    assert "Traceback" not in (diag.context or "") and "PL/Python" not in (diag.context or "")
    assert caught.value.sqlstate is not None
    return caught.value.sqlstate


@pytest.mark.parametrize(
    ("sql", "sqlstate"),
    [
        ("SELECT gman_do('fail', 'x')", "GM003"),
        ("SELECT gman_do('boom', 'x')", "GM004"),
        ("SELECT gman_do('', 'x')", "22023"),
        ("SELECT gman_do_low(NULL, 'x', 'u')", "22023"),
        ("SELECT gman_do_background('reverse', 'x', repeat('u', 65))", "22023"),
        ("SELECT gman_servers_set('169.254.169.254:80')", "42501"),
        ("SELECT gman_sum('reverse', 'ab')", "22P02"),
    ],
)
def test_each_failure_has_its_sqlstate_and_no_python_internals(
    db: Session, workers: Workers, sql: str, sqlstate: str
) -> None:
    assert _sqlstate_of(db, sql) == sqlstate


def test_unreachable_timeout_and_bad_setting_have_their_sqlstates(
    db: Session, server: ServerProcess, configure: Any
) -> None:
    from conftest import free_port

    configure("timeout", "0.5")
    assert _sqlstate_of(db, "SELECT gman_do('nobody_works_this', 'x')") == "GM002"
    configure("background_mode", "bogus")
    assert _sqlstate_of(db, "SELECT gman_do_background('reverse', 'x')") == "GM006"
    configure("background_mode", "transactional")
    configure("max_workload", "lots")
    assert _sqlstate_of(db, "SELECT gman_do_background('reverse', 'x')") == "GM006"
    configure("max_workload", "67107840")
    configure("background_mode", "immediate")
    configure("servers", f"127.0.0.1:{free_port()}")
    assert _sqlstate_of(db, "SELECT gman_do('reverse', 'x')") == "GM001"
    assert _sqlstate_of(db, "SELECT gman_do_high_background('reverse', 'x')") == "GM001"


def test_a_background_call_gives_the_same_errors_in_both_modes(
    db: Session, configure: Any, server: ServerProcess
) -> None:
    """Immediate mode hands over to PL/Python before the PL/pgSQL checks: it says the same."""
    import psycopg

    calls = [
        "SELECT gman_do_background(NULL, 'x')",
        "SELECT gman_do_background('', 'x')",
        f"SELECT gman_do_background('{'f' * 513}', 'x')",
        "SELECT gman_do_background('f', 'x', repeat('u', 65))",
        "SELECT gman_do_background('f', NULL::text)",
    ]
    seen: dict[str, list[tuple[str | None, str | None, str | None]]] = {}
    for mode in ("transactional", "immediate"):
        configure("background_mode", mode)
        for max_workload, extra in (
            ("67107840", []),
            ("lots", ["SELECT gman_do_background('f', 'x')"]),
            (" 12 ", ["SELECT gman_do_background('f', repeat('y', 13))"]),
        ):
            configure("max_workload", max_workload)
            for sql in calls + extra:
                _sqlstate_of(db, sql)  # and no Python internals in the error
                with pytest.raises(psycopg.Error) as caught:
                    db.conn.execute(sql)
                diag = caught.value.diag
                seen.setdefault(mode, []).append(
                    (caught.value.sqlstate, diag.message_primary, diag.message_hint)
                )
    assert seen["immediate"] == seen["transactional"]
    assert ("GM006", "gearsql: bad setting: max_workload='lots'") in [
        entry[:2] for entry in seen["immediate"]
    ]
    assert (
        "22023",
        "gman_do_background: the workload is 13 bytes, more than the max_workload setting "
        "(12 bytes)",
    ) in [entry[:2] for entry in seen["immediate"]]


def test_nul_in_a_function_name_or_unique_is_an_error(db: Session, workers: Workers) -> None:
    import psycopg

    # PostgreSQL text cannot hold NUL at all: the call fails before it reaches the function.
    with pytest.raises(psycopg.Error):
        db.conn.execute("SELECT gman_do(E'rev\\000erse', 'x')")
    with pytest.raises(psycopg.Error):
        db.conn.execute("SELECT gman_do('reverse', 'x', %s)", ("a\0b",))


def test_no_job_server_is_an_error(db: Session, configure: Any) -> None:
    import psycopg
    from conftest import free_port

    configure("servers", f"127.0.0.1:{free_port()}")
    with pytest.raises(psycopg.Error, match=r"(?s)cannot reach a job server.*connection refused"):
        db.conn.execute("SELECT gman_do_background('reverse', 'x')")
    with pytest.raises(psycopg.Error, match="cannot reach a job server"):
        db.conn.execute("SELECT gman_do('reverse', 'x')")


def test_no_worker_times_out(db: Session, server: ServerProcess, configure: Any) -> None:
    import psycopg

    configure("timeout", "0.5")
    with pytest.raises(psycopg.Error, match=r"no result within 0\.5 s"):
        db.conn.execute("SELECT gman_do('nobody_works_this', 'x')")


def test_job_server_restart_between_two_calls(
    db: Session, server: ServerProcess, workers: Workers
) -> None:
    assert db.one("SELECT gman_do('reverse', 'before')") == "erofeb"
    workers.stop()
    server.stop()
    server.start()  # same port; the session's cached connection is now dead
    again = Workers(server)
    try:
        assert db.one("SELECT gman_do('reverse', 'after')") == "retfa"
        assert db.one("SELECT gman_do_background('record', 'bg')").startswith("H:")
    finally:
        again.stop()


def test_pg_cancel_backend_stops_a_waiting_gman_do(
    db: Session, admin: Any, server: ServerProcess
) -> None:
    import psycopg

    def cancel_when_waiting() -> None:
        for _ in range(200):
            row = admin.execute(
                "SELECT state, query FROM pg_stat_activity WHERE pid = %s", (db.pid,)
            ).fetchone()
            if row and row[0] == "active" and "nobody_works_this" in row[1]:
                time.sleep(0.3)
                admin.execute("SELECT pg_cancel_backend(%s)", (db.pid,))
                return
            time.sleep(0.05)

    canceller = threading.Thread(target=cancel_when_waiting)
    canceller.start()
    with pytest.raises(psycopg.errors.QueryCanceled):
        db.conn.execute("SELECT gman_do('nobody_works_this', 'x')")  # timeout setting: 60 s
    canceller.join()
    db.conn.execute("SET statement_timeout = '300ms'")
    with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
        db.conn.execute("SELECT gman_do('nobody_works_this', 'x')")
    db.conn.execute("SET statement_timeout = 0")


def test_sql_injection_through_every_argument_does_nothing(
    db: Session, admin: Any, workers: Workers, installed: dict[str, str], configure: Any
) -> None:
    schema = installed["schema"]
    admin.execute(f'CREATE TABLE "{schema}".canary (x int)')
    try:
        evil = "x'); DROP TABLE canary;--"
        db.one("SELECT gman_do_background(%s, %s, %s)", (evil, evil, "'; DROP TABLE canary;--"))
        seen = workers.wait_seen(1)
        assert seen == [(evil.encode(), b"'; DROP TABLE canary;--", evil.encode())]
        configure("background_mode", "transactional")
        db.one("SELECT gman_do_background(%s, %s, %s)", (evil, evil, "'); DROP TABLE canary;--"))
        row = admin.execute(
            f'SELECT function, unique_key, workload FROM "{schema}".gman_outbox'
        ).fetchone()
        assert (bytes(row[0]), bytes(row[1]), bytes(row[2])) == (
            evil.encode(),
            b"'); DROP TABLE canary;--",
            evil.encode(),
        )
        assert admin.execute(f'SELECT count(*) FROM "{schema}".canary').fetchone()[0] == 0
    finally:
        admin.execute(f'DROP TABLE "{schema}".canary')
        admin.execute(f'DELETE FROM "{schema}".gman_outbox')


def test_transactional_mode_writes_the_outbox_only_on_commit(
    db: Session, admin: Any, installed: dict[str, str], configure: Any, pg_dsn: str
) -> None:
    import psycopg

    schema = installed["schema"]
    configure("background_mode", "transactional")
    with psycopg.connect(pg_dsn, autocommit=True) as listener:
        listener.execute("LISTEN gearsql_outbox")
        with db.conn.transaction(force_rollback=True):
            assert db.one("SELECT gman_do_background('record', 'rolled back')").startswith(
                "outbox:"
            )
        with db.conn.transaction():
            db.one("SELECT gman_do_high_background('record', 'committed', 'u-7')")
        rows = admin.execute(
            f'SELECT workload, unique_key, priority FROM "{schema}".gman_outbox'
        ).fetchall()
        notes = list(listener.notifies(timeout=5, stop_after=1))
    admin.execute(f'DELETE FROM "{schema}".gman_outbox')
    assert [(bytes(w), bytes(u), p) for w, u, p in rows] == [(b"committed", b"u-7", "high")]
    assert notes and notes[0].payload == schema


def test_only_the_installer_can_see_or_change_the_settings(
    db: Session, installed: dict[str, str]
) -> None:
    import psycopg

    schema = installed["schema"]
    for sql in (
        f'SELECT * FROM "{schema}".gman_settings',
        f"UPDATE \"{schema}\".gman_settings SET value = 'evil:25'",
        f'SELECT * FROM "{schema}".gman_outbox',
        # Only the public gman_* functions (and gman_sum's support) are granted.
        f'SELECT * FROM "{schema}"._gman_settings()',
        f'SELECT "{schema}"._gman_background_settings()',
        f'SELECT "{schema}"._gman_background_limit()',
        f'SELECT "{schema}"._gman_compile()',
        f'SELECT * FROM "{schema}"._gman_library',
        f"SELECT \"{schema}\"._gman_background_now('gman_do', 'normal', 'f', 'x', NULL)",
        f"SELECT \"{schema}\"._gman_py_gman_do('reverse', 'x')",
        f"SELECT * FROM \"{schema}\"._gman_py_gman_map('reverse', ARRAY['x'])",
        f'SELECT * FROM "{schema}"._gman_outbox_state(1)',
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.conn.execute(sql)
    public = db.one(
        "SELECT count(*) FROM pg_proc p, aclexplode(p.proacl) a "
        "WHERE p.pronamespace = %s::regnamespace AND a.grantee = 0",
        (schema,),
    )
    assert public == 0


def test_a_callers_search_path_cannot_substitute_an_operator(
    db: Session, admin: Any, installed: dict[str, str], configure: Any
) -> None:
    """The background functions run as the installer without SET search_path: a caller that
    puts its own ``=`` before pg_catalog must not get it run (as a superuser)."""
    import psycopg

    schema, role = installed["schema"], installed["role"]
    evil = f"evil_{secrets.token_hex(3)}"
    admin.execute(f'CREATE SCHEMA "{evil}" AUTHORIZATION "{role}"')
    configure("background_mode", "transactional")
    try:
        db.conn.execute(
            f'CREATE FUNCTION "{evil}".hijack(text, text) RETURNS boolean LANGUAGE plpgsql AS '
            "$$ BEGIN RAISE EXCEPTION 'hijacked as %', current_user; END $$"
        )
        for op in ("=", "<>", ">"):
            db.conn.execute(
                f'CREATE OPERATOR "{evil}".{op} (LEFTARG = text, RIGHTARG = text, '
                f'FUNCTION = "{evil}".hijack)'
            )
        db.conn.execute(f'SET search_path = "{evil}", pg_catalog, "{schema}"')
        with pytest.raises(psycopg.Error, match="hijacked"):  # unqualified, it is the caller's
            db.conn.execute("SELECT 'a'::text = 'b'::text")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="name is empty"):
            db.conn.execute("SELECT gman_do_background('', 'x')")
        assert db.one("SELECT gman_do_background('record', 'x', 'u')").startswith("outbox:")
    finally:
        db.conn.execute(f'SET search_path = "{schema}"')
        admin.execute(f'DROP SCHEMA "{evil}" CASCADE')
        admin.execute(f'DELETE FROM "{schema}".gman_outbox')


def test_servers_set_chooses_among_the_allowed(
    db: Session, workers: Workers, server: ServerProcess
) -> None:
    assert db.one("SELECT gman_servers_set(%s)", (f"{server.host}:{server.port}",)) is True
    assert db.one("SELECT gman_do('reverse', 'chosen')") == "nesohc"


def test_servers_set_per_function_routes_its_jobs_and_only_within_the_allowed(
    db: Session,
    admin: Any,
    installed: dict[str, str],
    configure: Any,
    gearsql_server: ServerProcess,
    tmp_path: Path,
) -> None:
    """gman_servers_set(servers, function): database-wide, persistent, checked against the
    allowed servers; the function's direct calls go there, others to the session's servers."""
    import psycopg
    from relaying import queued

    schema = installed["schema"]
    second = ServerProcess("gearsql", tmp_path / "second.log", ["--store", "memory"]).start()
    one, two = (f"{s.host}:{s.port}" for s in (gearsql_server, second))
    configure("servers", f"{one},{two}")
    other = Session(db.conn.info.dsn, installed)
    try:
        assert db.one("SELECT gman_servers_set(%s)", (one,)) is True  # this session's default
        assert db.one("SELECT gman_servers_set(%s, 'fs_a')", (f" {two} ,{two}",)) == two
        for function in ("fs_a", "fs_b", "fs_a"):
            db.one("SELECT gman_do_background(%s, 'x')", (function,))
        assert (queued(second, "fs_a"), queued(gearsql_server, "fs_a")) == (2, 0)
        assert (queued(gearsql_server, "fs_b"), queued(second, "fs_b")) == (1, 0)
        # Database-wide: another session's calls follow it too; job_status finds the job.
        handle = other.one("SELECT gman_do_background('fs_a', 'y')")
        assert queued(second, "fs_a") == 3
        assert other.conn.execute(
            "SELECT known, detail FROM gman_job_status(%s)", (handle,)
        ).fetchone() == (True, two)

        with pytest.raises(
            psycopg.errors.InsufficientPrivilege, match=r"127\.0\.0\.1:1 is not allowed"
        ):
            db.conn.execute("SELECT gman_servers_set('127.0.0.1:1', 'fs_a')")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="list is empty"):
            db.conn.execute("SELECT gman_servers_set(' , ', 'fs_a')")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="function name is NULL"):
            db.conn.execute("SELECT gman_servers_set(%s, NULL)", (two,))
        for sql in (
            f'SELECT * FROM "{schema}".gman_function_servers',
            f"INSERT INTO \"{schema}\".gman_function_servers VALUES ('fs_b', 'evil:25')",
            f'DELETE FROM "{schema}".gman_function_servers',
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.conn.execute(sql)
        # The installer narrows the allowed servers: the choice no longer applies.
        configure("servers", one)
        with pytest.raises(
            psycopg.errors.InsufficientPrivilege, match="chosen for function 'fs_a'"
        ):
            db.conn.execute("SELECT gman_do_background('fs_a', 'z')")
        # ... while other calls go on (gman_job_status no longer asks server 2).
        status = "SELECT known FROM gman_job_status(%s)"
        assert other.conn.execute(status, (handle,)).fetchone() == (False,)
        configure("servers", f"{one},{two}")

        assert db.one("SELECT gman_servers_set(NULL, 'fs_a')") is None  # back to the default
        db.one("SELECT gman_do_background('fs_a', 'w')")
        assert (queued(gearsql_server, "fs_a"), queued(second, "fs_a")) == (1, 3)
        assert admin.execute(
            f'SELECT count(*) FROM "{schema}".gman_function_servers'
        ).fetchone() == (0,)
    finally:
        other.conn.close()
        admin.execute(f'DELETE FROM "{schema}".gman_function_servers')
        second.stop()


def test_a_workload_above_max_workload_is_an_error_before_the_commit(
    db: Session, admin: Any, installed: dict[str, str], configure: Any, server: ServerProcess
) -> None:
    import psycopg

    schema = installed["schema"]
    configure("max_workload", "1000")
    try:
        for mode in ("transactional", "immediate"):
            configure("background_mode", mode)
            with pytest.raises(
                psycopg.Error,
                match=r"gman_do_background: the workload is 2000 bytes, more "
                r"than the max_workload setting \(1000 bytes\)",
            ):
                with db.conn.transaction():
                    db.one("SELECT gman_do_background('record', repeat('x', 1000))")
                    db.one("SELECT gman_do_background('record', repeat('x', 2000))")
        with pytest.raises(psycopg.Error, match="more than the max_workload setting"):
            db.conn.execute("SELECT gman_do('reverse', repeat('x', 1001))")
        # 0 (and an empty value) is no limit.
        configure("background_mode", "transactional")
        for unlimited in ("0", " "):
            configure("max_workload", unlimited)
            with db.conn.transaction(force_rollback=True):
                db.one("SELECT gman_do_background('record', repeat('x', 2000))")
        # Nothing of the failed transactions stays.
        assert admin.execute(f'SELECT count(*) FROM "{schema}".gman_outbox').fetchone()[0] == 0
    finally:
        configure("max_workload", "67107840")


def test_a_job_above_the_servers_packet_limit_says_so_not_cannot_reach(
    db: Session, configure: Any, tmp_path: Path
) -> None:
    import psycopg

    small = ServerProcess(
        "gearsql", tmp_path / "small.log", ["--store", "memory", "--max-packet-size", "65536"]
    ).start()
    try:
        configure("servers", f"{small.host}:{small.port}")
        for call in ("gman_do", "gman_do_background"):
            with pytest.raises(psycopg.Error, match="maximum packet size") as caught:
                db.conn.execute(f"SELECT {call}('reverse', repeat('x', 2000000))")
            assert "cannot reach" not in str(caught.value)
            assert caught.value.sqlstate == "GM005"
    finally:
        small.stop()


def test_job_status_of_an_outbox_row_is_pending_dead_or_submitted(
    db: Session, admin: Any, installed: dict[str, str], configure: Any
) -> None:
    schema = installed["schema"]
    configure("background_mode", "transactional")
    try:
        pending = db.one("SELECT gman_do_background('record', 'waits')")
        dead = db.one("SELECT gman_do_background('bigjob', 'refused')")
        dead_id = int(dead.split(":")[1])
        # What the relay does with a row no job server takes (tests/test_relay_dead_letters.py).
        admin.execute(
            f'INSERT INTO "{schema}".gman_outbox_dead (id, created_at, function, workload, '
            f"priority, reason) SELECT id, created_at, function, workload, priority, "
            f"'the job server refused it: ARGUMENT_TOO_LARGE' "
            f'FROM "{schema}".gman_outbox WHERE id = %s',
            (dead_id,),
        )
        admin.execute(f'DELETE FROM "{schema}".gman_outbox WHERE id = %s', (dead_id,))

        def status(handle: str) -> tuple[Any, ...]:
            return tuple(
                db.conn.execute(
                    "SELECT known, state, detail FROM gman_job_status(%s)", (handle,)
                ).fetchone()
            )

        known, state, detail = status(pending)
        assert (known, state) == (True, "pending") and detail.startswith("in the outbox since")
        known, state, detail = status(dead)
        assert (known, state) == (False, "dead") and "ARGUMENT_TOO_LARGE" in detail
        assert status("outbox:999999999")[1] == "submitted"
        backlog, age, dead_count, _, reasons, contact = db.conn.execute(
            "SELECT * FROM gman_pipeline()"
        ).fetchone()
        assert (backlog, dead_count, contact) == (1, 1, None) and age.total_seconds() >= 0
        assert reasons == [f"{dead_id}: the job server refused it: ARGUMENT_TOO_LARGE"]
    finally:
        admin.execute(f'DELETE FROM "{schema}".gman_outbox')
        admin.execute(f'DELETE FROM "{schema}".gman_outbox_dead')


def test_installing_again_upgrades_an_install_without_dead_letters(pg_dsn: str, admin: Any) -> None:
    from gearsql.bridges.postgres import install, uninstall

    suffix = secrets.token_hex(4)
    schema, role = f"gearsql_upgrade_{suffix}", f"gearsql_upgrade_{suffix}"
    admin.execute(f'CREATE ROLE "{role}" NOLOGIN')
    try:
        install(pg_dsn, schema, role=role)
        # Make it look like an install from before dead letters, max_workload and TLS.
        s = f'"{schema}"'
        admin.execute(f"DROP TABLE {s}.gman_outbox_dead")
        admin.execute(f"DROP FUNCTION {s}.gman_servers_set(text, text)")
        admin.execute(f"DROP TABLE {s}.gman_function_servers")
        admin.execute(
            f"DELETE FROM {s}.gman_settings WHERE name IN ('max_workload', 'ssl', "
            "'ssl_ca_file', 'ssl_certificate', 'ssl_key')"
        )
        admin.execute(f"ALTER TABLE {s}.gman_settings DROP CONSTRAINT gman_settings_name_check")
        admin.execute(
            f"ALTER TABLE {s}.gman_settings ADD CONSTRAINT gman_settings_name_check "
            "CHECK (name IN ('servers', 'background_mode', 'connect_timeout', "
            "'timeout', 'poll_interval'))"
        )
        admin.execute(f"DROP FUNCTION {s}._gman_background_limit()")
        admin.execute(f"ALTER SEQUENCE {s}.gman_outbox_id_seq CACHE 1")
        admin.execute(
            f"ALTER TABLE {s}.gman_outbox ADD CONSTRAINT gman_outbox_priority_check "
            "CHECK (priority IN ('high', 'normal', 'low'))"
        )
        admin.execute(f"DROP FUNCTION {s}.gman_job_status(text)")
        admin.execute(
            f"CREATE FUNCTION {s}.gman_job_status(handle text, OUT known boolean, OUT running "
            "boolean, OUT numerator bigint, OUT denominator bigint) LANGUAGE sql "
            "AS $$ SELECT false, false, NULL::bigint, NULL::bigint $$"
        )
        admin.execute(f"REVOKE ALL ON FUNCTION {s}.gman_job_status(text) FROM PUBLIC")
        admin.execute(f'GRANT EXECUTE ON FUNCTION {s}.gman_job_status(text) TO "{role}"')
        # Older installs loaded the library through this function.
        admin.execute(f"CREATE FUNCTION {s}._gman_load() RETURNS void LANGUAGE sql AS ''")
        install(pg_dsn, schema)  # again, without --role: the grant must survive
        assert admin.execute(f"SELECT to_regprocedure('{s}._gman_load()')").fetchone() == (None,)
        assert admin.execute(f"SELECT to_regclass('{s}.gman_outbox_dead') IS NOT NULL").fetchone()[
            0
        ]
        # The outbox's CHECK goes (it made every background call's INSERT dearer).
        assert not admin.execute(
            f"SELECT count(*) FROM pg_constraint WHERE conrelid = '{s}.gman_outbox'::regclass "
            "AND contype = 'c'"
        ).fetchone()[0]
        assert admin.execute(
            "SELECT cache_size FROM pg_sequences WHERE schemaname = %s "
            "AND sequencename = 'gman_outbox_id_seq'",
            (schema,),
        ).fetchone() == (64,)
        assert (
            admin.execute(
                f"SELECT value FROM {s}.gman_settings WHERE name = 'max_workload'"
            ).fetchone()[0]
            == "67107840"
        )
        assert (
            admin.execute(f"SELECT value FROM {s}.gman_settings WHERE name = 'ssl'").fetchone()[0]
            == "off"
        )
        assert admin.execute(
            f"SELECT has_function_privilege('{role}', '{s}.gman_job_status(text)', 'EXECUTE')"
        ).fetchone()[0]
        columns = admin.execute(
            f"SELECT proargnames FROM pg_proc WHERE oid = '{s}.gman_job_status(text)'::regprocedure"
        ).fetchone()[0]
        assert columns[-2:] == ["state", "detail"]
        # Servers per function: the table and the two-argument function come with the upgrade.
        admin.execute(f"SET search_path = {s}")
        try:
            assert admin.execute("SELECT gman_servers_set('127.0.0.1', 'f')").fetchone() == (
                "127.0.0.1:4730",
            )
            assert admin.execute(
                "SELECT function, servers FROM gman_function_servers"
            ).fetchall() == [("f", "127.0.0.1:4730")]
        finally:
            admin.execute("RESET search_path")
    finally:
        uninstall(pg_dsn, schema, force=True)
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.execute(f'DROP OWNED BY "{role}"')
        admin.execute(f'DROP ROLE "{role}"')
