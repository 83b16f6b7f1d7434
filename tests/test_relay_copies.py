"""A restored copy of a database does not resubmit its original's pending jobs, and a
read-only database refuses a background call clearly (docs/reliability.md case 52): real
PostgreSQL copies (``CREATE DATABASE ... TEMPLATE``, a new database with another oid) and
real ``gearsql relay`` processes."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import ServerProcess, need_tool
from relaying import (
    Postgres,
    Recorder,
    Relays,
    enqueue_all,
    eventually,
    gearsql_command,
    relays_only_new_rows,
    start_refused,
)

pytestmark = pytest.mark.pg
psycopg = pytest.importorskip("psycopg")


def _admin_dsn(dsn: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, parts.fragment))


@pytest.fixture
def original() -> Iterator[Postgres]:
    from databases import postgres_database

    with postgres_database() as dsn:
        yield Postgres(dsn)


@pytest.fixture
def copy_of() -> Iterator[Callable[..., Postgres]]:
    """Makes real copies of a database (CREATE DATABASE ... TEMPLATE); dropped at the end."""
    made: list[str] = []
    admin_dsn = _admin_dsn(os.environ.get("GEARSQL_TEST_PG_DSN", ""))

    def copy(db: Postgres, template: bool = True) -> Postgres:
        """A copy of ``db`` (``template`` False: an empty database, to restore a dump into)."""
        name = f"gearsql_copy_{os.getpid()}_{secrets.token_hex(3)}"
        source = urlsplit(db.dsn).path.lstrip("/")
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(
                f'CREATE DATABASE "{name}" TEMPLATE "{source}"'
                if template
                else f'CREATE DATABASE "{name}" TEMPLATE template0'
            )
        made.append(name)
        parts = urlsplit(db.dsn)
        copied = Postgres.__new__(Postgres)  # no install: the copy has the original's
        copied.dsn = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))
        return copied

    yield copy
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        for name in made:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_a_copy_with_pending_rows_refuses_until_adopted_then_submits_them(
    original: Postgres,
    copy_of: Callable[..., Postgres],
    relays: Relays,
    gearsql_server: ServerProcess,
    tmp_path: Path,
) -> None:
    enqueue_all(original, "one", "two")
    copy = copy_of(original)
    log = start_refused(relays, copy)
    assert "looks like a copy" in log and "2 pending outbox row(s)" in log, log
    assert f"gearsql relay adopt --dsn {copy.dsn}" in log, log
    assert "Traceback" not in log
    assert copy.outbox() == 2  # nothing was submitted
    # With a log file, the log says so too.
    logged = tmp_path / "relay-file.log"
    stopped = gearsql_command("relay", "--dsn", copy.dsn, "--log-file", str(logged))
    assert stopped.returncode == 2
    assert stopped.stderr.startswith("gearsql: this is database ")
    assert "ERROR stopped: this is database " in logged.read_text()
    adopted = gearsql_command("relay", "adopt", "--dsn", copy.dsn)
    assert adopted.returncode == 0, adopted.stderr
    assert "2 row(s) left for the relay to submit" in adopted.stdout
    recorder = Recorder(gearsql_server)
    try:
        relays.start(copy)
        recorder.wait_seen(2)
        eventually(lambda: copy.outbox() == 0, what="an empty outbox")
        assert sorted(recorder.data()) == [b"one", b"two"]
    finally:
        recorder.stop()
    # The original is still its own: its relay goes at once.
    relays.start(original)
    eventually(lambda: original.outbox() == 0, what="the original's empty outbox")


def test_a_dump_restored_into_another_database_refuses_too(
    original: Postgres,
    copy_of: Callable[..., Postgres],
    relays: Relays,
    tmp_path: Path,
) -> None:
    need_tool("pg_dump")
    enqueue_all(original, "dumped")
    dump = tmp_path / "app.dump"
    subprocess.run(["pg_dump", "-Fc", "-f", str(dump), original.dsn], check=True, timeout=120)
    restored = copy_of(original, template=False)
    subprocess.run(
        ["pg_restore", "--no-owner", "-d", restored.dsn, str(dump)], check=True, timeout=120
    )
    assert restored.outbox() == 1
    log = start_refused(relays, restored)
    assert "looks like a copy" in log and "1 pending outbox row(s)" in log, log
    assert restored.outbox() == 1


def test_adopt_discard_moves_the_pending_rows_to_the_dead_letters(
    original: Postgres,
    copy_of: Callable[..., Postgres],
    relays: Relays,
    gearsql_server: ServerProcess,
) -> None:
    enqueue_all(original, "old-1", "old-2", "old-3")
    copy = copy_of(original)
    start_refused(relays, copy)
    adopted = gearsql_command("relay", "adopt", "--dsn", copy.dsn, "--discard")
    assert adopted.returncode == 0, adopted.stderr
    assert "moved 3 outbox row(s) to gman_outbox_dead" in adopted.stdout
    assert copy.outbox() == 0
    dead = copy.dead()
    assert len(dead) == 3
    assert all(
        reason.startswith("discarded: database copied from database ") for *_, reason in dead
    )
    relays_only_new_rows(copy, relays, gearsql_server)


def test_a_copy_with_an_empty_outbox_and_an_install_without_a_record_just_go(
    original: Postgres,
    copy_of: Callable[..., Postgres],
    relays: Relays,
    gearsql_server: ServerProcess,
) -> None:
    copy = copy_of(original)
    relay = relays.start(copy)
    relay.wait_log("a copy of database ")
    relay.wait_log("with an empty outbox: recorded it as the outbox's database")
    # An install older than gman_origin's row: the relay records the database and goes.
    conn = original.connect()
    try:
        conn.execute("DELETE FROM gearsql.gman_origin")
    finally:
        conn.close()
    enqueue_all(original, "kept")
    recorder = Recorder(gearsql_server)
    try:
        relay = relays.start(original)
        relay.wait_log("recorded the outbox's database: database ")
        recorder.wait_seen(1)
    finally:
        recorder.stop()
    conn = original.connect()
    try:
        assert conn.execute("SELECT count(*) FROM gearsql.gman_origin").fetchone()[0] == 1
    finally:
        conn.close()


def test_adopt_refuses_a_database_without_the_outbox_and_a_dsn_of_no_known_database() -> None:
    from databases import postgres_database

    with postgres_database() as dsn:
        missing = gearsql_command("relay", "adopt", "--dsn", dsn)
    assert missing.returncode == 2, missing
    assert missing.stderr.startswith("gearsql: ") and "does not exist" in missing.stderr
    assert missing.stderr.count("\n") == 1
    other = gearsql_command("relay", "adopt", "--dsn", "redis://localhost/0")
    assert other.returncode == 2
    assert other.stderr.startswith("gearsql: unknown database 'redis://localhost/0': use ")


def test_a_background_call_in_a_read_only_database_says_so(original: Postgres) -> None:
    conn = original.connect()
    try:
        conn.execute("SET default_transaction_read_only = on")
        with pytest.raises(psycopg.Error) as raised:
            conn.execute("SELECT gearsql.gman_do_background('record', 'x')")
        assert raised.value.sqlstate == "25006"
        message = str(raised.value)
        assert "gman_do_background: this database is read-only (a replica?)" in message
        assert raised.value.diag.message_hint == (
            "call it on the primary (or in a read-write transaction)"
        )
    finally:
        conn.close()
    assert original.outbox() == 0
