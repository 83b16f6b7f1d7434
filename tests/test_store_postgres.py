"""The PostgreSQL store's own promises, on a real server: faults (docs/reliability.md
cases 22, 23) and taking over a queue table that C gearmand created.

The shared behaviour of every store (a second server refused, a newer schema refused, a failed
commit, epochs after 2038) is in ``test_store_contract.py``; the database comes from
``GEARSQL_TEST_PG_DSN`` (see ``tests/databases.py``).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from conftest import free_port
from tcpproxy import TcpProxy

from gearsql.stores import StoredJob, StoreError, open_store
from gearsql.stores.postgres import SCHEMA_VERSION

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.pg

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def job(unique: bytes, function: bytes = b"fn", data: bytes = b"payload") -> StoredJob:
    return StoredJob(unique, function, 1, data, 0)


def with_params(dsn: str, **params: object) -> str:
    """``dsn`` with query parameters added (``table=...``, ``application_name=...``)."""
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return f"{dsn}{'&' if '?' in dsn else '?'}{query}"


@pytest.fixture
def admin(pg_dsn: str) -> Iterator[Any]:
    """A second connection to the test database, to look at and interfere with the store's."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def table() -> str:
    return f"queue_{secrets.token_hex(4)}"


def count_rows(admin: Any, table: str, unique: bytes) -> int:
    query = psycopg.sql.SQL("SELECT count(*) FROM {t} WHERE unique_bytes = %s").format(
        t=psycopg.sql.Identifier(table)
    )
    return int(admin.execute(query, (unique,)).fetchone()[0])


# -- docs/reliability.md case 23: a connection dropped mid-run


def test_a_terminated_backend_is_replaced_and_the_commit_retried(
    pg_dsn: str, admin: Any, table: str
) -> None:
    name = f"gearsql-test-{secrets.token_hex(4)}"
    url = with_params(pg_dsn, table=table, application_name=name)
    backends = "SELECT pid FROM pg_stat_activity WHERE application_name = %s"

    async def scenario() -> list[StoredJob]:
        store = open_store(url)
        await store.open()
        try:
            await store.commit([job(b"before")], [])
            [(pid,)] = admin.execute(backends, (name,)).fetchall()
            [(terminated,)] = admin.execute(
                "SELECT pg_terminate_backend(%s, 5000)", (pid,)
            ).fetchall()
            assert terminated
            await store.commit([job(b"after")], [])
            [(new_pid,)] = admin.execute(backends, (name,)).fetchall()
            assert new_pid != pid
            return await store.load()
        finally:
            await store.close()

    assert run(scenario()) == [job(b"before"), job(b"after")]
    assert count_rows(admin, table, b"after") == 1


def test_a_connection_that_cannot_be_reestablished_fails_the_commit_then_recovers(
    pg_dsn: str, tcp_proxy: Callable[[str], TcpProxy], table: str
) -> None:
    proxy = tcp_proxy(pg_dsn)
    url = with_params(proxy.dsn(pg_dsn), table=table)

    async def scenario() -> list[StoredJob]:
        store = open_store(url)
        await store.open()
        try:
            await store.commit([job(b"first")], [])
            proxy.cut()
            with pytest.raises(StoreError, match="connect"):
                await store.commit([job(b"lost")], [])
            # No restart needed: once the database is back, the next commit reconnects.
            proxy.restore()
            await store.commit([job(b"third")], [])
            return await store.load()
        finally:
            await store.close()

    assert run(scenario()) == [job(b"first"), job(b"third")]


# -- docs/reliability.md case 22: a database unreachable at start-up


def test_open_on_a_closed_port_raises_a_clear_store_error() -> None:
    store = open_store(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?table=q")

    async def scenario() -> None:
        try:
            with pytest.raises(StoreError) as raised:
                await store.open()
        finally:
            await store.close()
        message = str(raised.value)
        assert message.startswith("cannot connect to PostgreSQL postgres@127.0.0.1:")
        assert "refused" in message
        assert "\n" not in message

    run(scenario())


def test_open_on_a_server_that_never_answers_gives_up_at_the_connect_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never speaks
        port = silent.getsockname()[1]
        store = open_store(f"postgresql://postgres@127.0.0.1:{port}/postgres?connect_timeout=1")

        async def scenario() -> None:
            try:
                with pytest.raises(StoreError, match="cannot connect to PostgreSQL"):
                    await store.open()
            finally:
                await store.close()

        run(scenario())


# -- Taking over gearmand's table


def test_a_queue_gearmand_wrote_is_replayed_and_migrated(
    pg_dsn: str, admin: Any, table: str
) -> None:
    ident = psycopg.sql.Identifier(table)
    # The table and rows as gearmand's libpq queue creates and writes them (queue.cc).
    admin.execute(
        psycopg.sql.SQL(
            "CREATE TABLE {t} (unique_key VARCHAR(64), function_name VARCHAR(255),"
            " priority INTEGER, data BYTEA, when_to_run INTEGER,"
            " UNIQUE (unique_key, function_name))"
        ).format(t=ident)
    )
    insert = psycopg.sql.SQL(
        "INSERT INTO {t} (priority, unique_key, function_name, data, when_to_run)"
        " VALUES (%s, %s, %s, %s::BYTEA, %s)"
    ).format(t=ident)
    admin.execute(insert, (0, "first", "fünction", b"\x00one", 0))
    admin.execute(insert, (2, "second", "report-job with space", b"two", 1_900_000_000))
    url = with_params(pg_dsn, table=table)
    gearmand_rows = [
        StoredJob(b"first", "fünction".encode(), 0, b"\x00one", 0),
        StoredJob(b"second", b"report-job with space", 2, b"two", 1_900_000_000),
    ]
    odd = StoredJob(b"\x1egearsql:anon:1", b"\xff\xfe" * 256, 1, b"\x00", 2**40)

    async def scenario() -> list[StoredJob]:
        store = open_store(url)
        await store.open()
        try:
            assert await store.load() == gearmand_rows
            await store.commit([odd], [gearmand_rows[0]])
        finally:
            await store.close()
        store = open_store(url)
        await store.open()
        try:
            return await store.load()
        finally:
            await store.close()

    assert run(scenario()) == [gearmand_rows[1], odd]
    assert admin.execute(
        "SELECT version FROM gearsql_schema WHERE name = %s", (table,)
    ).fetchall() == [(SCHEMA_VERSION,)]
    # gearmand's columns still read as before where the value is text.
    rows = admin.execute(
        psycopg.sql.SQL("SELECT unique_key, function_name FROM {t} ORDER BY gearsql_seq").format(
            t=ident
        )
    ).fetchall()
    assert rows == [("second", "report-job with space"), ("\x1egearsql:anon:1", None)]
