"""``gearsql server --relay DSN``: each relay's outbox backlog, lag and dead letters on /metrics
(checked by ``promtool check metrics``) and on the status page's /api/status, against a real
SQLite file and a real PostgreSQL database.

The backlog is made real: the function's ``maxqueue`` is full, so the server refuses the rows and
the relay leaves them in the outbox; a row above ``--max-packet-size`` becomes a dead letter."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ServerProcess, free_port, need_tool
from relaying import Database, Postgres, SQLite
from test_metrics import _samples, _scrape
from test_status_page import _wait_for, eventually, get_json
from wire import Peer

from gearsql.protocol import PacketType as P

MAX_PACKET = 2048


@pytest.fixture(params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.pg)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        yield SQLite(tmp_path / "app.db")
        return
    pytest.importorskip("psycopg")
    from databases import postgres_database

    with postgres_database() as dsn:
        yield Postgres(dsn)


def test_relay_backlog_lag_and_dead_letters_are_metrics(database: Database, tmp_path: Path) -> None:
    promtool = need_tool("promtool")
    http_port = free_port()
    server = ServerProcess(
        "gearsql",
        tmp_path / "gearsql.log",
        [
            "--store",
            "memory",
            "--http-port",
            str(http_port),
            "--max-packet-size",
            str(MAX_PACKET),
            "--relay",
            database.dsn,
        ],
    ).start()
    try:
        _wait_for("127.0.0.1", http_port)
        with Peer(server.address) as admin:
            assert admin.admin("create function full") == b"OK\r\n"
            assert admin.admin("maxqueue full 1") == b"OK\r\n"
            admin.send(P.SUBMIT_JOB_BG, b"full", b"", b"fills the queue")
            admin.expect(P.JOB_CREATED)
        conn = database.connect()
        try:
            for i in range(3):
                database.enqueue(conn, "full", f"waits-{i}")
            database.enqueue(conn, "bigjob", "x" * (MAX_PACKET * 3))
        finally:
            conn.close()
        relay = '{relay="' + database.dsn + '"}'

        def scraped() -> dict[str, float] | None:
            samples = _samples(_scrape(http_port)[1])
            backlog = samples.get(f"gearsql_relay_backlog_rows{relay}")
            dead = samples.get(f"gearsql_relay_dead_letters{relay}")
            lag = samples.get(f"gearsql_relay_lag_seconds{relay}", 0)
            return samples if (backlog, dead) == (3, 1) and lag > 0 else None

        samples = eventually(scraped, "backlog 3, one dead letter, a lag")
        assert samples[f"gearsql_relay_up{relay}"] == 1
        assert samples[f"gearsql_relay_read_timestamp_seconds{relay}"] > 0
        text = _scrape(http_port)[1]
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr

        [shown] = get_json(http_port, "/api/status")["relays"]
        assert (shown["relay"], shown["backlog"], shown["dead"]) == (database.dsn, 3, 1)
        assert shown["lag"] > 0 and shown["error"] is None
        [reason] = shown["last_dead"]
        assert "ARGUMENT_TOO_LARGE" in reason or "closed the connection" in reason, reason
    finally:
        server.stop()


def test_a_password_never_reaches_a_label() -> None:
    from gearsql.relay.watch import redact

    assert redact("postgresql://app:s3cret@db:5432/app") == "postgresql://app:***@db:5432/app"
    assert redact("mysql://root@127.0.0.1/test") == "mysql://root@127.0.0.1/test"
    assert redact("sqlite:///app.db") == "sqlite:///app.db"


def test_a_relay_database_that_cannot_be_read_is_down_with_the_reason(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    http_port = free_port()
    dsn = f"postgresql://app:s3cret@127.0.0.1:{free_port()}/nowhere"  # nothing listens there
    server = ServerProcess(
        "gearsql",
        tmp_path / "gearsql.log",
        ["--store", "memory", "--http-port", str(http_port), "--relay", dsn],
    ).start()
    try:
        _wait_for("127.0.0.1", http_port)
        relay = '{relay="' + dsn.replace("s3cret", "***") + '"}'

        def down() -> dict[str, float] | None:
            samples = _samples(_scrape(http_port)[1])
            read = samples.get(f"gearsql_relay_read_timestamp_seconds{relay}")
            return samples if read else None

        samples = eventually(down, "a failed reading")
        assert samples[f"gearsql_relay_up{relay}"] == 0
        assert f"gearsql_relay_backlog_rows{relay}" not in samples
        [shown] = get_json(http_port, "/api/status")["relays"]
        assert shown["backlog"] is None and shown["error"]
        assert "s3cret" not in _scrape(http_port)[1] + json.dumps(shown)
    finally:
        server.stop()
