"""A transactional background call can be followed (docs/reliability.md case 48): the relay
records the job server's handle of each row it submitted in ``gman_outbox_sent`` (in the
transaction that deletes the row), so ``gman_job_status('outbox:N')`` goes from ``pending`` to
``submitted`` with the real handle; it records its contact in ``gman_relay_contact``, which
``gearsql relay status`` shows; and it keeps ``gman_outbox_sent`` bounded. Real PostgreSQL,
MariaDB and SQLite (each installed in a place of its own), a real ``gearsql server`` and a real
``gearsql relay`` process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerProcess
from relaying import RelayProcess, eventually
from wire import Peer

SCHEMA = "gearsql_sent"
MYSQL_DATABASE = "gearsql_sent"


class Place:
    """An installed database: run SQL as its administrator, ask ``gman_job_status``."""

    dsn = ""
    marker = "%s"
    sent_table = "gman_outbox_sent"
    outbox_table = "gman_outbox"
    relay_args: tuple[str, ...] = ()

    def connect(self) -> Any:
        raise NotImplementedError

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            cursor = conn.cursor()
            cursor.execute(sql.replace("?", self.marker), args)
            rows = list(cursor.fetchall()) if cursor.description else []
            cursor.close()
            return rows
        finally:
            conn.close()

    def background(self, function: str, workload: str) -> str:
        raise NotImplementedError

    def status(self, handle: str) -> dict[str, Any]:
        raise NotImplementedError


class Postgres(Place):
    sent_table = f"{SCHEMA}.gman_outbox_sent"
    outbox_table = f"{SCHEMA}.gman_outbox"
    relay_args = ("--schema", SCHEMA)

    def __init__(self, dsn: str) -> None:
        from gearsql.bridges.postgres import install

        self.dsn = dsn
        install(dsn, SCHEMA)

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True)

    def background(self, function: str, workload: str) -> str:
        rows = self.rows(f"SELECT {SCHEMA}.gman_do_background(?, ?)", (function, workload))
        return str(rows[0][0])

    def status(self, handle: str) -> dict[str, Any]:
        (row,) = self.rows(f"SELECT state, detail FROM {SCHEMA}.gman_job_status(?)", (handle,))
        return {"state": row[0], "detail": row[1]}

    def drop(self) -> None:
        from gearsql.bridges.postgres import uninstall

        uninstall(self.dsn, SCHEMA, force=True)


class MariaDB(Place):
    def __init__(self, dsn: str) -> None:
        from gearsql.bridges.mysql import install

        base = dsn.rsplit("/", 1)[0]
        self.root = f"{base}/{dsn.rsplit('/', 1)[1]}"
        self.dsn = f"{base}/{MYSQL_DATABASE}"
        self._admin(f"CREATE DATABASE IF NOT EXISTS {MYSQL_DATABASE}")
        install(self.dsn)

    def _admin(self, sql: str) -> None:
        import mysql.connector
        from databases import mysql_connect_args

        conn = mysql.connector.connect(**mysql_connect_args(self.root), autocommit=True)
        try:
            cursor = conn.cursor()
            cursor.execute(sql)
            cursor.close()
        finally:
            conn.close()

    def connect(self) -> Any:
        import mysql.connector
        from databases import mysql_connect_args

        return mysql.connector.connect(**mysql_connect_args(self.dsn), autocommit=True)

    def background(self, function: str, workload: str) -> str:
        return str(self.rows("SELECT gman_do_background(?, ?)", (function, workload))[0][0])

    def status(self, handle: str) -> dict[str, Any]:
        (row,) = self.rows("SELECT gman_job_status(?)", (handle,))
        return dict(json.loads(row[0]))

    def drop(self) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {MYSQL_DATABASE}")


class SQLite(Place):
    marker = "?"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dsn = f"sqlite:///{path}"
        conn = self.connect()
        conn.execute("SELECT gman_do_background('made', 'the outbox')")
        conn.execute("DELETE FROM gman_outbox")
        conn.close()

    def connect(self) -> Any:
        import gearsql.sqlite

        return gearsql.sqlite.connect(str(self.path), None, isolation_level=None, timeout=30)

    def background(self, function: str, workload: str) -> str:
        return str(self.rows("SELECT gman_do_background(?, ?)", (function, workload))[0][0])

    def status(self, handle: str) -> dict[str, Any]:
        (row,) = self.rows("SELECT gman_job_status(?)", (handle,))
        return dict(json.loads(row[0]))

    def drop(self) -> None:
        pass


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.pg),
        pytest.param("sqlite"),
        pytest.param("mariadb", marks=pytest.mark.mysql),
    ]
)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    made: Place
    if request.param == "postgres":
        made = Postgres(request.getfixturevalue("pg_dsn"))
    elif request.param == "mariadb":
        made = MariaDB(request.getfixturevalue("mysql_dsn"))
    else:
        made = SQLite(tmp_path / "app.db")
    try:
        yield made
    finally:
        made.drop()


@pytest.fixture
def relay_of(gearsql_server: ServerProcess, tmp_path: Path) -> Iterator[Any]:
    started: list[RelayProcess] = []

    def start(place: Place) -> RelayProcess:
        relay = RelayProcess(
            place.dsn,
            f"{gearsql_server.host}:{gearsql_server.port}",
            tmp_path / f"relay{len(started)}.log",
            *place.relay_args,
        )
        started.append(relay)
        relay.wait_log("relaying ")
        return relay

    yield start
    for relay in started:
        assert relay.stop() == 0, relay.log()


def _server_handles(server: ServerProcess) -> set[str]:
    """The handles of the jobs the job server holds (its ``show jobs`` lines)."""
    with Peer(server.address) as peer:
        lines = peer.admin("show jobs").decode().splitlines()
    return {line.split("\t")[0] for line in lines if line and line != "."}


def _relay_status(place: Place) -> str:
    shown = subprocess.run(
        [sys.executable, "-m", "gearsql", "relay", "status", "--dsn", place.dsn, *place.relay_args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def test_outbox_handle_goes_from_pending_to_submitted_with_the_servers_handle(
    place: Place, gearsql_server: ServerProcess, relay_of: Any
) -> None:
    # No worker: the job stays queued in the job server, where its handle can be seen.
    handle = place.background("sent_nobody_works", "follow me")
    assert handle.startswith("outbox:")
    assert place.status(handle)["state"] == "pending"
    assert "relay contact: none recorded" in _relay_status(place)
    relay_of(place)
    eventually(lambda: place.status(handle)["state"] == "submitted", what="submitted")
    detail = place.status(handle)["detail"]
    job_handle = detail.split(" ")[0]
    assert job_handle in _server_handles(gearsql_server), (detail, _server_handles(gearsql_server))
    server = f"{gearsql_server.host}:{gearsql_server.port}"
    assert f" (submitted to {server} by the relay at " in detail, detail
    [(function, recorded)] = place.rows(
        f"SELECT function, handle FROM {place.sent_table} WHERE id = ?", (int(handle[7:]),)
    )
    assert (bytes(function), recorded) == (b"sent_nobody_works", job_handle)
    shown = _relay_status(place)
    assert "  relay contact: the last at " in shown, shown
    assert f", to {server}\n" in shown, shown
    if isinstance(place, Postgres):
        [(relay, servers)] = place.rows(
            f"SELECT relay, servers FROM {SCHEMA}.gman_relay_contacts()"
        )
        assert servers == server and f" by {relay}, to " in shown
        [(contact, last)] = place.rows(
            f"SELECT p.last_relay_contact, (SELECT max(last_contact) FROM "
            f"{SCHEMA}.gman_relay_contacts()) FROM {SCHEMA}.gman_pipeline() AS p"
        )
        assert contact is not None and contact == last
    else:  # the view of MariaDB and SQLite
        [(contact, last)] = place.rows(
            "SELECT last_relay_contact, (SELECT max(last_contact) FROM gman_relay_contact) "
            "FROM gman_pipeline"
        )
        assert contact is not None and contact == last


def test_the_sent_records_are_pruned_by_age_and_by_id_in_the_relays_transaction(
    place: Place, relay_of: Any
) -> None:
    from gearsql.relay.source import SENT_KEEP_IDS, SENT_KEEP_SECONDS

    new_id = 3 * SENT_KEEP_IDS
    place.background("sent_nobody_works", "makes the tables")  # SQLite: the relay makes them
    relay_of(place)
    eventually(lambda: place.rows(f"SELECT count(*) FROM {place.outbox_table}")[0][0] == 0)
    eventually(lambda: place.rows(f"SELECT count(*) FROM {place.sent_table}")[0][0] == 1)
    place.rows(f"DELETE FROM {place.sent_table}")
    insert = f"INSERT INTO {place.sent_table} (id, function, handle, server, sent_at) VALUES "
    fresh = "CURRENT_TIMESTAMP"
    if isinstance(place, SQLite):
        fresh = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
        old = f"strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-{SENT_KEEP_SECONDS + 3600} seconds')"
    elif isinstance(place, Postgres):
        old = f"now() - interval '{SENT_KEEP_SECONDS + 3600} seconds'"
    else:
        old = f"NOW(6) - INTERVAL {SENT_KEEP_SECONDS + 3600} SECOND"
    gone_by_id, gone_by_age, kept = 5, new_id - 10, new_id - 9
    place.rows(
        insert + f"({gone_by_id}, 'f', 'H:x:1', 's', {fresh}), "
        f"({gone_by_age}, 'f', 'H:x:2', 's', {old}), "
        f"({kept}, 'f', 'H:x:3', 's', {fresh})"
    )
    place.rows(
        f"INSERT INTO {place.outbox_table} (id, function, workload, priority) "
        "VALUES (?, 'sent_nobody_works', 'late', 'normal')",
        (new_id,),
    )
    eventually(
        lambda: (
            [row[0] for row in place.rows(f"SELECT id FROM {place.sent_table} ORDER BY id")]
            == [kept, new_id]
        ),
        what="the pruned gman_outbox_sent",
    )
    assert place.status(f"outbox:{gone_by_id}")["state"] == "submitted"
    assert place.status(f"outbox:{gone_by_id}")["detail"].startswith("no longer in the outbox")


@pytest.mark.mysql
def test_a_relay_account_that_may_not_write_the_new_tables_relays_and_records_nothing(
    mysql_dsn: str, gearsql_server: ServerProcess, relay_of: Any
) -> None:
    """An install made again without --relay-account: the relay's account lacks the privileges
    on gman_outbox_sent, gman_relay_contact and gman_function_servers; the rows still go, once
    each (to the relay's servers), and each table is one warning."""
    import secrets
    from urllib.parse import urlsplit, urlunsplit

    from gearsql.bridges.mysql import install

    place = MariaDB(mysql_dsn)
    user, password = f"gssent_{secrets.token_hex(4)}", secrets.token_hex(8)
    place._admin(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
    try:
        install(place.dsn, relay_account=f"'{user}'@'%'")
        place._admin(
            f"REVOKE INSERT, DELETE ON {MYSQL_DATABASE}.gman_outbox_sent FROM '{user}'@'%'"
        )
        place._admin(
            f"REVOKE INSERT, UPDATE, DELETE ON {MYSQL_DATABASE}.gman_relay_contact "
            f"FROM '{user}'@'%'"
        )
        place._admin(f"REVOKE SELECT ON {MYSQL_DATABASE}.gman_function_servers FROM '{user}'@'%'")
        handles = [place.background("sent_nobody_works", f"row-{i}") for i in range(3)]
        parts = urlsplit(place.dsn)
        restricted = MariaDB.__new__(MariaDB)
        restricted.dsn = urlunsplit(
            (
                parts.scheme,
                f"{user}:{password}@{parts.hostname}:{parts.port or 3306}",
                parts.path,
                "",
                "",
            )
        )
        relay = relay_of(restricted)
        eventually(lambda: place.rows("SELECT count(*) FROM gman_outbox")[0][0] == 0)
        for handle in handles:
            status = place.status(handle)
            assert status["state"] == "submitted", status
            assert status["detail"].startswith("no longer in the outbox"), status
        eventually(lambda: "may not write gman_outbox_sent" in relay.log(), what="the warning")
        with Peer(gearsql_server.address) as peer:
            lines = peer.admin("status").decode().splitlines()
        assert any(line.split("\t")[:2] == ["sent_nobody_works", "3"] for line in lines), lines
        assert relay.log().count("may not write gman_outbox_sent") == 1
        assert relay.log().count("may not read gman_function_servers") == 1
    finally:
        place._admin(f"DROP USER IF EXISTS '{user}'@'%'")
        place.drop()
