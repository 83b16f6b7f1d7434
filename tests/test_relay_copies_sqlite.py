"""A copied SQLite file does not resubmit its original's pending jobs (docs/reliability.md case
52): real files copied as people copy them (``cp``, the backup API, ``VACUUM INTO``, a dump
loaded into a new file) and real ``gearsql relay`` processes. The relay records the file it
first relays (its device and inode) in ``gman_origin``. The PostgreSQL and MariaDB sides are
tests/test_relay_copies.py and tests/test_relay_copies_mysql.py."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ServerProcess
from relaying import (
    Recorder,
    Relays,
    SQLite,
    enqueue_all,
    eventually,
    gearsql_command,
    relays_only_new_rows,
    start_refused,
)

from gearsql.relay.origin import check_sqlite


def _at(path: Path) -> SQLite:
    """The file at ``path`` as it is (SQLite() would empty its outbox)."""
    found = SQLite.__new__(SQLite)
    found.path = path
    found.dsn = f"sqlite:///{path}"
    return found


def _origin(db: SQLite) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db.path)
    try:
        return conn.execute("SELECT identity, description FROM gman_origin").fetchall()
    finally:
        conn.close()


def _file_identity(db: SQLite) -> str:
    found = os.stat(db.path)
    return f"{found.st_dev}:{found.st_ino}"


def _copy(source: Path, target: Path) -> None:
    shutil.copy(source, target)


def _backup(source: Path, target: Path) -> None:
    conn = sqlite3.connect(source)
    copy = sqlite3.connect(target)
    try:
        conn.backup(copy)
    finally:
        conn.close()
        copy.close()


def _vacuum_into(source: Path, target: Path) -> None:
    conn = sqlite3.connect(source)
    try:
        conn.execute("VACUUM INTO ?", (str(target),))
    finally:
        conn.close()


def _dump(source: Path, target: Path) -> None:
    conn = sqlite3.connect(source)
    copy = sqlite3.connect(target)
    try:
        copy.executescript("\n".join(conn.iterdump()))
    finally:
        conn.close()
        copy.close()


COPIES = [
    pytest.param(_copy, id="shutil.copy"),
    pytest.param(_backup, id="backup API"),
    pytest.param(_vacuum_into, id="VACUUM INTO"),
    pytest.param(_dump, id="dump loaded into a new file"),
]


@pytest.fixture
def original(tmp_path: Path, relays: Relays) -> SQLite:
    """An application's file that a relay has relayed (and so recorded)."""
    db = SQLite(tmp_path / "app.db")
    relay = relays.start(db)
    relay.wait_log("recorded the outbox's database: SQLite file ")
    assert relay.stop() == 0
    assert _origin(db) == [
        (_file_identity(db), f"SQLite file '{db.path}' (device:inode {_file_identity(db)})")
    ]
    return db


@pytest.mark.parametrize("copy_file", COPIES)
def test_a_copied_file_with_pending_rows_refuses_until_adopted_then_submits_them(
    original: SQLite,
    relays: Relays,
    gearsql_server: ServerProcess,
    tmp_path: Path,
    copy_file: Callable[[Path, Path], None],
) -> None:
    enqueue_all(original, "one", "two")
    copy_file(original.path, tmp_path / "staging.db")
    copy = _at(tmp_path / "staging.db")
    log = start_refused(relays, copy)
    assert f"this is SQLite file '{copy.path}'" in log, log
    assert f"its outbox was written in SQLite file '{original.path}'" in log, log
    assert "looks like a copy" in log and "2 pending outbox row(s)" in log, log
    assert f"gearsql relay adopt --dsn {copy.dsn}`" in log, log
    assert "Traceback" not in log
    assert copy.outbox() == 2  # nothing was submitted
    adopted = gearsql_command("relay", "adopt", "--dsn", copy.dsn)
    assert adopted.returncode == 0, adopted.stderr
    assert f"recorded SQLite file '{copy.path}'" in adopted.stdout
    assert "2 row(s) left for the relay to submit" in adopted.stdout
    assert [identity for identity, _ in _origin(copy)] == [_file_identity(copy)]
    recorder = Recorder(gearsql_server)
    try:
        relays.start(copy)
        recorder.wait_seen(2)
        eventually(lambda: copy.outbox() == 0, what="an empty outbox")
        assert sorted(recorder.data()) == [b"one", b"two"]
        # The original is still its own: its relay submits its rows at once.
        relay = relays.start(original)
        recorder.wait_seen(4)
        eventually(lambda: original.outbox() == 0, what="the original's empty outbox")
        assert "looks like a copy" not in relay.log()
    finally:
        recorder.stop()
    assert [identity for identity, _ in _origin(original)] == [_file_identity(original)]


def test_adopt_discard_moves_the_copys_pending_rows_to_the_dead_letters(
    original: SQLite, relays: Relays, gearsql_server: ServerProcess, tmp_path: Path
) -> None:
    enqueue_all(original, "old-1", "old-2", "old-3")
    _copy(original.path, tmp_path / "staging.db")
    copy = _at(tmp_path / "staging.db")
    start_refused(relays, copy)
    adopted = gearsql_command("relay", "adopt", "--dsn", copy.dsn, "--discard")
    assert adopted.returncode == 0, adopted.stderr
    assert "moved 3 outbox row(s) to gman_outbox_dead" in adopted.stdout
    assert "0 row(s) left for the relay to submit" in adopted.stdout
    assert copy.outbox() == 0
    dead = copy.dead()
    assert len(dead) == 3
    assert all(
        reason.startswith(f"discarded: database copied from SQLite file '{original.path}'")
        for *_, reason in dead
    )
    relays_only_new_rows(copy, relays, gearsql_server)
    assert original.outbox() == 3  # the original's rows are its own relay's


