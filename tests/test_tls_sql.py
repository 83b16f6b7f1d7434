"""The SQL functions and the relay reach a ``gearsql server --ssl`` that verifies its clients:
PostgreSQL's gman_* functions configured by ``gearsql install postgres --ssl-*``, SQLite's by
``register(..., ssl_*=...)``, and ``gearsql relay`` with the GEARSQL_SSL* variables."""

from __future__ import annotations

import os
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerProcess
from pki import Pki

from gearsql import Worker

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 30.0

ACL = """
[app-1]
submit = reverse, later

[worker-1]
work = reverse, later
"""


@pytest.fixture
def server(tmp_path: Path, pki: Pki) -> Iterator[ServerProcess]:
    acl = tmp_path / "acl.ini"
    acl.write_text(ACL)
    server = ServerProcess(
        "gearsql",
        tmp_path / "server.log",
        ["--store", "memory", *pki.server_args(), "--acl-file", str(acl)],
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def seen(server: ServerProcess, pki: Pki) -> Iterator[list[bytes]]:
    """A worker over TLS: reverses, and records the ``later`` jobs it gets."""
    later: list[bytes] = []
    worker = Worker([server.address], **pki.client_kwargs("worker-1"))
    worker.register("reverse", lambda job: job.data[::-1])

    def record(job: Any) -> bytes:
        later.append(job.data)
        return b""

    worker.register("later", record)
    thread = threading.Thread(target=worker.run_forever, kwargs={"handle_signals": False})
    thread.start()
    try:
        yield later
    finally:
        worker.stop()
        thread.join(TIMEOUT)


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.pg
def test_postgres_gman_do_over_mutual_tls(
    pg_dsn: str, server: ServerProcess, pki: Pki, seen: list[bytes]
) -> None:
    psycopg = pytest.importorskip("psycopg")
    schema = f"gearsql_tls_{secrets.token_hex(4)}"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "gearsql",
            "install",
            "postgres",
            "--dsn",
            pg_dsn,
            "--schema",
            schema,
            "--servers",
            f"127.0.0.1:{server.port}",
            "--ssl-ca-file",
            pki.ca,
            "--ssl-certificate",
            pki.cert("app-1"),
            "--ssl-key",
            pki.key("app-1"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert install.returncode == 0, install.stderr
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            settings = dict(conn.execute(f'SELECT name, value FROM "{schema}".gman_settings'))
            assert settings["ssl"] == "on"
            assert settings["ssl_certificate"] == pki.cert("app-1")
            assert conn.execute(f"SELECT \"{schema}\".gman_do('reverse', 'stressed')").fetchone()[
                0
            ] == ("desserts")
            # The ACL lets app-1 submit to reverse only.
            with pytest.raises(psycopg.Error, match="PERMISSION_DENIED") as denied:
                conn.execute(f"SELECT \"{schema}\".gman_do('secret', 'x')")
            assert denied.value.sqlstate == "GM005"
            # Without TLS the server refuses the connection.
            conn.execute(f"UPDATE \"{schema}\".gman_settings SET value = 'off' WHERE name = 'ssl'")
            conn.execute(
                f"UPDATE \"{schema}\".gman_settings SET value = '' WHERE name LIKE 'ssl_%'"
            )
            with pytest.raises(psycopg.Error, match="cannot reach a job server"):
                conn.execute(f"SELECT \"{schema}\".gman_do('reverse', 'x')")
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_sqlite_gman_do_over_mutual_tls(
    server: ServerProcess, pki: Pki, seen: list[bytes], tmp_path: Path
) -> None:
    import gearsql.sqlite

    conn = sqlite3.connect(str(tmp_path / "app.sqlite3"), isolation_level=None)
    try:
        gearsql.sqlite.register(
            conn,
            f"127.0.0.1:{server.port}",
            background_mode="immediate",
            **pki.client_kwargs("app-1"),
        )
        assert conn.execute("SELECT gman_do('reverse', 'abc')").fetchone()[0] == "cba"
        conn.execute("SELECT gman_do_background('later', 'one')")
        wait_for(lambda: seen == [b"one"], "the background job")
    finally:
        conn.close()


def test_relay_over_mutual_tls(
    server: ServerProcess, pki: Pki, seen: list[bytes], tmp_path: Path
) -> None:
    import gearsql.sqlite

    path = tmp_path / "outbox.sqlite3"
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        gearsql.sqlite.register(conn, f"127.0.0.1:{server.port}", ssl=False)
        conn.execute("SELECT gman_do_background('later', 'relayed')")
    finally:
        conn.close()
    env = {
        **os.environ,
        "GEARSQL_SSL_CA_FILE": pki.ca,
        "GEARSQL_SSL_CERTIFICATE": pki.cert("app-1"),
        "GEARSQL_SSL_KEY": pki.key("app-1"),
    }
    relay = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gearsql",
            "relay",
            "--dsn",
            f"sqlite:///{path}",
            "--servers",
            f"127.0.0.1:{server.port}",
            "--source",
            "poll",
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: seen == [b"relayed"], "the relayed job")
    finally:
        relay.terminate()
        relay.wait(TIMEOUT)
