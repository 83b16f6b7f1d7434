"""The gman_* functions in a real MariaDB: the outbox they write, and foreground calls answered
by the relay's serve_calls loop against a real job server and workers."""

from __future__ import annotations

import asyncio
import importlib.util
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerProcess

from gearsql import AsyncClient, Worker, WorkerJob

ROOT = Path(__file__).resolve().parent.parent
EVIL = "x'); DROP TABLE canary;--"
TWEET_TRIGGER = (
    "CREATE TRIGGER tweet_blog BEFORE INSERT ON blog_entries FOR EACH ROW "
    "SET @ret=gman_do_background('send_tweet', CONCAT(NEW.title, \" - \", NEW.url));"
)


def test_generated_install_files_are_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("sql_generate", ROOT / "sql" / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    assert generate.stale() == [], "run `python sql/generate.py`"


def test_install_sql_refuses_bad_accounts_servers_and_timeouts() -> None:
    from gearsql.bridges.mysql import check_account, install_sql

    assert check_account("'app'@'%'") == "'app'@'%'"
    assert check_account("app@localhost") == "'app'@'localhost'"
    assert check_account("app_role") == "`app_role`"
    for bad in ("a b", "'app'@'%'; DROP TABLE t", "x'@'%", "`r`ole"):
        with pytest.raises(ValueError, match="is not 'user'@'host' or a role name"):
            install_sql(grant_to=[bad])
    with pytest.raises(ValueError, match="bad job server address"):
        install_sql(servers="host:notaport")
    with pytest.raises(ValueError, match="number of seconds"):
        install_sql(timeout="soon")


def test_the_functions_are_the_old_udfs_names_plus_unique_variants() -> None:
    from gearsql.bridges.mysql import FUNCTIONS

    for base in (
        "gman_do",
        "gman_do_high",
        "gman_do_low",
        "gman_do_background",
        "gman_do_high_background",
        "gman_do_low_background",
    ):
        assert FUNCTIONS[base][0] == ("function", "workload")
        assert FUNCTIONS[base + "_unique"][0] == ("function", "workload", "unique")
    assert FUNCTIONS["gman_servers_set"][0] == ("servers",)
    assert FUNCTIONS["gman_servers_set_function"][0] == ("servers", "function")


# ------------------------------------------------------------------------------ fixtures

pytestmark = pytest.mark.mysql


def _connect(dsn: str, **extra: Any) -> Any:
    import mysql.connector

    from gearsql.bridges.mysql import connect_config

    return mysql.connector.connect(**{**connect_config(dsn), **extra})


def _one(conn: Any, sql: str, params: tuple[Any, ...] = ()) -> Any:
    cursor = conn.cursor()
    cursor.execute(sql, params)
    row = cursor.fetchone()
    cursor.fetchall()
    cursor.close()
    return None if row is None else row[0]


def _rows(conn: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    cursor = conn.cursor()
    cursor.execute(sql, params)
    rows = [
        tuple(bytes(v) if isinstance(v, bytearray) else v for v in row) for row in cursor.fetchall()
    ]
    cursor.close()
    return rows


def _execute(conn: Any, sql: str, params: tuple[Any, ...] = ()) -> None:
    cursor = conn.cursor()
    cursor.execute(sql, params)
    if cursor.with_rows:
        cursor.fetchall()
    cursor.close()


def _outbox(conn: Any) -> list[tuple[Any, ...]]:
    return _rows(
        conn, "SELECT function, unique_key, workload, priority FROM gman_outbox ORDER BY id"
    )


@pytest.fixture(scope="module")
def installed(mysql_dsn: str) -> Iterator[str]:
    pytest.importorskip("mysql.connector")
    from gearsql.bridges.mysql import install, uninstall

    install(mysql_dsn)
    try:
        yield mysql_dsn
    finally:
        uninstall(mysql_dsn, force=True)


@pytest.fixture
def admin(installed: str) -> Iterator[Any]:
    """The installing account (root), autocommit; empties the outbox and resets the settings
    afterwards."""
    conn = _connect(installed)
    yield conn
    _execute(conn, "DELETE FROM gman_outbox")
    _execute(conn, "UPDATE gman_settings SET value = '60' WHERE name = 'timeout'")
    _execute(conn, "UPDATE gman_settings SET value = '127.0.0.1:4730' WHERE name = 'servers'")
    conn.close()


@pytest.fixture
def db(installed: str, admin: Any) -> Iterator[Any]:
    """An application connection, autocommit on."""
    conn = _connect(installed)
    yield conn
    conn.close()


def _set(admin: Any, name: str, value: str) -> None:
    _execute(admin, "UPDATE gman_settings SET value = %s WHERE name = %s", (value, name))


class Workers:
    """A real gearsql Worker in a thread."""

    def __init__(self, server: ServerProcess) -> None:
        self.worker = Worker(f"{server.host}:{server.port}", concurrency=50)
        self.seen: list[tuple[bytes, bytes, bytes]] = []
        self.lock = threading.Lock()
        for name, handler in {
            "reverse": lambda job: job.data[::-1],
            "echo": lambda job: job.data,
            "empty": lambda job: None,
            "fail": lambda job: job.fail(),
            "boom": self.boom,
            "record": self.record,
            EVIL: self.record,
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
        return b"ok"

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(10)


class Relay:
    """serve_calls on its own event loop in a thread, submitting to ``server``."""

    def __init__(self, dsn: str, server: ServerProcess) -> None:
        from gearsql.bridges.mysql import connect_config, connector
        from gearsql.bridges.mysql_calls import serve_calls

        self.loop = asyncio.new_event_loop()
        self.stop_event = asyncio.Event()
        database = connect_config(dsn)["database"]

        async def main() -> None:
            async with AsyncClient(f"{server.host}:{server.port}") as client:
                await serve_calls(
                    connector(dsn), client, database, self.stop_event, poll_interval=0.02
                )

        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),))
        self.thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(20)
        self.loop.close()


