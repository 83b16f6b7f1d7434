"""The relay's MariaDB binlog source, against a private MariaDB with the binlog on in ROW format
(started here in a temporary directory; the machine's server, whose binlog is off, is only used
to check the fallback to polling)."""

from __future__ import annotations

import collections
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import ServerProcess
from relaying import MariaDB, Recorder, Relays, eventually, private_mariadb, queued

pytestmark = pytest.mark.mysql


@pytest.fixture(scope="session")
def binlog_dsn() -> Iterator[str]:
    # With the binlog on, MariaDB creates the bridge's stored functions only when it trusts
    # function creators (as docker/compose.yaml starts it).
    with private_mariadb("--log-bin-trust-function-creators=1") as dsn:
        yield dsn


@pytest.fixture
def db(binlog_dsn: str) -> MariaDB:
    return MariaDB(binlog_dsn)  # a new, empty outbox


def test_auto_follows_the_binlog_and_only_commits_make_jobs(
    db: MariaDB, relays: Relays, recorder: Recorder
) -> None:
    # A poll interval longer than the test: every delivery here was woken by the binlog.
    relay = relays.start(
        db, "--source", "auto", "--poll-interval", "600", ready="woken by its binlog"
    )
    relay.wait_log("following the binlog")
    conn = db.connect()
    try:
        db.execute(conn, "START TRANSACTION")
        db.enqueue(conn, "record", "rolled back")
        db.execute(conn, "ROLLBACK")
        db.execute(conn, "START TRANSACTION")
        db.enqueue(conn, "record", "kept")
        db.execute(conn, "SAVEPOINT partly")
        db.enqueue(conn, "record", "undone by the savepoint")
        db.execute(conn, "ROLLBACK TO SAVEPOINT partly")
        db.execute(conn, "COMMIT")
        db.enqueue(conn, "record", "autocommitted", "own-unique", priority="high")
    finally:
        conn.close()
    seen = recorder.wait_seen(2)
    eventually(lambda: db.outbox() == 0, what="an empty outbox")
    recorder.worker.stop()
    recorder.thread.join(10)
    assert sorted(recorder.data()) == [b"autocommitted", b"kept"]
    assert (b"record", b"own-unique", b"autocommitted") in seen


def test_a_bulk_insert_is_delivered_once_each_through_the_binlog(
    db: MariaDB, relays: Relays, recorder: Recorder
) -> None:
    rows = 10_000
    relay = relays.start(
        db, "--source", "binlog", "--poll-interval", "600", ready="following the binlog"
    )
    conn = db.connect()
    try:
        db.bulk(conn, rows)
    finally:
        conn.close()
    recorder.wait_seen(rows, timeout=60)
    eventually(lambda: db.outbox() == 0, what="an empty outbox")
    eventually(lambda: relay.submitted() == rows, what="the relay's log lines")
    counts = collections.Counter(unique for _, unique, _ in recorder.seen)
    assert len(counts) == rows and set(counts.values()) == {1}


def test_a_10_mb_row_wakes_the_relay_and_arrives_byte_exact(
    db: MariaDB, relays: Relays, recorder: Recorder
) -> None:
    relays.start(db, "--poll-interval", "600", ready="following the binlog")
    big = bytes(range(256)) * (10 * 4096) + b"\0"
    conn = db.connect()
    try:
        db.enqueue(conn, "record", big)
        db.enqueue(conn, "record", b"small")
    finally:
        conn.close()
    seen = recorder.wait_seen(2, timeout=60)
    assert sorted(data for _, _, data in seen) == sorted([big, b"small"])


def test_without_the_binlog_auto_polls_and_binlog_is_refused(
    mysql_dsn: str, relays: Relays, recorder: Recorder
) -> None:
    """The machine's MariaDB has log_bin=OFF: auto says why it polls, and still delivers."""
    db = MariaDB(mysql_dsn)
    relay = relays.start(db, "--source", "auto")
    relay.wait_log("polling the outbox, because the binlog is off (log_bin=OFF)")
    conn = db.connect()
    try:
        db.enqueue(conn, "record", "polled")
    finally:
        conn.close()
    assert recorder.wait_seen(1)[0][2] == b"polled"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gearsql",
            "relay",
            "--dsn",
            mysql_dsn,
            "--source",
            "binlog",
            "--servers",
            "127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2  # a configuration error, as a missing outbox
    assert "gearsql: --source binlog: the binlog is off (log_bin=OFF)" in done.stderr
    assert "Traceback" not in done.stderr