def test_a_copy_with_an_empty_outbox_is_recorded_and_relays(
    original: SQLite, relays: Relays, gearsql_server: ServerProcess, tmp_path: Path
) -> None:
    _copy(original.path, tmp_path / "staging.db")
    copy = _at(tmp_path / "staging.db")
    relay = relays.start(copy)
    relay.wait_log(f"this is SQLite file '{copy.path}'")
    relay.wait_log(
        f"a copy of SQLite file '{original.path}' (device:inode {_file_identity(original)}) "
        "with an empty outbox: recorded it as the outbox's database"
    )
    assert [identity for identity, _ in _origin(copy)] == [_file_identity(copy)]
    recorder = Recorder(gearsql_server)
    try:
        enqueue_all(copy, "staging's own")
        recorder.wait_seen(1)
    finally:
        recorder.stop()
    assert [identity for identity, _ in _origin(original)] == [_file_identity(original)]


def test_the_original_renamed_in_its_directory_is_still_its_own_and_relays(
    original: SQLite, relays: Relays, gearsql_server: ServerProcess, tmp_path: Path
) -> None:
    recorded = _origin(original)
    enqueue_all(original, "before the rename")
    os.rename(original.path, tmp_path / "renamed.db")
    renamed = _at(tmp_path / "renamed.db")
    recorder = Recorder(gearsql_server)
    try:
        relay = relays.start(renamed)
        recorder.wait_seen(1)
        eventually(lambda: renamed.outbox() == 0, what="an empty outbox")
    finally:
        recorder.stop()
    assert "copy" not in relay.log() and "recorded" not in relay.log(), relay.log()
    assert _origin(renamed) == recorded  # the description keeps the path it was recorded at


def test_adopt_records_a_file_never_relayed_and_refuses_a_file_without_the_outbox(
    tmp_path: Path,
) -> None:
    db = SQLite(tmp_path / "app.db")
    enqueue_all(db, "waiting")
    adopted = gearsql_command("relay", "adopt", "--dsn", db.dsn)
    assert adopted.returncode == 0, adopted.stderr
    assert adopted.stdout == (
        f"recorded SQLite file '{db.path}' (device:inode {_file_identity(db)}) as the outbox's "
        "database (it was no recorded database); 1 row(s) left for the relay to submit\n"
    )
    assert [identity for identity, _ in _origin(db)] == [_file_identity(db)]

    missing = gearsql_command("relay", "adopt", "--dsn", f"sqlite:///{tmp_path / 'none.db'}")
    assert missing.returncode == 2
    assert missing.stderr.startswith(f"gearsql: no SQLite database at {tmp_path / 'none.db'}")
    assert not (tmp_path / "none.db").exists()

    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    refused = gearsql_command("relay", "adopt", "--dsn", f"sqlite:///{other}", "--discard")
    assert refused.returncode == 2
    assert refused.stderr == (
        "gearsql: gman_outbox does not exist: it is made by gearsql.sqlite.register() (or "
        "connect()) in the transactional background mode; is this the application's database?\n"
    )
    conn = sqlite3.connect(other)
    try:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master")]
    finally:
        conn.close()
    assert tables == ["t"]  # adopt made nothing there


def test_what_cannot_be_checked_is_relayed_with_a_notice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A read-only file without gman_origin cannot record itself; an in-memory database and a
    file unlinked while open have no file to tell. Each is said once, and no transaction is left
    open."""
    caplog.set_level(logging.DEBUG, logger="gearsql.relay")
    not_checked = "not checked for being a copy"
    db = SQLite(tmp_path / "app.db")
    enqueue_all(db, "pending")
    read_only = sqlite3.connect(f"file:{db.path}?mode=ro", uri=True, isolation_level=None)
    try:
        check_sqlite(read_only, db.dsn)
        assert not read_only.in_transaction
        assert read_only.execute("SELECT count(*) FROM gman_outbox").fetchone() == (1,)
    finally:
        read_only.close()
    assert caplog.messages == [
        f"this account may not use gman_origin (or the database is read-only): {not_checked}"
    ]
    with pytest.raises(sqlite3.OperationalError, match="no such table: gman_origin"):
        _origin(db)

    caplog.clear()
    memory = sqlite3.connect(":memory:", isolation_level=None)
    try:
        memory.execute("CREATE TABLE gman_outbox (id INTEGER PRIMARY KEY)")
        check_sqlite(memory, "sqlite:///:memory:")
        assert not memory.in_transaction
    finally:
        memory.close()
    assert caplog.messages == [f"cannot tell which database this is: {not_checked}"]

    conn = sqlite3.connect(db.path, isolation_level=None)
    try:
        check_sqlite(conn, db.dsn)  # records the file
        caplog.clear()
        os.unlink(db.path)
        check_sqlite(conn, db.dsn)
        assert not conn.in_transaction
    finally:
        conn.close()
    assert caplog.messages == [f"cannot tell which database this is: {not_checked}"]