@pytest.fixture
def workers(gearsql_server: ServerProcess) -> Iterator[Workers]:
    workers = Workers(gearsql_server)
    yield workers
    workers.stop()


@pytest.fixture
def relay(installed: str, gearsql_server: ServerProcess, admin: Any) -> Iterator[Relay]:
    relay = Relay(installed, gearsql_server)
    yield relay
    relay.stop()
    # A foreground call leaves nothing behind once the relay has tidied up.
    assert _rows(admin, "SELECT id FROM gman_calls") == []


def _wait_empty(conn: Any, table: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while _one(conn, f"SELECT COUNT(*) FROM {table}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _one(conn, f"SELECT COUNT(*) FROM {table}") == 0


# ------------------------------------------------------------------------ install, uninstall


@pytest.fixture
def scratch_dsn(installed: str, admin: Any) -> Iterator[str]:
    """A second, empty database next to the session's."""
    from urllib.parse import urlsplit, urlunsplit

    name = f"gearsql_scratch_{secrets.token_hex(4)}"
    _execute(admin, f"CREATE DATABASE `{name}`")
    parts = urlsplit(installed)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))
    finally:
        _execute(admin, f"DROP DATABASE IF EXISTS `{name}`")


def _objects(conn: Any) -> tuple[list[str], list[str]]:
    routines = [
        r[0]
        for r in _rows(
            conn,
            "SELECT ROUTINE_NAME FROM information_schema.ROUTINES "
            "WHERE ROUTINE_SCHEMA = DATABASE() ORDER BY 1",
        )
    ]
    tables = [
        r[0]
        for r in _rows(
            conn,
            "SELECT TABLE_NAME FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() ORDER BY 1",
        )
    ]
    return routines, tables


def test_install_is_idempotent_keeps_settings_and_uninstall_removes_everything(
    scratch_dsn: str,
) -> None:
    import mysql.connector

    from gearsql.bridges.mysql import FUNCTIONS, TABLES, VIEWS, install, uninstall

    install(scratch_dsn, servers="10.0.0.5:4730", timeout="7")
    install(scratch_dsn)  # again, with nothing given: the settings stay
    conn = _connect(scratch_dsn)
    try:
        routines, tables = _objects(conn)
        assert set(FUNCTIONS) <= set(routines)
        assert sorted(tables) == sorted(TABLES + VIEWS)
        settings = dict(_rows(conn, "SELECT name, value FROM gman_settings"))
        assert settings == {
            "servers": "10.0.0.5:4730",
            "timeout": "7",
            "poll_interval": "0.05",
            "max_workload": "67107840",
        }
        assert _one(conn, "SELECT gman_do_background('f', 'kept')") == "outbox:1"
        install(scratch_dsn, timeout="9")
        assert _one(conn, "SELECT value FROM gman_settings WHERE name = 'timeout'") == "9"
        assert len(_outbox(conn)) == 1  # an upgrade keeps the outbox
        with pytest.raises(mysql.connector.Error, match="still holds jobs not yet relayed"):
            uninstall(scratch_dsn)
        assert _objects(conn) == (routines, tables)  # the refusal changed nothing
        uninstall(scratch_dsn, force=True)
        assert _objects(conn) == ([], [])
        uninstall(scratch_dsn)  # nothing left to remove is no error
    finally:
        conn.close()


def test_the_plain_sql_files_install_and_uninstall_with_the_mysql_client(
    scratch_dsn: str,
) -> None:
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        pytest.skip("no mysql/mariadb command-line client")
    from gearsql.bridges.mysql import connect_config

    config = connect_config(scratch_dsn)
    command = [
        client,
        "-h",
        str(config["host"]),
        "-P",
        str(config["port"]),
        "-u",
        str(config["user"]),
        f"--password={config['password']}",
        str(config["database"]),
    ]
    for name in ("install.sql", "install.sql", "uninstall.sql"):
        with open(ROOT / "sql" / "mysql" / name, "rb") as script:
            subprocess.run(command, stdin=script, check=True, timeout=60)
        if name == "install.sql":
            conn = _connect(scratch_dsn)
            assert _one(conn, "SELECT gman_do_low_background_unique('f', 'w', 'u')").startswith(
                "outbox:"
            )
            _execute(conn, "DELETE FROM gman_outbox")
            conn.close()
    conn = _connect(scratch_dsn)
    assert _objects(conn) == ([], [])
    conn.close()


# ------------------------------------------------------------------------ the outbox


@pytest.fixture
def blog(db: Any, admin: Any) -> Iterator[Any]:
    _execute(
        admin,
        "CREATE TABLE blog_entries (id INT AUTO_INCREMENT PRIMARY KEY, "
        "title VARCHAR(200), url VARCHAR(200)) ENGINE=InnoDB",
    )
    _execute(admin, TWEET_TRIGGER)
    yield db
    _execute(admin, "DROP TABLE blog_entries")


def test_the_old_udf_trigger_writes_one_outbox_row_per_committed_insert(
    blog: Any, admin: Any
) -> None:
    _execute(
        blog,
        "INSERT INTO blog_entries (title, url) VALUES (%s, %s)",
        ("Hello", "https://example.org/1"),
    )
    assert _outbox(admin) == [(b"send_tweet", None, b"Hello - https://example.org/1", "normal")]
    assert _one(blog, "SELECT @ret") == "outbox:" + str(
        _one(admin, "SELECT MAX(id) FROM gman_outbox")
    )
    _execute(blog, "INSERT INTO blog_entries (title, url) VALUES ('a', 'u1'), ('b', 'u2')")
    assert [row[2] for row in _outbox(admin)][1:] == [b"a - u1", b"b - u2"]


