"""One contract, every store: what gearsql's server may rely on, checked on the real thing.

Each test runs against the memory store, SQLite, PostgreSQL and MySQL/MariaDB (the last two
through the DSN variables of ``tests/databases.py``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from gearsql.stores import Store, StoredJob, StoreError, open_store

KINDS = ["memory", "sqlite", "postgresql", "mysql"]


@pytest.fixture(params=KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL with a table of this test's own."""
    table = f"queue_{secrets.token_hex(4)}"
    kind = request.param
    if kind == "memory":
        yield "memory"
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path}/queue.sqlite3?table={table}"
    elif kind == "postgresql":
        dsn = request.getfixturevalue("pg_dsn")
        yield f"{dsn}?table={table}"
    else:
        dsn = request.getfixturevalue("mysql_dsn")
        yield f"{dsn}?table={table}"


def durable(url: str) -> bool:
    return url != "memory"


async def opened(url: str) -> Store:
    store = open_store(url)
    await store.open()
    return store


async def reopen_and_load(url: str) -> list[StoredJob]:
    store = await opened(url)
    try:
        return await store.load()
    finally:
        await store.close()


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def job(unique: bytes, function: bytes = b"fn", data: bytes = b"payload", priority: int = 1,
        when: int = 0) -> StoredJob:
    return StoredJob(unique, function, priority, data, when)


def test_a_new_store_is_empty(store_url: str) -> None:
    assert run(reopen_and_load(store_url)) == []


def test_committed_jobs_survive_a_reopen_oldest_first(store_url: str) -> None:
    jobs = [
        job(b"a", priority=0), job(b"b", priority=1, when=1_900_000_000),
        job(b"c", function=b"other", priority=2),
    ]

    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit(jobs[:2], [])
        await store.commit(jobs[2:], [])
        await store.close()

    run(scenario())
    loaded = run(reopen_and_load(store_url))
    assert loaded == (jobs if durable(store_url) else [])


def test_same_unique_and_function_replaces_the_row(store_url: str) -> None:
    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit([job(b"u", data=b"old")], [])
        await store.commit([job(b"u", data=b"new")], [])
        await store.close()

    run(scenario())
    loaded = run(reopen_and_load(store_url))
    assert loaded == ([job(b"u", data=b"new")] if durable(store_url) else [])


def test_remove_deletes_by_unique_and_function_only(store_url: str) -> None:
    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit([job(b"u", function=b"f1"), job(b"u", function=b"f2")], [])
        await store.commit([], [job(b"u", function=b"f1"), job(b"missing")])
        await store.close()

    run(scenario())
    loaded = run(reopen_and_load(store_url))
    assert loaded == ([job(b"u", function=b"f2")] if durable(store_url) else [])


def test_add_and_remove_in_one_commit(store_url: str) -> None:
    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit([job(b"keep"), job(b"drop")], [])
        await store.commit([job(b"new")], [job(b"drop")])
        await store.close()

    run(scenario())
    loaded = {row.unique for row in run(reopen_and_load(store_url))}
    assert loaded == ({b"keep", b"new"} if durable(store_url) else set())


def test_any_bytes_round_trip_exactly(store_url: str) -> None:
    odd = [
        job(b"\xff\xfe-unique", function=b"\xff\xfe", data=b"\x00\x01\x02\x00"),
        job(b"with space", function=b"name with-hyphen and space", data=b""),
        job("ünïcødé".encode(), function="fünction".encode(), data="données".encode()),
        job(b"x'); DROP TABLE gearman_queue;--", function=b"f'; DELETE FROM t;--",
            data=b"'\"; --"),
    ]

    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit(odd, [])
        await store.close()

    run(scenario())
    if not durable(store_url):
        return
    assert sorted(run(reopen_and_load(store_url))) == sorted(odd)

    async def remove_all() -> None:
        store = await opened(store_url)
        await store.commit([], odd)
        await store.close()

    run(remove_all())
    assert run(reopen_and_load(store_url)) == []


def test_a_ten_megabyte_payload_round_trips(store_url: str) -> None:
    payload = secrets.token_bytes(10 * 1024 * 1024)

    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit([job(b"big", data=payload)], [])
        await store.close()

    run(scenario())
    loaded = run(reopen_and_load(store_url))
    if durable(store_url):
        assert len(loaded) == 1 and loaded[0].data == payload


def test_a_large_batch_commits_at_once(store_url: str) -> None:
    jobs = [job(b"u%d" % i, data=b"d%d" % i) for i in range(5000)]

    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit(jobs, [])
        await store.commit([], jobs[:2500])
        await store.close()

    run(scenario())
    loaded = run(reopen_and_load(store_url))
    assert loaded == (jobs[2500:] if durable(store_url) else [])


@pytest.mark.parametrize("table", ["bad;name", "x y", "1abc", "a" * 64, "t--"])
def test_table_names_must_be_plain_identifiers(store_url: str, table: str) -> None:
    if not durable(store_url):
        return
    base = store_url.split("?", 1)[0]
    with pytest.raises(ValueError, match="table"):
        open_store(f"{base}?table={table}")


def test_commit_on_a_closed_store_raises_store_error(store_url: str) -> None:
    if not durable(store_url):
        return

    async def scenario() -> None:
        store = await opened(store_url)
        await store.close()
        with pytest.raises(StoreError):
            await store.commit([job(b"late")], [])

    run(scenario())
