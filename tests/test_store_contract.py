"""One contract, every store: what gearsql's server may rely on, checked on the real thing.

Each test runs against the memory store, SQLite, PostgreSQL and MySQL/MariaDB (the last two
through the DSN variables of ``tests/databases.py``). A case that means nothing for a store (the
memory store keeps no table, takes no lock and cannot fail) is deselected for it with
``@pytest.mark.databases(...)``, never skipped or passed vacuously. Faults only a database server
has (lost connections, timeouts, its own limits) are in ``test_store_postgres.py`` and
``test_store_mysql.py``.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gearsql._cron import parse_cron
from gearsql.stores import (
    Changes,
    DeadLetter,
    MemoryStore,
    RememberedUnique,
    Store,
    StoredJob,
    StoredPolicy,
    StoredSchedule,
    StoredWindow,
    StoreError,
    open_store,
)

T = TypeVar("T")

KINDS = ["memory", "sqlite", "postgresql", "mysql"]
#: The stores that keep jobs: every case about what is kept runs on these only.
DURABLE = ("sqlite", "postgresql", "mysql")
durable_only = pytest.mark.databases(*DURABLE)


@pytest.fixture(params=KINDS)
def database(request: pytest.FixtureRequest) -> str:
    """Which store this run of the test is about (``databases(...)`` deselects by it)."""
    return str(request.param)


@pytest.fixture
def table() -> str:
    return f"queue_{secrets.token_hex(4)}"


@pytest.fixture
def store_url(database: str, table: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL with a table of this test's own."""
    if database == "memory":
        return "memory"
    if database == "sqlite":
        return f"sqlite:///{tmp_path}/queue.sqlite3?table={table}"
    dsn = request.getfixturevalue("pg_dsn" if database == "postgresql" else "mysql_dsn")
    return f"{dsn}?table={table}"


