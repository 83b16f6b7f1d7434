"""A restored copy of a MariaDB database does not resubmit its original's pending jobs
(docs/reliability.md case 52): real dumps (``mariadb-dump``, restored with the ``mariadb``
client into another database of the same server) and real ``gearsql relay`` processes. The
PostgreSQL side is tests/test_relay_copies.py."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import ServerProcess, free_port, need_tool
from relaying import (
    Database,
    Recorder,
    Relays,
    enqueue_all,
    eventually,
    gearsql_command,
    relays_only_new_rows,
    start_refused,
)

from gearsql._sqlcommon import MYSQL_ORIGIN_QUERY, MYSQL_ORIGIN_SETUP

pytestmark = pytest.mark.mysql
pytest.importorskip("mysql.connector")


class Installed(Database):
    """A database with the real install; ``enqueue`` calls gman_do_background."""

    kind = "mariadb"

    def __init__(self, dsn: str, install: bool = True) -> None:
        self.dsn = dsn
        if install:
            from gearsql.bridges.mysql import install as install_into

            install_into(dsn)

    def connect(self) -> Any:
        import mysql.connector
        from databases import mysql_connect_args

        return mysql.connector.connect(**mysql_connect_args(self.dsn), autocommit=True)

    def enqueue(
        self,
        conn: Any,
        function: str | bytes,
        workload: str | bytes,
        unique: str | None = None,
        priority: str = "normal",
    ) -> None:
        cursor = conn.cursor()
        cursor.execute("SELECT gman_do_background(%s, %s)", (function, workload))
        cursor.fetchall()
        cursor.close()

    def origin(self) -> list[tuple[str, str]]:
        conn = self.connect()
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT identity, description FROM gman_origin")
            rows = [(str(i), str(d)) for i, d in cursor.fetchall()]
            cursor.close()
            return rows
        finally:
            conn.close()


@pytest.fixture
def original() -> Iterator[Installed]:
    from databases import mysql_database

    with mysql_database() as dsn:
        yield Installed(dsn)


def _client_args(dsn: str) -> list[str]:
    from databases import mysql_connect_args

    args = mysql_connect_args(dsn)
    return [
        f"--host={args['host']}",
        f"--port={args['port']}",
        f"--user={args['user']}",
        f"--password={args.get('password') or ''}",
    ]


@pytest.fixture
def dumped() -> Iterator[Callable[[Installed], Installed]]:
    """Restores a real dump of a database (``mariadb-dump --routines``) into a new database of
    the same server; dropped at the end."""
    dump_tool = shutil.which("mariadb-dump") or need_tool("mysqldump")
    client = shutil.which("mariadb") or need_tool("mysql")
    made: list[str] = []
    admin_dsn = os.environ.get("GEARSQL_TEST_MYSQL_DSN", "")

    def copy(db: Installed) -> Installed:
        source = urlsplit(db.dsn).path.lstrip("/")
        dump = subprocess.run(
            [dump_tool, *_client_args(db.dsn), "--single-transaction", "--routines", source],
            capture_output=True,
            check=True,
            timeout=120,
        ).stdout
        name = f"gearsql_copy_{os.getpid()}_{secrets.token_hex(3)}"
        admin = Installed(admin_dsn, install=False).connect()
        try:
            admin.cursor().execute(f"CREATE DATABASE `{name}`")
        finally:
            admin.close()
        made.append(name)
        subprocess.run([client, *_client_args(db.dsn), name], input=dump, check=True, timeout=120)
        parts = urlsplit(db.dsn)
        return Installed(
            urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, "")), install=False
        )

    yield copy
    admin = Installed(admin_dsn, install=False).connect()
    try:
        for name in made:
            admin.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        admin.close()


def test_the_install_records_the_database_and_a_relay_on_it_goes(
    original: Installed, relays: Relays, gearsql_server: ServerProcess
) -> None:
    [(identity, described)] = original.origin()
    name = urlsplit(original.dsn).path.lstrip("/")
    assert identity.startswith(f"{name}:")
    assert described.startswith(f"database '{name}' on ") and "its gman_origin created" in described
    from gearsql.bridges.mysql import install

    install(original.dsn)  # installing again keeps the record and the table
    assert original.origin() == [(identity, described)]
    enqueue_all(original, "mine")
    recorder = Recorder(gearsql_server)
    try:
        relays.start(original)
        recorder.wait_seen(1)
        eventually(lambda: original.outbox() == 0, what="an empty outbox")
    finally:
        recorder.stop()
    assert original.origin() == [(identity, described)]


def test_a_dump_restored_into_another_database_refuses_until_adopted_then_submits(
    original: Installed,
    dumped: Callable[[Installed], Installed],
    relays: Relays,
    gearsql_server: ServerProcess,
) -> None:
    enqueue_all(original, "one", "two")
    copy = dumped(original)
    assert copy.outbox() == 2
    log = start_refused(relays, copy)
    assert "looks like a copy" in log and "2 pending outbox row(s)" in log, log
    assert f"gearsql relay adopt --dsn {copy.dsn}`" in log, log
    assert "Traceback" not in log
    assert copy.outbox() == 2  # nothing was submitted
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


def test_adopt_discard_moves_the_pending_rows_to_the_dead_letters(
    original: Installed,
    dumped: Callable[[Installed], Installed],
    relays: Relays,
    gearsql_server: ServerProcess,
) -> None:
    enqueue_all(original, "old-1", "old-2", "old-3")
    copy = dumped(original)
    start_refused(relays, copy)
    # mariadb:// names the same database as mysql://, as for the relay.
    mariadb = copy.dsn.replace("mysql://", "mariadb://", 1)
    adopted = gearsql_command("relay", "adopt", "--dsn", mariadb, "--discard")
    assert adopted.returncode == 0, adopted.stderr
    assert "moved 3 outbox row(s) to gman_outbox_dead" in adopted.stdout
    assert copy.outbox() == 0
    dead = copy.dead()
    assert len(dead) == 3
    assert all(
        reason.startswith("discarded: database copied from database ") for *_, reason in dead
    )
    relays_only_new_rows(copy, relays, gearsql_server)


def test_a_copy_with_an_empty_outbox_is_recorded_and_goes(
    original: Installed,
    dumped: Callable[[Installed], Installed],
    relays: Relays,
) -> None:
    copy = dumped(original)
    [(before, _)] = copy.origin()
    relay = relays.start(copy)
    relay.wait_log("a copy of database ")
    relay.wait_log("with an empty outbox: recorded it as the outbox's database")
    [(after, _)] = copy.origin()
    assert after != before and after.startswith(urlsplit(copy.dsn).path.lstrip("/") + ":")
    assert original.origin()[0][0] == before


def test_an_outbox_without_a_visible_origin_is_relayed_and_says_it_is_not_checked(
    original: Installed, relays: Relays
) -> None:
    """An install older than gman_origin, or a relay account granted before it existed (it
    sees no table it has no privilege on): the relay goes, and says the check is off."""
    conn = original.connect()
    try:
        cursor = conn.cursor()
        cursor.execute("DROP TABLE gman_origin")
        cursor.close()
    finally:
        conn.close()
    relay = relays.start(original)
    relay.wait_log("gman_origin is missing, or this account may not read it: not checked")


def test_adopt_refuses_a_mariadb_database_without_the_outbox() -> None:
    from databases import mysql_database

    with mysql_database() as dsn:
        missing = gearsql_command("relay", "adopt", "--dsn", dsn)
    assert missing.returncode == 2, missing
    assert missing.stderr == (
        "gearsql: gman_origin or gman_outbox does not exist: run `gearsql install mysql` "
        "(again) first\n"
    )


def test_the_identity_survives_a_server_restart_and_a_moved_data_directory(
    tmp_path: Path,
) -> None:
    """A private MariaDB (the machine's server is never restarted): the identity the install
    recorded is the one the server reports after a restart, and after its data directory was
    moved (as a new container over the same volume sees it); a copy of the files differs."""
    import mysql.connector

    install_db = shutil.which("mariadb-install-db") or need_tool("mysql_install_db")
    daemon = shutil.which("mariadbd") or need_tool("mysqld")
    subprocess.run(
        [
            install_db,
            "--no-defaults",
            f"--datadir={tmp_path / 'data'}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )

    def identity(data: Path, setup: Callable[[Any], None] | None = None) -> tuple[str, str]:
        port = free_port()
        proc = subprocess.Popen(
            [
                daemon,
                "--no-defaults",
                f"--datadir={data}",
                f"--socket={tmp_path / 'sock'}",
                f"--port={port}",
                "--bind-address=127.0.0.1",
                "--user=root",
                f"--pid-file={tmp_path / 'pid'}",
                "--innodb-buffer-pool-size=16M",
                f"--log-error={tmp_path / 'error.log'}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, (tmp_path / "error.log").read_text()
                try:
                    conn = mysql.connector.connect(
                        host="127.0.0.1", port=port, user="root", autocommit=True
                    )
                    break
                except mysql.connector.Error:
                    assert time.monotonic() < deadline, "the private MariaDB did not start"
                    time.sleep(0.1)
            try:
                if setup is not None:
                    setup(port)
                cursor = conn.cursor()
                cursor.execute("USE app")
                cursor.execute("SELECT identity FROM gman_origin")
                (recorded,) = cursor.fetchone()
                cursor.execute(MYSQL_ORIGIN_SETUP)
                cursor.execute(MYSQL_ORIGIN_QUERY)
                current = cursor.fetchone()[0]
                cursor.close()
            finally:
                conn.close()
        finally:
            proc.terminate()
            proc.wait(30)
        return str(recorded), str(current)

    def install(port: int) -> None:
        from gearsql.bridges.mysql import install as install_into

        conn = mysql.connector.connect(host="127.0.0.1", port=port, user="root", autocommit=True)
        conn.cursor().execute("CREATE DATABASE app")
        conn.close()
        install_into(f"mysql://root@127.0.0.1:{port}/app")

    recorded, current = identity(tmp_path / "data", install)
    assert current == recorded and recorded.startswith("app:")
    time.sleep(1.1)  # CREATE_TIME has seconds: a copy made in the same second would not show
    assert identity(tmp_path / "data") == (recorded, recorded)  # restarted
    (tmp_path / "data").rename(tmp_path / "moved")
    assert identity(tmp_path / "moved") == (recorded, recorded)
    shutil.copytree(tmp_path / "moved", tmp_path / "copied", symlinks=True)
    copied_recorded, copied_current = identity(tmp_path / "copied")
    assert copied_recorded == recorded and copied_current != recorded