#: The trigger of the README and docs/design.md, verbatim.
TWEET_TRIGGER = (
    "CREATE TRIGGER tweet_blog BEFORE INSERT ON blog_entries FOR EACH ROW "
    """SET @ret=gman_do_background('send_tweet', CONCAT(NEW.title, " - ", NEW.url));"""
)


class InstalledMariaDB(MariaDB):
    """A database into which `gearsql install mysql` put the outbox and the gman_* functions."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn


@contextmanager
def scratch_database(binlog_dsn: str) -> Iterator[str]:
    """A new, empty database of the private MariaDB, dropped afterwards."""
    parts = urlsplit(binlog_dsn)
    name = f"scratch_{secrets.token_hex(3)}"
    admin = InstalledMariaDB(binlog_dsn)
    conn = admin.connect()
    try:
        admin.execute(conn, f"CREATE DATABASE `{name}`")
        yield urlunsplit((parts.scheme, parts.netloc, "/" + name, "", ""))
    finally:
        admin.execute(conn, f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


def install_mysql(dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gearsql", "install", "mysql", "--dsn", dsn],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def installed(binlog_dsn: str) -> Iterator[InstalledMariaDB]:
    """A new database of the private MariaDB with the bridge installed by the CLI."""
    with scratch_database(binlog_dsn) as dsn:
        done = install_mysql(dsn)
        assert done.returncode == 0, done.stdout + done.stderr
        yield InstalledMariaDB(dsn)


def test_the_blog_trigger_runs_each_committed_insert_once_and_no_rolled_back_one(
    installed: InstalledMariaDB, relays: Relays, gearsql_server: ServerProcess
) -> None:
    """The trigger calls the stored gman_do_background installed by `gearsql install mysql`;
    the relay follows the binlog with a poll interval longer than the test, so the committed row
    reaches the worker only if the binlog woke the relay."""
    db = installed
    conn = db.connect()
    try:
        db.execute(
            conn,
            "CREATE TABLE blog_entries (id INT AUTO_INCREMENT PRIMARY KEY, "
            "title VARCHAR(200) NOT NULL, url VARCHAR(200) NOT NULL)",
        )
        db.execute(conn, TWEET_TRIGGER)
    finally:
        conn.close()
    relay = relays.start(
        db, "--source", "binlog", "--poll-interval", "600", ready="woken by its binlog"
    )
    relay.wait_log("following the binlog")
    recorder = Recorder(gearsql_server, functions=("send_tweet",))
    try:
        conn = db.connect()
        try:
            db.execute(conn, "START TRANSACTION")
            db.execute(
                conn,
                "INSERT INTO blog_entries (title, url) VALUES (%s, %s)",
                ("Draft", "https://example.org/draft"),
            )
            db.execute(conn, "ROLLBACK")
            db.execute(conn, "START TRANSACTION")
            db.execute(
                conn,
                "INSERT INTO blog_entries (title, url) VALUES (%s, %s)",
                ("Hello", "https://example.org/hello"),
            )
            db.execute(conn, "COMMIT")
        finally:
            conn.close()
        seen = recorder.wait_seen(1)
        assert seen[0][0] == b"send_tweet"
        assert seen[0][2] == b"Hello - https://example.org/hello"
        # The rolled-back row never runs, and the committed one only once: once the outbox is
        # empty, the relay has reported its submissions and the server holds no job, nothing
        # is left that could still reach the worker.
        eventually(lambda: db.outbox() == 0, what="an empty outbox")
        eventually(lambda: relay.submitted() >= 1, what="the relay's log line")
        eventually(lambda: queued(gearsql_server, "send_tweet") == 0, what="no queued job")
        assert recorder.data() == [b"Hello - https://example.org/hello"]
        assert relay.submitted() == 1
        conn = db.connect()
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT title FROM blog_entries")
            assert cursor.fetchall() == [("Hello",)]
            cursor.close()
        finally:
            conn.close()
    finally:
        recorder.stop()


def test_install_on_a_binlog_server_that_distrusts_function_creators_says_what_to_set(
    binlog_dsn: str,
) -> None:
    admin = InstalledMariaDB(binlog_dsn)
    conn = admin.connect()
    try:
        admin.execute(conn, "SET GLOBAL log_bin_trust_function_creators = 0")
        try:
            with scratch_database(binlog_dsn) as dsn:
                done = install_mysql(dsn)
        finally:
            admin.execute(conn, "SET GLOBAL log_bin_trust_function_creators = 1")
    finally:
        conn.close()
    assert done.returncode != 0
    assert "log_bin_trust_function_creators = 1" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