def test_a_rolled_back_insert_leaves_no_outbox_row(blog: Any, admin: Any) -> None:
    blog.autocommit = False
    _execute(blog, "INSERT INTO blog_entries (title, url) VALUES ('gone', 'u')")
    assert _one(blog, "SELECT COUNT(*) FROM gman_outbox") == 1  # visible to itself only
    assert _outbox(admin) == []
    blog.rollback()
    assert _outbox(admin) == []
    # A savepoint rolled back inside a committed transaction: only the kept part is relayed.
    _execute(blog, "START TRANSACTION")
    _execute(blog, "INSERT INTO blog_entries (title, url) VALUES ('kept', 'u')")
    _execute(blog, "SAVEPOINT s1")
    _execute(blog, "INSERT INTO blog_entries (title, url) VALUES ('undone', 'u')")
    _execute(blog, "ROLLBACK TO SAVEPOINT s1")
    blog.commit()
    assert [row[2] for row in _outbox(admin)] == [b"kept - u"]


def test_a_bad_call_in_a_trigger_fails_the_insert_and_leaves_nothing(blog: Any, admin: Any) -> None:
    import mysql.connector

    with pytest.raises(mysql.connector.Error, match="gman_do_background: the workload is NULL"):
        _execute(blog, "INSERT INTO blog_entries (title, url) VALUES (NULL, 'u')")
    assert _one(admin, "SELECT COUNT(*) FROM blog_entries") == 0
    assert _outbox(admin) == []


@pytest.mark.parametrize(
    ("name", "priority"),
    [
        ("gman_do_background", "normal"),
        ("gman_do_high_background", "high"),
        ("gman_do_low_background", "low"),
    ],
)
def test_background_variants_write_priority_and_unique(
    db: Any, admin: Any, name: str, priority: str
) -> None:
    first = _one(db, f"SELECT {name}('resize', 'a.jpg')")
    second = _one(db, f"SELECT {name}_unique('resize', 'b.jpg', 'img-b')")
    empty = _one(db, f"SELECT {name}_unique('resize', 'c.jpg', '')")
    ids = [row[0] for row in _rows(admin, "SELECT id FROM gman_outbox ORDER BY id")]
    assert [first, second, empty] == [f"outbox:{i}" for i in ids]
    assert _outbox(admin) == [
        (b"resize", None, b"a.jpg", priority),
        (b"resize", b"img-b", b"b.jpg", priority),
        (b"resize", None, b"c.jpg", priority),  # an empty unique is no unique
    ]


@pytest.mark.parametrize(
    ("sql", "params", "message"),
    [
        (
            "SELECT gman_do_background(NULL, 'x')",
            (),
            "gman_do_background: the function name is NULL",
        ),
        ("SELECT gman_do_background('', 'x')", (), "the function name is empty"),
        (
            "SELECT gman_do_high_background(REPEAT('f', 513), 'x')",
            (),
            r"gman_do_high_background: the function name is longer than 512 bytes \(513 bytes\)",
        ),
        (
            "SELECT gman_do_background(%s, 'x')",
            (b"rev\0erse",),
            "the function name contains a NUL byte",
        ),
        (
            "SELECT gman_do_background(CONCAT('rev', CHAR(0), 'erse'), 'x')",
            (),
            "the function name contains a NUL byte",
        ),
        ("SELECT gman_do_background('f', NULL)", (), "gman_do_background: the workload is NULL"),
        (
            "SELECT gman_do_low_background_unique('f', 'x', REPEAT('u', 65))",
            (),
            r"gman_do_low_background_unique: the unique id is longer than 64 bytes \(65 bytes\)",
        ),
        (
            "SELECT gman_do_background_unique('f', 'x', %s)",
            (b"a\0b",),
            "the unique id contains a NUL byte",
        ),
        ("SELECT gman_do(NULL, 'x')", (), "gman_do: the function name is NULL"),
        (
            "SELECT gman_do_high_unique('f', 'x', REPEAT('u', 65))",
            (),
            "gman_do_high_unique: the unique id is longer than 64 bytes",
        ),
        ("SELECT gman_servers_set(NULL)", (), "gman_servers_set: the server list is NULL"),
        (
            "SELECT gman_servers_set('169.254.169.254:80')",
            (),
            "job server 169.254.169.254:80 is not allowed",
        ),
        (
            "SELECT gman_servers_set('127.0.0.1:4730,evil.example:25')",
            (),
            "job server evil.example:25 is not allowed",
        ),
        ("SELECT gman_servers_set('host:notaport')", (), "bad job server address 'host:notaport'"),
        ("SELECT gman_servers_set(' , ')", (), "the job server list is empty"),
        (
            "SELECT gman_servers_set_function('169.254.169.254:80', 'f')",
            (),
            "gman_servers_set_function: job server 169.254.169.254:80 is not allowed",
        ),
        (
            "SELECT gman_servers_set_function('127.0.0.1', NULL)",
            (),
            "gman_servers_set_function: the function name is NULL",
        ),
        (
            "SELECT gman_servers_set_function('', 'f')",
            (),
            "gman_servers_set_function: the job server list is empty",
        ),
    ],
)
def test_bad_input_is_a_sql_error_naming_the_cause(
    db: Any, admin: Any, sql: str, params: tuple[Any, ...], message: str
) -> None:
    import mysql.connector

    with pytest.raises(mysql.connector.Error, match=message) as caught:
        _execute(db, sql, params)
    # PostgreSQL's codes: a server not allowed is insufficient_privilege, the rest are bad
    # arguments (docs/design.md, "Errors and their SQLSTATEs").
    assert caught.value.sqlstate == ("42501" if "not allowed" in message else "22023")
    assert _outbox(admin) == []
    assert _rows(admin, "SELECT id FROM gman_calls") == []
    assert _one(db, "SELECT gman_do_background('f', 'fine')").startswith("outbox:")