@pytest.fixture
def admin(database: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Runs SQL on the store's database beside the store, as an operator would."""

    def execute(sql: str) -> None:
        if database == "sqlite":
            conn = sqlite3.connect(tmp_path / "queue.sqlite3", isolation_level=None)
            try:
                conn.execute(sql)
            finally:
                conn.close()
        elif database == "postgresql":
            import psycopg

            with psycopg.connect(request.getfixturevalue("pg_dsn"), autocommit=True) as conn:
                conn.execute(sql.encode())
        else:
            import mysql.connector
            from databases import mysql_connect_args

            args = mysql_connect_args(request.getfixturevalue("mysql_dsn"))
            conn = mysql.connector.connect(**args, autocommit=True)
            try:
                cursor = conn.cursor()
                cursor.execute(sql)
                cursor.close()
            finally:
                conn.close()

    return execute


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


def test_a_new_store_is_empty(store_url: str) -> None:
    assert run(reopen_and_load(store_url)) == []


@pytest.mark.databases("memory")
def test_the_memory_store_accepts_commits_and_keeps_nothing(store_url: str) -> None:
    async def scenario() -> list[StoredJob]:
        store = await opened(store_url)
        try:
            await store.commit([job(b"a"), job(b"b")], [job(b"c")])
            return await store.load()
        finally:
            await store.close()

    assert isinstance(open_store(store_url), MemoryStore)
    assert not open_store(store_url).durable, "the server skips a store that keeps nothing"
    assert run(scenario()) == []
    assert run(reopen_and_load(store_url)) == []


@durable_only
def test_committed_jobs_survive_a_reopen_oldest_first(store_url: str) -> None:
    jobs = [
        job(b"a", priority=0),
        job(b"b", priority=1, when=1_900_000_000),
        job(b"c", function=b"other", priority=2),
    ]

    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit(jobs[:2], [])
        await store.commit(jobs[2:], [])
        await store.close()

    run(scenario())
    loaded = run(reopen_and_load(store_url))
    assert loaded == jobs


@durable_only
def test_a_commit_takes_one_changes_value(store_url: str) -> None:
    """``commit(Changes(...))`` is the commit; ``commit(add, remove, **fields)`` its short form."""

    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit(Changes(add=[job(b"a"), job(b"b")]))
        await store.commit(Changes(remove=[job(b"a")], policies=[StoredPolicy(b"f", 3, 1, 2)]))
        await store.commit(Changes())  # nothing to write: no error
        with pytest.raises(TypeError):
            await store.commit(Changes(), [job(b"b")])
        await store.close()

    run(scenario())
    assert run(reopen_and_load(store_url)) == [job(b"b")]


@durable_only
def test_same_unique_and_function_replaces_the_row(store_url: str) -> None:
    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit([job(b"u", data=b"old")], [])
        await store.commit([job(b"u", data=b"new")], [])
        await store.close()

    run(scenario())
    loaded = run(reopen_and_load(store_url))
    assert loaded == [job(b"u", data=b"new")]


@durable_only
def test_remove_deletes_by_unique_and_function_only(store_url: str) -> None:
    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit([job(b"u", function=b"f1"), job(b"u", function=b"f2")], [])
        await store.commit([], [job(b"u", function=b"f1"), job(b"missing")])
        await store.close()

    run(scenario())
    loaded = run(reopen_and_load(store_url))
    assert loaded == [job(b"u", function=b"f2")]


@durable_only
def test_add_and_remove_in_one_commit(store_url: str) -> None:
    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit([job(b"keep"), job(b"drop")], [])
        await store.commit([job(b"new")], [job(b"drop")])
        await store.close()

    run(scenario())
    loaded = {row.unique for row in run(reopen_and_load(store_url))}
    assert loaded == {b"keep", b"new"}


@durable_only
def test_any_bytes_round_trip_exactly(store_url: str) -> None:
    odd = [
        job(b"\xff\xfe-unique", function=b"\xff\xfe", data=b"\x00\x01\x02\x00"),
        job(b"with space", function=b"name with-hyphen and space", data=b""),
        job("ünïcødé".encode(), function="fünction".encode(), data="données".encode()),
        job(b"x'); DROP TABLE gearman_queue;--", function=b"f'; DELETE FROM t;--", data=b"'\"; --"),
    ]

    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit(odd, [])
        await store.close()

    run(scenario())
    assert sorted(run(reopen_and_load(store_url))) == sorted(odd)

    async def remove_all() -> None:
        store = await opened(store_url)
        await store.commit([], odd)
        await store.close()

    run(remove_all())
    assert run(reopen_and_load(store_url)) == []


@durable_only
def test_a_ten_megabyte_payload_round_trips(store_url: str) -> None:
    payload = secrets.token_bytes(10 * 1024 * 1024)

    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit([job(b"big", data=payload)], [])
        await store.close()

    run(scenario())
    loaded = run(reopen_and_load(store_url))
    assert len(loaded) == 1 and loaded[0].data == payload


@durable_only
def test_a_large_batch_commits_at_once(store_url: str) -> None:
    jobs = [job(b"u%d" % i, data=b"d%d" % i) for i in range(5000)]

    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit(jobs, [])
        await store.commit([], jobs[:2500])
        await store.close()

    run(scenario())
    loaded = run(reopen_and_load(store_url))
    assert loaded == jobs[2500:]


@durable_only
@pytest.mark.parametrize("bad_name", ["bad;name", "x y", "1abc", "a" * 64, "t--"])
def test_table_names_must_be_plain_identifiers(store_url: str, bad_name: str) -> None:
    base = store_url.split("?", 1)[0]
    with pytest.raises(ValueError, match="table"):
        open_store(f"{base}?table={bad_name}")


@durable_only
def test_commit_on_a_closed_store_raises_store_error(store_url: str) -> None:
    async def scenario() -> None:
        store = await opened(store_url)
        await store.close()
        with pytest.raises(StoreError):
            await store.commit([job(b"late")], [])

    run(scenario())


@durable_only
def test_epoch_times_after_2038_are_kept(store_url: str) -> None:
    late = [job(b"2106", when=2**32 + 1), job(b"far", when=2**40)]

    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit(late, [])
        await store.close()

    run(scenario())
    assert run(reopen_and_load(store_url)) == late


#: A trigger that fails any insert of the unique ``poison``: a commit that fails half-way, in
#: the database itself, after the rows before it in the same commit were written.
POISON = {
    "sqlite": [
        "CREATE TRIGGER poison_{t} BEFORE INSERT ON {t} WHEN NEW.unique_key = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION poison_{t}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.unique_bytes = 'poison'::bytea THEN RAISE EXCEPTION 'poisoned row'; END IF; "
        "RETURN NEW; END $$",
        "CREATE TRIGGER poison BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION poison_{t}()",
    ],
    "mysql": [
        "CREATE TRIGGER poison_{t} BEFORE INSERT ON `{t}` FOR EACH ROW "
        "IF NEW.unique_key = 'poison' THEN "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poisoned row'; END IF",
    ],
}


@durable_only
def test_a_failed_commit_stores_nothing_of_it_and_the_store_goes_on(
    store_url: str, database: str, table: str, admin: Any
) -> None:
    async def scenario() -> None:
        store = await opened(store_url)
        try:
            await store.commit([job(b"kept")], [])
            for statement in POISON[database]:
                admin(statement.format(t=table))
            with pytest.raises(StoreError, match="poisoned row"):
                await store.commit([job(b"new"), job(b"poison")], [job(b"kept")])
            await store.commit([job(b"later")], [])
        finally:
            await store.close()

    run(scenario())
    assert [row.unique for row in run(reopen_and_load(store_url))] == [b"kept", b"later"]


@durable_only
def test_a_table_of_a_newer_gearsql_is_refused(store_url: str, table: str, admin: Any) -> None:
    run(reopen_and_load(store_url))
    admin(f"UPDATE gearsql_schema SET version = 99 WHERE name = '{table}'")
    store = open_store(store_url)
    with pytest.raises(StoreError, match="schema version 99"):
        run(store.open())
    run(store.close())


@durable_only
def test_a_second_server_cannot_open_the_same_queue(store_url: str) -> None:
    """Two servers replaying one queue would run every job twice."""

    async def scenario() -> None:
        first = await opened(store_url)
        second = open_store(store_url)
        try:
            with pytest.raises(StoreError, match="in use by another gearsql server"):
                await second.open()
        finally:
            await second.close()
            await first.close()
        third = await opened(store_url)  # closing the first one released the queue
        await third.close()

    run(scenario())


# ------------------------------------------------------------------ retries and dead letters


def dead(
    id_: int, unique: bytes = b"u", function: bytes = b"fn", error: bytes = b"boom"
) -> DeadLetter:
    return DeadLetter(id_, function, unique, 1, b"payload \x00 bytes", 3, error, 1_765_000_000.25)


async def load_everything(
    url: str,
) -> tuple[list[StoredJob], list[DeadLetter], list[StoredPolicy]]:
    store = await opened(url)
    try:
        return await store.load(), await store.load_dead(), await store.load_policies()
    finally:
        await store.close()


@durable_only
def test_a_jobs_failures_and_last_error_survive_a_reopen(store_url: str) -> None:
    failed = job(b"u", when=1_900_000_000)._replace(retries=2, error=b"Trace\tback \x00\xff")

    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit([job(b"u")], [])
        await store.commit([failed], [])  # a retry rewrites the row
        await store.close()

    run(scenario())
    assert run(reopen_and_load(store_url)) == [failed]


@durable_only
def test_dead_letters_and_retry_policies_survive_a_reopen(store_url: str) -> None:
    letters = [dead(1), dead(2, unique=b"", function=b"\xff\xfe", error=b"worker lost")]
    policies = [StoredPolicy(b"fn", 5, 0.5, 60.0), StoredPolicy(b"\xff odd", 0, 1.0, 300.0)]

    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit([job(b"u")], [])
        # Burying: the queue row goes and the dead letter comes in one commit.
        await store.commit([], [job(b"u")], dead_add=letters, policies=policies)
        await store.close()

    run(scenario())
    jobs, letters_loaded, policies_loaded = run(load_everything(store_url))
    assert jobs == []
    assert letters_loaded == letters
    assert sorted(policies_loaded) == sorted(policies)

    async def purge() -> None:
        store = await opened(store_url)
        await store.commit(
            [job(b"again")],
            [],
            dead_remove=[1],
            policies=[StoredPolicy(b"fn", 2, 1.0, 2.0)],
            policies_removed=[b"\xff odd"],
        )
        await store.close()

    run(purge())
    jobs, letters_loaded, policies_loaded = run(load_everything(store_url))
    assert [row.unique for row in jobs] == [b"again"]
    assert letters_loaded == letters[1:]
    assert policies_loaded == [StoredPolicy(b"fn", 2, 1.0, 2.0)]


@durable_only
def test_dead_letters_are_kept_per_queue_table(store_url: str, database: str) -> None:
    other_url = store_url.replace("?table=", "?table=other_")

    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit([], [], dead_add=[dead(1)])
        await store.close()

    run(scenario())
    assert run(load_everything(other_url))[1] == []
    assert run(load_everything(store_url))[1] == [dead(1)]


@durable_only
def test_a_queue_from_schema_version_1_is_migrated_with_its_jobs(
    store_url: str, table: str, admin: Any
) -> None:
    """A queue an earlier gearsql kept (no failure columns) opens, keeps its jobs, and then
    stores failures."""

    async def first() -> None:
        store = await opened(store_url)
        await store.commit([job(b"old", data=b"kept")], [])
        await store.close()

    run(first())
    admin(f"ALTER TABLE {table} DROP COLUMN gearsql_retries")
    admin(f"ALTER TABLE {table} DROP COLUMN gearsql_error")
    admin(f"UPDATE gearsql_schema SET version = 1 WHERE name = '{table}'")
    assert run(reopen_and_load(store_url)) == [job(b"old", data=b"kept")]
    failed = job(b"old", data=b"kept")._replace(retries=1, error=b"failed")

    async def later() -> None:
        store = await opened(store_url)
        await store.commit([failed], [], dead_add=[dead(7)])
        await store.close()

    run(later())
    jobs, letters, _ = run(load_everything(store_url))
    assert (jobs, letters) == ([failed], [dead(7)])


@pytest.mark.databases("memory")
def test_the_memory_store_keeps_no_dead_letters_or_policies(store_url: str) -> None:
    async def scenario() -> tuple[list[DeadLetter], list[StoredPolicy]]:
        store = await opened(store_url)
        try:
            await store.commit(
                [], [], dead_add=[dead(1)], policies=[StoredPolicy(b"fn", 3, 1.0, 2.0)]
            )
            return await store.load_dead(), await store.load_policies()
        finally:
            await store.close()

    assert run(scenario()) == ([], [])


async def load_uniques(url: str) -> tuple[list[RememberedUnique], list[StoredWindow]]:
    store = await opened(url)
    try:
        return await store.load_remembered(), await store.load_windows()
    finally:
        await store.close()


@durable_only
def test_remembered_uniques_and_unique_windows_survive_a_reopen_and_expire(
    store_url: str,
) -> None:
    remembered = [
        RememberedUnique(b"fn", b"u-1", 1_765_000_010.5, b"result \x00\xff"),
        RememberedUnique(b"\xff fn", b"u-2", 1_765_000_020.0, b""),
    ]

    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit([job(b"u-1")], [])
        # A completion under a unique window: the queue row goes, the unique is remembered,
        # in one commit.
        await store.commit(
            [],
            [job(b"u-1")],
            remembered=remembered,
            windows=[StoredWindow(b"fn", 60.0), StoredWindow(b"other", 0.0)],
        )
        await store.close()

    run(scenario())
    assert run(load_everything(store_url))[0] == []
    loaded, windows = run(load_uniques(store_url))
    assert sorted(loaded) == sorted(remembered)
    assert sorted(windows) == [StoredWindow(b"fn", 60.0), StoredWindow(b"other", 0.0)]

    async def later() -> None:
        store = await opened(store_url)
        await store.commit(
            [],
            [],
            remembered_expired=1_765_000_015.0,
            remembered=[RememberedUnique(b"fn", b"u-3", 1_765_000_030.0, b"r")],
            windows=[StoredWindow(b"fn", 5.0)],
            windows_removed=[b"other"],
        )
        # Remembering a unique again replaces its row.
        await store.commit(
            [], [], remembered=[RememberedUnique(b"fn", b"u-3", 1_765_000_040.0, b"r2")]
        )
        await store.close()

    run(later())
    loaded, windows = run(load_uniques(store_url))
    assert sorted(loaded) == [
        RememberedUnique(b"fn", b"u-3", 1_765_000_040.0, b"r2"),
        remembered[1],
    ]
    assert windows == [StoredWindow(b"fn", 5.0)]


@pytest.mark.databases("memory")
def test_the_memory_store_remembers_no_uniques(store_url: str) -> None:
    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit(
            [],
            [],
            remembered=[RememberedUnique(b"fn", b"u", 1.0, b"")],
            windows=[StoredWindow(b"fn", 1.0)],
        )
        await store.close()

    run(scenario())
    assert run(load_uniques(store_url)) == ([], [])


@durable_only
def test_schedules_survive_a_reopen_and_their_next_tick_is_rewritten(store_url: str) -> None:
    nightly = StoredSchedule(b"nightly", b"report", "0 3 * * *", b"all \x00 bytes", 1_765_000_000)
    odd = StoredSchedule(b"\xff odd", b"fn", "*/5 * * * *", b"", 1_765_000_300)
    # The catch-up mode is part of the spec's text (gearsql._cron): no column of its own.
    hourly = StoredSchedule(b"hourly", b"tidy", "0 * * * * catch-up=all", b"", 1_765_000_000)

    async def scenario() -> None:
        store = await opened(store_url)
        await store.commit([], [], schedules=[nightly, odd, hourly])
        # A tick: its job and the schedule's next tick in one commit.
        await store.commit(
            [job(b"nightly@1765000000")], [], schedules=[nightly._replace(due=1_765_086_400)]
        )
        await store.commit([], [], schedules_removed=[b"\xff odd"])
        await store.close()

    async def load() -> list[StoredSchedule]:
        store = await opened(store_url)
        try:
            return await store.load_schedules()
        finally:
            await store.close()

    run(scenario())
    assert run(load()) == [hourly, nightly._replace(due=1_765_086_400)]
    assert parse_cron(hourly.spec).catch_up == "all"
    assert [row.unique for row in run(load_everything(store_url))[0]] == [b"nightly@1765000000"]
