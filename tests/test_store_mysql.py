"""The MySQL/MariaDB store on a real server: faults, limits, layout, gearmand's own table.

The contract every store keeps (a second server refused, a newer schema refused, a failed commit,
epochs after 2038) is in ``test_store_contract.py``; these tests cover what only a
database server has: unreachable servers, connections killed or cut mid-run (through a real TCP
proxy), ``max_allowed_packet``, byte-exact keys, the schema migration and C gearmand itself.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from databases import mysql_connect_args
from tcpproxy import TcpProxy

from gearsql.stores import StoredJob, StoreError, open_store

mysql_connector = pytest.importorskip("mysql.connector")

from gearsql.stores.mysql import SCHEMA_VERSION, MySQLStore  # noqa: E402 (needs the driver)

pytestmark = pytest.mark.mysql
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def job(
    unique: bytes,
    function: bytes = b"fn",
    data: bytes = b"payload",
    priority: int = 1,
    when: int = 0,
) -> StoredJob:
    return StoredJob(unique, function, priority, data, when)


@pytest.fixture
def table() -> str:
    return f"queue_{secrets.token_hex(4)}"


@pytest.fixture
def url(mysql_dsn: str, table: str) -> str:
    return f"{mysql_dsn}?table={table}"


@pytest.fixture
def admin(mysql_dsn: str) -> Iterator[Any]:
    """A connection of the test's own to the test database (to look, kill and set up)."""
    conn = mysql_connector.connect(**mysql_connect_args(mysql_dsn), autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


def query(admin: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    cursor = admin.cursor()
    cursor.execute(sql, params)
    rows = cursor.fetchall() if cursor.with_rows else []
    cursor.close()
    return [tuple(row) for row in rows]


async def opened(url: str) -> MySQLStore:
    store = open_store(url)
    assert isinstance(store, MySQLStore)
    await store.open()
    return store


async def reopen_and_load(url: str) -> list[StoredJob]:
    store = await opened(url)
    try:
        return await store.load()
    finally:
        await store.close()


def via_port(url: str, port: int, options: str = "") -> str:
    """``url`` pointed at another port on 127.0.0.1 (a proxy or a dead port)."""
    parts = urlsplit(url)
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return f"mysql://{credentials}127.0.0.1:{port}{parts.path}?{parts.query}{options}"


# -- faults at start-up (docs/reliability.md case 22)


def test_opening_a_dead_port_fails_with_a_clear_message(url: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    store = open_store(via_port(url, port))
    with pytest.raises(StoreError, match=rf"cannot connect to MySQL at 127\.0\.0\.1:{port}"):
        run(store.open())
    run(store.close())


def test_a_server_that_never_answers_fails_open_at_the_connect_timeout(url: str) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never sends a handshake
    try:
        store = open_store(via_port(url, silent.getsockname()[1], "&connect_timeout=1"))

        async def scenario() -> None:
            # The guard only keeps a broken timeout from hanging the suite.
            await asyncio.wait_for(store.open(), 30)

        with pytest.raises(StoreError, match="no answer within 1 s"):
            run(scenario())
        run(store.close())
    finally:
        silent.close()


def test_a_wrong_password_fails_open_with_the_server_reason(mysql_dsn: str, table: str) -> None:
    parts = urlsplit(mysql_dsn)
    user, address = parts.username or "root", parts.netloc.split("@")[-1]
    bad = f"mysql://{user}:wrong-{secrets.token_hex(4)}@{address}{parts.path}"
    store = open_store(f"{bad}?table={table}")
    with pytest.raises(StoreError, match="Access denied"):
        run(store.open())
    run(store.close())
    assert "wrong-" not in store.description, "the password must not be shown"


def test_a_missing_database_fails_open_with_the_server_reason(mysql_dsn: str) -> None:
    parts = urlsplit(mysql_dsn)
    store = open_store(f"mysql://{parts.netloc}/gearsql_no_such_db_{secrets.token_hex(3)}")
    with pytest.raises(StoreError, match="Unknown database"):
        run(store.open())
    run(store.close())


def test_urls_without_a_database_or_with_unknown_options_are_refused(mysql_dsn: str) -> None:
    base = mysql_dsn.rsplit("/", 1)[0]
    with pytest.raises(ValueError, match="needs a database"):
        open_store(f"{base}/")
    with pytest.raises(ValueError, match="unknown MySQL store option"):
        open_store(f"{mysql_dsn}?tabel=typo")


# -- faults mid-run (docs/reliability.md case 23)


def test_a_killed_connection_is_reestablished_and_the_commit_retried(url: str, admin: Any) -> None:
    async def scenario() -> tuple[int | None, int | None]:
        store = await opened(url)
        try:
            await store.commit([job(b"before")], [])
            killed = store.connection_id
            query(admin, f"KILL CONNECTION {killed}")
            await store.commit([job(b"after")], [])
            return killed, store.connection_id
        finally:
            await store.close()

    killed, now = run(scenario())
    assert now is not None and now != killed
    assert [row.unique for row in run(reopen_and_load(url))] == [b"before", b"after"]


def test_a_load_after_the_connection_was_killed_reconnects(url: str, admin: Any) -> None:
    async def scenario() -> list[StoredJob]:
        store = await opened(url)
        try:
            await store.commit([job(b"one")], [])
            query(admin, f"KILL CONNECTION {store.connection_id}")
            return await store.load()
        finally:
            await store.close()

    assert run(scenario()) == [job(b"one")]


def test_a_connection_ended_by_wait_timeout_is_reestablished(url: str, admin: Any) -> None:
    async def scenario() -> None:
        store = await opened(url)
        try:
            # The store's own session gets a one-second wait_timeout; the global is untouched.
            def shorten(cursor: Any) -> None:
                cursor.execute("SET SESSION wait_timeout = 1")

            await store._run(store._operate, "test", shorten)
            first = store.connection_id
            deadline = time.monotonic() + 30
            while first in {row[0] for row in query(admin, "SHOW PROCESSLIST")}:
                assert time.monotonic() < deadline, "the server never ended the idle session"
                await asyncio.sleep(0.05)
            await store.commit([job(b"after the timeout")], [])
            assert store.connection_id != first
        finally:
            await store.close()

    run(scenario())
    assert run(reopen_and_load(url)) == [job(b"after the timeout")]


def test_a_connection_that_cannot_be_restored_fails_after_one_attempt(
    url: str, mysql_dsn: str, tcp_proxy: Callable[[str], TcpProxy]
) -> None:
    proxy = tcp_proxy(mysql_dsn)
    proxied = via_port(url, proxy.port)

    async def scenario() -> None:
        store = await opened(proxied)
        try:
            await store.commit([job(b"a")], [])
            proxy.cut(refuse=True)
            attempts = proxy.accepted
            with pytest.raises(StoreError, match="cannot connect to MySQL"):
                await store.commit([job(b"b")], [])
            assert proxy.accepted == attempts + 1, "exactly one reconnect, no loop"
            with pytest.raises(StoreError):
                await store.commit([job(b"b")], [])
            assert proxy.accepted == attempts + 2
            proxy.restore()  # the server is back: no restart needed
            await store.commit([job(b"c")], [])
        finally:
            await store.close()

    run(scenario())
    assert [row.unique for row in run(reopen_and_load(url))] == [b"a", b"c"]


def test_a_partitioned_connection_times_out_and_its_lock_is_taken_back(
    url: str, mysql_dsn: str, tcp_proxy: Callable[[str], TcpProxy], admin: Any
) -> None:
    proxy = tcp_proxy(mysql_dsn)
    proxied = via_port(url, proxy.port, "&timeout=2")

    async def scenario() -> None:
        store = await opened(proxied)
        try:
            await store.commit([job(b"a")], [])
            stale = store.connection_id
            proxy.freeze()  # the server still sees that session, holding the store's lock
            with pytest.raises(StoreError, match=r"MySQL commit failed .*: no answer within 2 s"):
                await store.commit([job(b"b")], [])
            await store.commit([job(b"c")], [])
            alive = {row[0] for row in query(admin, "SHOW PROCESSLIST")}
            assert stale not in alive, "the stale session was ended"
        finally:
            await store.close()

    run(scenario())
    assert [row.unique for row in run(reopen_and_load(url))] == [b"a", b"c"]


# -- max_allowed_packet (docs/reliability.md case 35)


def max_allowed_packet(admin: Any) -> int:
    limit = int(query(admin, "SELECT @@global.max_allowed_packet")[0][0])
    if limit > 64 * 1024 * 1024:
        pytest.skip(f"max_allowed_packet is {limit} bytes; a job over it is too big to test")
    return limit


def test_a_job_over_max_allowed_packet_is_refused_before_sending(url: str, admin: Any) -> None:
    limit = max_allowed_packet(admin)

    async def scenario() -> None:
        store = await opened(url)
        try:
            connection = store.connection_id
            with pytest.raises(StoreError, match=f"max_allowed_packet \\({limit} bytes\\)"):
                await store.commit([job(b"small"), job(b"huge", data=b"x" * (limit + 1))], [])
            assert store.connection_id == connection, "nothing was sent; the connection stays"
            await store.commit([job(b"next")], [])
        finally:
            await store.close()

    run(scenario())
    assert run(reopen_and_load(url)) == [job(b"next")]


def test_a_packet_the_server_refuses_is_an_error_and_the_next_job_works(
    url: str, admin: Any
) -> None:
    limit = max_allowed_packet(admin)

    async def scenario() -> None:
        store = await opened(url)
        try:
            store._max_packet = 1 << 30  # as if the store believed the server took more
            with pytest.raises(StoreError):
                await store.commit([job(b"huge", data=secrets.token_bytes(limit + 1))], [])
            await store.commit([job(b"next")], [])
        finally:
            await store.close()

    run(scenario())
    assert run(reopen_and_load(url)) == [job(b"next")]


def test_a_batch_larger_than_max_allowed_packet_is_split(url: str, admin: Any) -> None:
    limit = max_allowed_packet(admin)
    size = limit // 3
    jobs = [job(b"j%d" % i, data=secrets.token_bytes(size)) for i in range(5)]

    async def scenario() -> None:
        store = await opened(url)
        try:
            await store.commit(jobs, [])
            await store.commit([], jobs)
        finally:
            await store.close()

    run(scenario())
    assert run(reopen_and_load(url)) == []


# -- strict mode, byte-exact keys


def test_a_unique_over_64_bytes_is_refused_never_cut(url: str) -> None:
    """Strict SQL mode: gearmand's VARBINARY(64) would otherwise keep the first 64 bytes, and
    two uniques would become one job."""

    async def scenario() -> None:
        store = await opened(url)
        try:
            with pytest.raises(StoreError, match="too long"):
                await store.commit([job(b"u" * 65)], [])
            await store.commit([job(b"u" * 64)], [])  # the connection is still usable
        finally:
            await store.close()

    run(scenario())
    assert run(reopen_and_load(url)) == [job(b"u" * 64)]


def test_keys_are_compared_byte_for_byte(url: str) -> None:
    jobs = [
        job(b"A"),
        job(b"a"),
        job(b"a "),
        job("é".encode()),
        job(b"e"),
        job(b"same", function=b"F"),
        job(b"same", function=b"f"),
        job(b"long", function=b"\xff" * 512),
        job(b"\x1egearsql:0123456789ab:7", data=b"anonymous"),
        job(b"\x1egearsql:-0123456789ab:8", data=b"anonymous by payload"),
        job(b"u" * 64, function=b"\x00\x01 nul and space"),
    ]

    async def scenario() -> None:
        store = await opened(url)
        try:
            await store.commit(jobs, [])
            await store.commit([], [job(b"a"), job(b"same", function=b"f")])
        finally:
            await store.close()

    run(scenario())
    removed = {job(b"a"), job(b"same", function=b"f")}
    assert run(reopen_and_load(url)) == [row for row in jobs if row not in removed]


# -- layout, migration

GEARMAND_CREATE = (
    "CREATE TABLE `{table}` (unique_key VARCHAR(64), function_name VARCHAR(255), priority INT, "
    "data LONGBLOB, when_to_run INT, unique key (unique_key, function_name))"
)
LIBDRIZZLE_CREATE = (
    "CREATE TABLE `{table}` (unique_key VARCHAR(64) PRIMARY KEY, function_name VARCHAR(255), "
    "priority INT, data LONGBLOB)"
)


def columns(admin: Any, table: str) -> dict[str, str]:
    return {
        str(row[0]): str(row[1]).lower() for row in query(admin, f"SHOW COLUMNS FROM `{table}`")
    }


def schema_version(admin: Any, table: str) -> int:
    return int(query(admin, "SELECT version FROM gearsql_schema WHERE name = %s", (table,))[0][0])


def test_a_new_table_has_the_documented_layout(url: str, table: str, admin: Any) -> None:
    run(reopen_and_load(url))
    found = columns(admin, table)
    assert found["unique_key"] == "varbinary(64)"
    assert found["function_name"] == "varbinary(512)"
    assert found["data"] == "longblob"
    assert found["when_to_run"].startswith("bigint")
    assert found["priority"].startswith("int")
    assert found["id"].startswith("bigint")
    assert found["gearsql_retries"].startswith("int")
    assert schema_version(admin, table) == SCHEMA_VERSION == 3
    created = query(admin, f"SHOW CREATE TABLE `{table}`")[0][1]
    run(reopen_and_load(url))
    again = query(admin, f"SHOW CREATE TABLE `{table}`")[0][1]
    assert again == created, "reopening changes nothing"


def test_a_table_gearmand_created_is_taken_over(url: str, table: str, admin: Any) -> None:
    query(admin, GEARMAND_CREATE.format(table=table))
    rows = [
        ("zeta", "reverse", 2, b"low", 0),
        ("alpha", "reverse", 0, b"high \x00 payload", 0),
        ("fünf", "fünction", 1, b"utf-8 names", 1_900_000_000),
    ]
    for row in rows:  # as gearmand's prepared INSERT does, one by one
        query(
            admin,
            f"INSERT INTO `{table}` (unique_key, function_name, priority, data, when_to_run) "
            "VALUES (%s, %s, %s, %s, %s)",
            row,
        )
    loaded = run(reopen_and_load(url))
    assert loaded == [
        job(u.encode(), f.encode(), priority=p, data=d, when=w) for u, f, p, d, w in rows
    ], "all rows, oldest first, bytes as gearmand wrote them"
    assert columns(admin, table)["unique_key"] == "varbinary(64)"
    assert schema_version(admin, table) == SCHEMA_VERSION

    async def more() -> None:
        store = await opened(url)
        await store.commit([job(b"ALPHA", b"reverse"), job(b"\xff", b"\xfe")], [])
        await store.close()

    run(more())
    assert [row.unique for row in run(reopen_and_load(url))] == [
        b"zeta",
        b"alpha",
        "fünf".encode(),
        b"ALPHA",
        b"\xff",
    ]


def test_a_libdrizzle_table_without_when_to_run_is_taken_over(
    url: str, table: str, admin: Any
) -> None:
    query(admin, LIBDRIZZLE_CREATE.format(table=table))
    query(
        admin,
        f"INSERT INTO `{table}` (unique_key, function_name, priority, data) "
        "VALUES ('old', 'fn', 1, 'payload')",
    )

    async def scenario() -> None:
        store = await opened(url)
        # The old primary key on unique_key alone would make these two collide.
        await store.commit([job(b"old", function=b"other")], [])
        await store.close()

    run(scenario())
    assert run(reopen_and_load(url)) == [job(b"old"), job(b"old", function=b"other")]


# -- C gearmand on the same table


@pytest.mark.interop
def test_c_gearmand_and_gearsql_share_the_mysql_queue_both_ways(
    mysql_dsn: str, url: str, table: str, admin: Any, tmp_path: Path
) -> None:
    from conftest import ServerProcess, need_tool
    from wire import Peer

    from gearsql.protocol import PacketType as P

    need_tool("gearmand")
    args = mysql_connect_args(mysql_dsn)
    queue = [
        "-q",
        "mysql",
        "--mysql-host",
        str(args["host"]),
        "--mysql-port",
        str(args["port"]),
        "--mysql-user",
        str(args["user"]),
        "--mysql-db",
        str(args["database"]),
        "--mysql-table",
        table,
    ]
    if args["password"]:
        queue += ["--mysql-password", str(args["password"])]

    gearmand = ServerProcess("gearmand", tmp_path / "gearmand-1.log", queue).start()
    try:
        with Peer(gearmand.address) as client:
            for unique, kind in ((b"first", P.SUBMIT_JOB_LOW_BG), (b"second", P.SUBMIT_JOB_BG)):
                client.send(kind, b"shared", unique, b"from gearmand " + unique)
                client.expect(P.JOB_CREATED)
    finally:
        gearmand.stop()

    assert run(reopen_and_load(url)) == [
        job(b"first", b"shared", priority=2, data=b"from gearmand first"),
        job(b"second", b"shared", priority=1, data=b"from gearmand second"),
    ]

    async def add_one() -> None:
        store = await opened(url)
        await store.commit([job(b"third", b"shared", data=b"from gearsql")], [])
        await store.close()

    run(add_one())

    # gearmand still reads and writes the table gearsql migrated.
    gearmand = ServerProcess("gearmand", tmp_path / "gearmand-2.log", queue).start()
    try:
        with Peer(gearmand.address) as client:
            client.send(P.SUBMIT_JOB_BG, b"shared", b"fourth", b"after the migration")
            client.expect(P.JOB_CREATED)
        with Peer(gearmand.address) as worker:
            worker.send(P.CAN_DO, b"shared")
            seen = set()
            for _ in range(4):
                worker.send(P.GRAB_JOB_UNIQ)
                handle, _function, unique, data = worker.expect(P.JOB_ASSIGN_UNIQ).args
                seen.add((unique, data))
                worker.send(P.WORK_COMPLETE, handle, b"")
        assert seen == {
            (b"first", b"from gearmand first"),
            (b"second", b"from gearmand second"),
            (b"third", b"from gearsql"),
            (b"fourth", b"after the migration"),
        }
        deadline = time.monotonic() + 5
        while query(admin, f"SELECT COUNT(*) FROM `{table}`")[0][0] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        gearmand.stop()
    assert run(reopen_and_load(url)) == []