def test_servers_set_accepts_only_the_allowed_servers(db: Any, admin: Any) -> None:
    _set(admin, "servers", "127.0.0.1:4730, gearman.internal , [::1]:4731")
    assert _one(db, "SELECT gman_servers_set('127.0.0.1')") == "127.0.0.1:4730"
    assert (
        _one(db, "SELECT gman_servers_set('gearman.internal:4730,[::1]:4731,127.0.0.1')")
        == "gearman.internal:4730,[::1]:4731,127.0.0.1:4730"
    )


def test_servers_set_function_records_a_functions_servers_and_removes_them(
    db: Any, admin: Any
) -> None:
    _set(admin, "servers", "127.0.0.1:4730, gearman.internal")
    try:
        assert _one(db, "SELECT gman_servers_set_function(' gearman.internal', 'a')") == (
            "gearman.internal:4730"
        )
        assert _one(db, "SELECT gman_servers_set_function('127.0.0.1,gearman.internal', 'a')") == (
            "127.0.0.1:4730,gearman.internal:4730"
        )
        assert _one(db, "SELECT gman_servers_set_function('127.0.0.1', %s)", (b"\xffA",)) == (
            "127.0.0.1:4730"
        )
        # Names are bytes: 'A' is not 'a'.
        assert _one(db, "SELECT gman_servers_set_function('127.0.0.1', 'A')") == "127.0.0.1:4730"
        assert _rows(admin, "SELECT function, servers FROM gman_function_servers ORDER BY 1") == [
            (b"A", "127.0.0.1:4730"),
            (b"a", "127.0.0.1:4730,gearman.internal:4730"),
            (b"\xffA", "127.0.0.1:4730"),
        ]
        assert _one(db, "SELECT gman_servers_set_function(NULL, 'a')") is None
        assert _one(db, "SELECT gman_servers_set_function(NULL, 'never-set')") is None
        assert [row[0] for row in _rows(admin, "SELECT function FROM gman_function_servers")] == [
            b"A",
            b"\xffA",
        ]
    finally:
        _execute(admin, "DELETE FROM gman_function_servers")


def test_binary_payloads_and_names_are_stored_byte_exact(db: Any, admin: Any) -> None:
    payload = bytes(range(256)) * 4 + b"\0\0end\0"
    _one(db, "SELECT gman_do_background_unique(%s, %s, %s)", (b"\xff\xfebin", payload, b"\xff\x01"))
    assert _outbox(admin) == [(b"\xff\xfebin", b"\xff\x01", payload, "normal")]


def test_a_10_mb_workload_round_trips_and_an_oversized_one_is_a_clear_error(
    db: Any, admin: Any, installed: str
) -> None:
    import mysql.connector

    big = bytes(range(256)) * (10 * 1024 * 1024 // 256)  # 10 MiB, every byte value
    max_packet = int(_one(admin, "SELECT @@max_allowed_packet"))
    assert max_packet > len(big) * 1.1, "this MariaDB's max_allowed_packet is under 11 MiB"
    _one(db, "SELECT gman_do_background('big', %s)", (big,))
    assert _rows(admin, "SELECT workload FROM gman_outbox") == [(big,)]
    _execute(admin, "DELETE FROM gman_outbox")
    # Built in SQL: MariaDB's own clear error; the session goes on.
    with pytest.raises(mysql.connector.Error, match="larger than max_allowed_packet"):
        _execute(db, "SELECT gman_do_background('big', REPEAT('x', @@max_allowed_packet + 1))")
    assert _one(db, "SELECT gman_do_background('small', 'x')").startswith("outbox:")
    # Sent by the client: the server refuses the packet and closes that connection.
    pure = _connect(installed, use_pure=True)
    try:
        with pytest.raises(mysql.connector.Error, match="bigger than 'max_allowed_packet'"):
            _execute(pure, "SELECT gman_do_background('big', %s)", (b"x" * (max_packet + 1),))
    finally:
        pure.close()
    again = _connect(installed)
    assert _one(again, "SELECT gman_do_background('small', 'y')").startswith("outbox:")
    again.close()
    assert [row[2] for row in _outbox(admin)] == [b"x", b"y"]


def test_sql_injection_through_every_argument_does_nothing(db: Any, admin: Any) -> None:
    import mysql.connector

    _execute(admin, "CREATE TABLE canary (x INT)")
    try:
        _one(
            db,
            "SELECT gman_do_background_unique(%s, %s, %s)",
            (EVIL, EVIL, "'; DROP TABLE canary;--"),
        )
        _one(db, f"SELECT gman_do_high_background(\"{EVIL}\", '\\'); DROP TABLE canary;--')")
        with pytest.raises(mysql.connector.Error, match="bad job server address"):
            _execute(db, "SELECT gman_servers_set(%s)", ("a:1'); DROP TABLE canary;--",))
        assert _outbox(admin) == [
            (EVIL.encode(), b"'; DROP TABLE canary;--", EVIL.encode(), "normal"),
            (EVIL.encode(), None, b"'); DROP TABLE canary;--", "high"),
        ]
        assert _one(admin, "SELECT COUNT(*) FROM canary") == 0
    finally:
        _execute(admin, "DROP TABLE canary")


def test_granted_accounts_and_roles_can_call_but_not_touch_the_tables(
    installed: str, admin: Any
) -> None:
    import mysql.connector

    from gearsql.bridges.mysql import FUNCTIONS, connect_config, install

    database = connect_config(installed)["database"]
    suffix = secrets.token_hex(4)
    user, via_role, nobody, role = (
        f"gst_{suffix}",
        f"gsr_{suffix}",
        f"gsn_{suffix}",
        f"gsrole_{suffix}",
    )
    password = secrets.token_hex(8)
    for name in (user, via_role, nobody):
        _execute(admin, f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'")
    _execute(admin, f"CREATE ROLE {role}")
    _execute(admin, f"GRANT {role} TO '{via_role}'@'%'")
    _execute(admin, f"SET DEFAULT ROLE {role} FOR '{via_role}'@'%'")
    try:
        install(installed, grant_to=[f"'{user}'@'%'", role])
        host, port = connect_config(installed)["host"], connect_config(installed)["port"]
        for name in (user, via_role):
            conn = mysql.connector.connect(
                host=host, port=port, user=name, password=password, autocommit=True
            )
            for function in FUNCTIONS:
                assert (
                    _one(
                        conn,
                        "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_NAME = %s",
                        (function,),
                    )
                    >= 1
                )
            assert _one(
                conn, f"SELECT `{database}`.gman_do_background('f', %s)", (name,)
            ).startswith("outbox:")
            # Through the function only, within the allowed servers.
            assert _one(
                conn, f"SELECT `{database}`.gman_servers_set_function('127.0.0.1', %s)", (name,)
            ) == ("127.0.0.1:4730")
            for sql in (
                f"SELECT * FROM `{database}`.gman_outbox",
                f"SELECT * FROM `{database}`.gman_settings",
                f"UPDATE `{database}`.gman_settings SET value = 'evil:25'",
                f"SELECT `{database}`._gman_outbox_insert('x', 'f', 'w', NULL, 'high')",
                f"SELECT * FROM `{database}`.gman_function_servers",
                f"INSERT INTO `{database}`.gman_function_servers (function, servers) "
                "VALUES ('f', 'evil:25')",
                f"DELETE FROM `{database}`.gman_function_servers",
            ):
                with pytest.raises(mysql.connector.Error, match="denied"):
                    _execute(conn, sql)
            conn.close()
        conn = mysql.connector.connect(host=host, port=port, user=nobody, password=password)
        with pytest.raises(mysql.connector.Error, match="denied"):
            _execute(conn, f"SELECT `{database}`.gman_do_background('f', 'w')")
        conn.close()
        assert sorted(row[2] for row in _outbox(admin)) == sorted(
            [user.encode(), via_role.encode()]
        )
        assert sorted(
            row[0] for row in _rows(admin, "SELECT function FROM gman_function_servers")
        ) == sorted([user.encode(), via_role.encode()])
    finally:
        for name in (user, via_role, nobody):
            _execute(admin, f"DROP USER IF EXISTS '{name}'@'%'")
        _execute(admin, f"DROP ROLE IF EXISTS {role}")
        _execute(admin, "DELETE FROM gman_function_servers")


# ------------------------------------------------------------------- foreground gman_do


@pytest.mark.parametrize("name", ["gman_do", "gman_do_high", "gman_do_low"])
def test_foreground_round_trip_through_the_relay(
    db: Any, relay: Relay, workers: Workers, name: str
) -> None:
    assert _one(db, f"SELECT {name}('reverse', 'hello')") == b"olleh"
    assert _one(db, f"SELECT {name}_unique('reverse', 'abc', 'u-1')") == b"cba"
    assert _one(db, f"SELECT {name}('empty', 'x')") is None
    assert _one(db, f"SELECT CONVERT({name}('echo', 'été') USING utf8mb4)") == "été"


def test_foreground_errors_name_the_cause_and_leave_nothing(
    db: Any, admin: Any, relay: Relay, workers: Workers
) -> None:
    import mysql.connector

    with pytest.raises(mysql.connector.Error, match="gman_do: the worker failed the job"):
        _execute(db, "SELECT gman_do('fail', 'x')")
    with pytest.raises(
        mysql.connector.Error, match=r"gman_do_low: the worker raised an exception: .*kaboom"
    ):
        _execute(db, "SELECT gman_do_low('boom', 'x')")
    assert _one(db, "SELECT gman_do('reverse', 'still works')") == b"skrow llits"
    _wait_empty(admin, "gman_results")


def test_foreground_binary_injection_and_10_mb_payloads_are_byte_exact(
    db: Any, admin: Any, relay: Relay, workers: Workers
) -> None:
    payload = bytes(range(256)) * 64 + b"\0\0end\0"
    assert _one(db, "SELECT gman_do('echo', %s)", (payload,)) == payload
    assert _one(db, "SELECT gman_do_unique(%s, %s, %s)", (EVIL, EVIL, "'; --")) == b"ok"
    assert workers.seen == [(EVIL.encode(), b"'; --", EVIL.encode())]
    big = bytes(range(256)) * (10 * 1024 * 1024 // 256)
    assert _one(db, "SELECT gman_do('echo', %s)", (big,)) == big
    _wait_empty(admin, "gman_results")


def test_many_concurrent_callers_each_get_their_own_result(
    installed: str, relay: Relay, workers: Workers
) -> None:
    results: dict[int, Any] = {}

    def call(i: int) -> None:
        conn = _connect(installed)
        try:
            results[i] = _one(conn, "SELECT gman_do('reverse', %s)", (f"call-{i}",))
        finally:
            conn.close()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {i: f"call-{i}".encode()[::-1] for i in range(20)}


def test_gman_do_inside_a_transaction_is_an_error(db: Any, admin: Any) -> None:
    import mysql.connector

    _execute(db, "START TRANSACTION")
    with pytest.raises(
        mysql.connector.Error, match="gman_do: cannot run inside a transaction"
    ) as caught:
        _execute(db, "SELECT gman_do('reverse', 'x')")
    assert caught.value.sqlstate == "25001"  # active_sql_transaction
    db.rollback()
    db.autocommit = False
    with pytest.raises(
        mysql.connector.Error, match="gman_do_high_unique: cannot run inside a transaction"
    ):
        _execute(db, "SELECT gman_do_high_unique('reverse', 'x', 'u')")
    db.rollback()
    assert _rows(admin, "SELECT id FROM gman_calls") == []


def test_gman_do_without_a_relay_or_a_worker_times_out_with_a_clear_error(
    installed: str, db: Any, admin: Any, gearsql_server: ServerProcess
) -> None:
    import mysql.connector

    _set(admin, "timeout", "0.5")
    with pytest.raises(
        mysql.connector.Error, match=r"gman_do: no relay took the call within 0\.5 s"
    ):
        _execute(db, "SELECT gman_do('reverse', 'x')")
    relay = Relay(installed, gearsql_server)
    try:
        with pytest.raises(
            mysql.connector.Error,
            match=r"gman_do: no result within 0\.5 s \(is a worker registered",
        ):
            _execute(db, "SELECT gman_do('nobody_works_this', 'x')")
    finally:
        relay.stop()
    assert _rows(admin, "SELECT id FROM gman_calls") == []


def _sqlstate_of(conn: Any, sql: str, message: str) -> str:
    """The SQLSTATE of the error ``sql`` fails with, whose message must match ``message``."""
    import mysql.connector

    with pytest.raises(mysql.connector.Error, match=message) as caught:
        _execute(conn, sql)
    return str(caught.value.sqlstate)


def test_every_kind_of_failure_has_postgresqls_sqlstate(
    installed: str, db: Any, admin: Any, gearsql_server: ServerProcess, workers: Workers
) -> None:
    """The codes of docs/design.md's table, as PostgreSQL and SQLite raise them: a real relay
    (serve_calls) and job server for the outcomes, no relay for GM001."""
    from conftest import free_port

    from gearsql import Client
    from gearsql.adminclient import AdminClient

    _set(admin, "timeout", "1")
    assert _sqlstate_of(db, "SELECT gman_do('reverse', 'x')", "no relay took the call") == "GM001"
    _set(admin, "timeout", "soon")
    assert _sqlstate_of(db, "SELECT gman_do('reverse', 'x')", "bad setting timeout") == "GM006"
    _set(admin, "timeout", "1")
    _set(admin, "servers", "127.0.0.1:4730,nope:port")
    assert (
        _sqlstate_of(db, "SELECT gman_servers_set('127.0.0.1')", "bad setting servers") == "GM006"
    )
    _set(admin, "servers", "127.0.0.1:4730")
    # The job server refuses: its queue for the function is full (QUEUE_ERROR).
    with Client(f"{gearsql_server.host}:{gearsql_server.port}") as client:
        client.submit_background("gm005_full", b"queued")
    with AdminClient(*gearsql_server.address, timeout=5) as server_admin:
        server_admin.maxqueue("gm005_full", 1)
    relay = Relay(installed, gearsql_server)
    try:
        assert _sqlstate_of(db, "SELECT gman_do('nobody_works_this', 'x')", "no result") == (
            "GM002"
        )
        assert _sqlstate_of(db, "SELECT gman_do('fail', 'x')", r"\(WORK_FAIL\)") == "GM003"
        assert _sqlstate_of(db, "SELECT gman_do('boom', 'x')", "kaboom") == "GM004"
        refused = "gman_do: the job server refused the job: QUEUE_ERROR Job queue is full$"
        assert _sqlstate_of(db, "SELECT gman_do('gm005_full', 'x')", refused) == "GM005"
    finally:
        relay.stop()

    class Nowhere:  # a job server address nothing listens on
        host, port = "127.0.0.1", free_port()

    relay = Relay(installed, Nowhere)  # type: ignore[arg-type]
    try:
        assert _sqlstate_of(db, "SELECT gman_do('reverse', 'x')", "cannot reach a job server") == (
            "GM001"
        )
    finally:
        relay.stop()
    assert _rows(admin, "SELECT id FROM gman_calls") == []


def test_a_killed_gman_do_leaves_nothing_behind(db: Any, admin: Any, relay: Relay) -> None:
    import mysql.connector

    connection_id = _one(db, "SELECT CONNECTION_ID()")

    def kill_when_waiting() -> None:
        for _ in range(200):
            # While a function runs, the process list shows its current statement.
            state = _one(
                admin,
                "SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = %s",
                (connection_id,),
            )
            if state == "User sleep":
                time.sleep(0.3)
                _execute(admin, f"KILL QUERY {int(connection_id)}")
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_waiting)
    killer.start()
    with pytest.raises(mysql.connector.Error, match="interrupted"):
        _execute(db, "SELECT gman_do('nobody_works_this', 'x')")  # timeout setting: 60 s
    killer.join()
    _execute(admin, "SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")
    assert _rows(admin, "SELECT id FROM gman_calls") == []
    _execute(admin, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    assert _one(db, "SELECT gman_do_background('f', 'after the kill')").startswith("outbox:")


def test_a_relay_account_with_only_the_granted_privileges_serves_calls(
    installed: str, db: Any, admin: Any, gearsql_server: ServerProcess, workers: Workers
) -> None:
    from urllib.parse import urlsplit, urlunsplit

    from gearsql.bridges.mysql import install

    relay_user, password = f"gsrelay_{secrets.token_hex(4)}", secrets.token_hex(8)
    _execute(admin, f"CREATE USER '{relay_user}'@'%' IDENTIFIED BY '{password}'")
    try:
        install(installed, relay_account=f"'{relay_user}'@'%'")
        parts = urlsplit(installed)
        relay_dsn = urlunsplit(
            (
                parts.scheme,
                f"{relay_user}:{password}@{parts.hostname}:{parts.port or 3306}",
                parts.path,
                "",
                "",
            )
        )
        relay = Relay(relay_dsn, gearsql_server)
        try:
            assert _one(db, "SELECT gman_do('reverse', 'relayed')") == b"deyaler"
        finally:
            relay.stop()
    finally:
        _execute(admin, f"DROP USER IF EXISTS '{relay_user}'@'%'")


def test_cli_install_and_uninstall_mysql(scratch_dsn: str) -> None:
    from click.testing import CliRunner

    from gearsql.cli import cli

    runner = CliRunner()
    printed = runner.invoke(cli, ["install", "mysql", "--print-sql", "--grant-to", "'app'@'%'"])
    assert printed.exit_code == 0, printed.output
    assert "GRANT EXECUTE ON FUNCTION gman_do_background TO 'app'@'%';" in printed.output
    assert "DELIMITER $$" in printed.output
    bad = runner.invoke(cli, ["install", "mysql", "--print-sql", "--grant-to", "a'; DROP"])
    assert bad.exit_code == 2 and "is not 'user'@'host'" in bad.output
    done = runner.invoke(cli, ["install", "mysql", "--dsn", scratch_dsn, "--timeout", "3"])
    assert done.exit_code == 0, done.output
    conn = _connect(scratch_dsn)
    assert _one(conn, "SELECT value FROM gman_settings WHERE name = 'timeout'") == "3"
    _one(conn, "SELECT gman_do_background('f', 'w')")
    refused = runner.invoke(cli, ["uninstall", "mysql", "--dsn", scratch_dsn])
    assert refused.exit_code == 1 and "still holds jobs not yet relayed" in refused.output
    forced = runner.invoke(cli, ["uninstall", "mysql", "--dsn", scratch_dsn, "--force"])
    assert forced.exit_code == 0, forced.output
    assert _objects(conn) == ([], [])
    conn.close()


def test_one_statement_with_30_calls_completes_and_does_not_hold_up_another_session(
    installed: str, db: Any, admin: Any, relay: Relay, workers: Workers
) -> None:
    # Each call of a statement keeps its finished rows locked until the statement ends; the
    # relay must neither wait for those locks (which made a statement of n calls cost about
    # n²/2 lock waits) nor make other sessions wait behind them.
    _set(admin, "timeout", "20")
    _execute(admin, "DROP TABLE IF EXISTS gman_test_words")
    _execute(admin, "CREATE TABLE gman_test_words (id INT PRIMARY KEY, v VARCHAR(20))")
    try:
        _execute(
            admin,
            "INSERT INTO gman_test_words VALUES "
            + ", ".join(f"({i}, 'word-{i}')" for i in range(30)),
        )
        other: dict[str, Any] = {}

        def other_session() -> None:
            conn = _connect(installed)
            try:
                # Once the long statement has finished calls that it still locks.
                deadline = time.monotonic() + 20
                while len(workers.seen) < 5 and time.monotonic() < deadline:
                    time.sleep(0.01)
                other["during"] = len(workers.seen) < 30
                started = time.monotonic()
                other["result"] = _one(conn, "SELECT gman_do('reverse', 'other')")
                other["seconds"] = time.monotonic() - started
            finally:
                conn.close()

        started = time.monotonic()
        thread = threading.Thread(target=other_session)
        thread.start()
        rows = _rows(db, "SELECT id, gman_do('record', v) FROM gman_test_words ORDER BY id")
        elapsed = time.monotonic() - started
        thread.join(30)
        assert rows == [(i, b"ok") for i in range(30)]
        assert sorted(data for _, _, data in workers.seen) == sorted(
            f"word-{i}".encode() for i in range(30)
        )
        assert other["result"] == b"rehto"
        print(
            f"30 calls in one SELECT: {elapsed:.2f} s; another session's call, made while "
            f"{'it ran' if other['during'] else 'it had ended'}: {other['seconds']:.2f} s"
        )
    finally:
        _execute(admin, "DROP TABLE IF EXISTS gman_test_words")


def test_a_workload_above_max_workload_is_an_error_and_leaves_no_row(db: Any, admin: Any) -> None:
    import mysql.connector

    _set(admin, "max_workload", "1000")
    try:
        _execute(db, "START TRANSACTION")
        _one(db, "SELECT gman_do_background('record', REPEAT('x', 1000))")
        with pytest.raises(
            mysql.connector.Error,
            match=r"gman_do_background_unique: the workload is 2000 bytes, more "
            r"than the max_workload setting \(1000 bytes\)",
        ):
            _one(db, "SELECT gman_do_background_unique('record', REPEAT('x', 2000), 'u')")
        db.rollback()
        with pytest.raises(mysql.connector.Error, match="more than the max_workload setting"):
            _one(db, "SELECT gman_do('reverse', REPEAT('x', 1001))")
        assert _outbox(admin) == []
    finally:
        _set(admin, "max_workload", "67107840")


def test_job_status_and_pipeline_of_outbox_rows(db: Any, admin: Any) -> None:
    import json

    import mysql.connector

    pending = _one(db, "SELECT gman_do_background('record', 'waits')")
    dead = _one(db, "SELECT gman_do_background('bigjob', 'refused')")
    dead_id = int(dead.split(":")[1])
    # What the relay does with a row no job server takes (tests/test_relay_dead_letters.py).
    _execute(
        admin,
        "INSERT INTO gman_outbox_dead (id, created_at, function, workload, "
        "priority, reason) SELECT id, created_at, function, workload, priority, "
        "'the job server refused it: ARGUMENT_TOO_LARGE' FROM gman_outbox WHERE id = %s",
        (dead_id,),
    )
    _execute(admin, "DELETE FROM gman_outbox WHERE id = %s", (dead_id,))
    try:
        status = json.loads(_one(db, "SELECT gman_job_status(%s)", (pending,)))
        assert status["state"] == "pending" and status["known"] is True
        assert status["detail"].startswith("in the outbox since")
        status = json.loads(_one(db, "SELECT gman_job_status(%s)", (dead,)))
        assert status["state"] == "dead" and "ARGUMENT_TOO_LARGE" in status["detail"]
        status = json.loads(_one(db, "SELECT gman_job_status('outbox:999999')"))
        assert status["state"] == "submitted" and status["known"] is False
        with pytest.raises(mysql.connector.Error, match="is not an outbox:<id> handle"):
            _one(db, "SELECT gman_job_status('H:host:1')")
        backlog, age, dead_count, _, reasons, contact = _rows(admin, "SELECT * FROM gman_pipeline")[
            0
        ]
        assert (backlog, dead_count) == (1, 1) and age >= 0
        assert reasons == f"{dead_id}: the job server refused it: ARGUMENT_TOO_LARGE"
        assert contact is None  # no relay has recorded its contact
    finally:
        _execute(admin, "DELETE FROM gman_outbox_dead")


def test_installing_again_adds_the_dead_letters_and_max_workload(
    installed: str, admin: Any
) -> None:
    from gearsql.bridges.mysql import install

    _execute(admin, "DROP VIEW gman_pipeline")
    _execute(admin, "DROP TABLE gman_outbox_dead")
    _execute(admin, "DELETE FROM gman_settings WHERE name = 'max_workload'")
    install(installed)
    assert _one(admin, "SELECT value FROM gman_settings WHERE name = 'max_workload'") == "67107840"
    assert _one(admin, "SELECT COUNT(*) FROM gman_outbox_dead") == 0
    assert _rows(admin, "SELECT backlog, dead FROM gman_pipeline") == [(0, 0)]


def test_an_older_install_gets_the_kinds_of_failure_and_a_relay_still_answers_it(
    installed: str, db: Any, admin: Any, gearsql_server: ServerProcess
) -> None:
    """gman_results.status of an install older than the kinds of failure: the relay records a
    plain error there (SQLSTATE 45000), and installing again adds them."""
    from conftest import free_port

    from gearsql.bridges.mysql import install

    old = "ENUM('complete','fail','exception','error') NOT NULL"
    _execute(admin, "DELETE FROM gman_results")  # results no caller took
    _execute(admin, f"ALTER TABLE gman_results MODIFY status {old}")

    class Nowhere:  # a job server address nothing listens on
        host, port = "127.0.0.1", free_port()

    _set(admin, "timeout", "5")
    relay = Relay(installed, Nowhere)  # type: ignore[arg-type]
    try:
        assert _sqlstate_of(db, "SELECT gman_do('reverse', 'x')", "cannot reach a job server") == (
            "45000"
        )
    finally:
        relay.stop()
    install(installed)
    column = _one(
        admin,
        "SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
        "AND TABLE_NAME = 'gman_results' AND COLUMN_NAME = 'status'",
    )
    assert "'timeout','unreachable','refused'" in column


def test_a_background_call_in_a_read_only_transaction_or_server_is_mariadbs_own_error(
    db: Any, admin: Any
) -> None:
    """MariaDB refuses the write when the calling statement locks gman_outbox, before
    gman_do_background's body runs, so no handler in it can word the error as PostgreSQL's
    (docs/reliability.md case 52): a read-only transaction is MariaDB's 25006 already, a
    read_only server its 1290. The server's read_only is set on a private MariaDB only."""
    import mysql.connector
    from relaying import private_mariadb

    from gearsql.bridges.mysql import install

    _execute(db, "START TRANSACTION READ ONLY")
    with pytest.raises(mysql.connector.Error, match="READ ONLY transaction") as caught:
        _execute(db, "SELECT gman_do_background('f', 'x')")
    db.rollback()
    assert (caught.value.errno, caught.value.sqlstate) == (1792, "25006")
    assert _outbox(admin) == []
    with private_mariadb("--log-bin-trust-function-creators=1") as dsn:
        root = _connect(dsn, autocommit=True)
        try:
            _execute(root, "CREATE USER 'app'@'%'")  # no SUPER, no READ_ONLY ADMIN
            install(dsn, grant_to=["'app'@'%'"])
            _execute(root, "SET GLOBAL read_only = 1")
            app = _connect(dsn.replace("root@", "app@"), autocommit=True)
            with pytest.raises(mysql.connector.Error, match="--read-only option") as caught:
                _execute(app, "SELECT gman_do_background('f', 'x')")
            app.close()
            assert (caught.value.errno, caught.value.sqlstate) == (1290, "HY000")
        finally:
            _execute(root, "SET GLOBAL read_only = 0")
            root.close()
