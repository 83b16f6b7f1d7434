"""Retries with backoff and dead letters on a real server, with real workers that fail, raise and
die, against every store (the memory store where nothing has to outlive the server).

The server is ``gearsql server`` in a child process; the workers are gearsql's own
:class:`~gearsql.Worker` in child processes of their own (``WORKER`` below), each run written
to a file so the test counts runs without timing anything; the admin side is
:class:`~gearsql.adminclient.AdminClient`. Retry policies are set per function with the
``retries`` admin command, which the store keeps (proved across restarts here).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ServerProcess

from gearsql import Client
from gearsql.adminclient import AdminClient

KINDS = ["memory", "sqlite", "postgresql", "mysql"]
#: Cases about what outlives the server run on these only (deselected for the memory store).
durable_only = pytest.mark.databases("sqlite", "postgresql", "mysql")

#: A worker process: serves FUNCTION at ADDRESS, appends "<mode> <payload>" to LOG for each
#: run, then does what MODE says: ``ok`` completes, ``raise`` raises (WORK_EXCEPTION with the
#: text), ``fail`` sends WORK_FAIL, ``die`` kills its own process with SIGKILL mid-job.
WORKER = """
import os, signal, sys
from gearsql import Worker

address, function, mode, log = sys.argv[1:5]

def handle(job):
    with open(log, "a") as out:
        out.write(f"{mode} {job.data.decode()}\\n")
    if mode == "raise":
        raise ValueError(f"cannot do {job.data.decode()}")
    if mode == "fail":
        job.fail()
        return None
    if mode == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return b"done"

worker = Worker(address)
worker.register(function, handle)
worker.run_forever()
"""


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture(params=KINDS)
def database(request: pytest.FixtureRequest) -> str:
    """Which store this run of the test is about (``databases(...)`` deselects by it)."""
    return str(request.param)


@pytest.fixture
def store_url(database: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL with a queue table of this test's own."""
    if database == "memory":
        return "memory"
    if database == "sqlite":
        return f"sqlite:///{tmp_path}/queue.sqlite3"
    dsn = request.getfixturevalue("pg_dsn" if database == "postgresql" else "mysql_dsn")
    return f"{dsn}?table=retries_{secrets.token_hex(4)}"


class Workers:
    """Worker processes of one test; every one is gone at the end."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.log = tmp_path / "runs.log"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, server: ServerProcess, function: str, mode: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                f"127.0.0.1:{server.port}",
                function,
                mode,
                str(self.log),
            ],
            stdin=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.wait()

    def runs(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def stop_all(self) -> None:
        for proc in self.procs:
            self.stop(proc)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path)
    yield started
    started.stop_all()


def start_server(tmp_path: Path, store_url: str, *args: str) -> ServerProcess:
    return ServerProcess("gearsql", tmp_path / "gearsql.log", ["--store", store_url, *args]).start()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Servers a test starts (and restarts); all stopped at the end."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def submit(server: ServerProcess, function: str, data: str, unique: str | None = None) -> bytes:
    with Client(f"127.0.0.1:{server.port}") as client:
        return client.submit_background(function, data, unique=unique).handle


def admin_of(server: ServerProcess) -> AdminClient:
    return AdminClient(f"127.0.0.1:{server.port}")


def test_a_raising_worker_is_retried_then_the_job_is_kept_as_a_dead_letter(
    store_url: str, tmp_path: Path, servers: list[ServerProcess], workers: Workers
) -> None:
    server = start_server(tmp_path, store_url)
    servers.append(server)
    with admin_of(server) as admin:
        admin.set_retries("resize", 3, (0.05, 0.2))
        assert tuple(admin.retries("resize")) == (3, 0.05, 0.2, False)
        handle = submit(server, "resize", "img-1", unique="img-1")
        workers.start(server, "resize", "raise")
        wait_until(lambda: len(admin.show_dead()) == 1, "the dead letter")
        [letter] = admin.show_dead()
        assert workers.runs() == ["raise img-1"] * 3
        assert (letter.handle, letter.function, letter.unique) == (handle, b"resize", b"img-1")
        assert (letter.attempts, letter.size) == (3, len("img-1"))
        assert letter.error is not None and b"cannot\\x20do\\x20img-1" in letter.error
        assert admin.dead_status() == {b"resize": 1}
        assert admin.show_jobs() == []
        # gearmand's status keeps its four columns; it counts live jobs only.
        assert [tuple(line) for line in admin.status()] == [(b"resize", 0, 0, 1)]


def test_a_failing_worker_leaves_failed_as_the_error_and_purge_removes_the_letter(
    store_url: str, tmp_path: Path, servers: list[ServerProcess], workers: Workers
) -> None:
    server = start_server(tmp_path, store_url)
    servers.append(server)
    with admin_of(server) as admin:
        admin.set_retries("mail", 2, 0.05)
        submit(server, "mail", "m-1")
        workers.start(server, "mail", "fail")
        wait_until(lambda: len(admin.show_dead("mail")) == 1, "the dead letter")
        [letter] = admin.show_dead("mail")
        assert (letter.attempts, letter.error, letter.unique) == (2, b"failed", b"")
        assert workers.runs() == ["fail m-1"] * 2
        assert admin.purge_dead(letter.id) == 1
        assert admin.show_dead() == []
        assert admin.dead_status() == {}


def test_a_dying_worker_is_a_lost_attempt_and_the_next_worker_finishes_the_job(
    store_url: str, tmp_path: Path, servers: list[ServerProcess], workers: Workers
) -> None:
    server = start_server(tmp_path, store_url)
    servers.append(server)
    with admin_of(server) as admin:
        admin.set_retries("crash", 5, (0.05, 0.1))
        handle = submit(server, "crash", "c-1")
        dying = workers.start(server, "crash", "die")
        dying.wait(20)
        assert dying.returncode == -signal.SIGKILL
        wait_until(
            lambda: [job.error for job in admin.show_jobs()] == [b"worker\\x20lost"],
            "the lost run to be recorded",
        )
        [job] = admin.show_jobs()
        assert (job.handle, job.retries) == (handle, 1)
        workers.start(server, "crash", "ok")
        wait_until(lambda: admin.show_jobs() == [], "the job to finish")
        assert workers.runs() == ["die c-1", "ok c-1"]
        assert admin.show_dead() == []


def test_retry_dead_runs_the_dead_letters_again(
    store_url: str, tmp_path: Path, servers: list[ServerProcess], workers: Workers
) -> None:
    server = start_server(tmp_path, store_url)
    servers.append(server)
    with admin_of(server) as admin:
        admin.set_retries("sync", 1)
        for name in ("a", "b"):
            submit(server, "sync", name)
        raising = workers.start(server, "sync", "raise")
        wait_until(lambda: len(admin.show_dead()) == 2, "two dead letters")
        workers.stop(raising)
        workers.start(server, "sync", "ok")
        assert admin.retry_dead(function="sync") == 2
        wait_until(lambda: workers.runs()[2:] == ["ok a", "ok b"], "both jobs to run again")
        assert admin.show_dead() == []


def test_a_foreground_job_is_never_retried_its_client_gets_the_failure(
    store_url: str, tmp_path: Path, servers: list[ServerProcess], workers: Workers
) -> None:
    from gearsql.errors import JobFailed

    server = start_server(tmp_path, store_url)
    servers.append(server)
    with admin_of(server) as admin:
        admin.set_retries("fg", 3, 0.05)
        workers.start(server, "fg", "fail")
        with Client(f"127.0.0.1:{server.port}") as client, pytest.raises(JobFailed):
            client.submit("fg", "once", timeout=20)
        assert workers.runs() == ["fail once"]
        assert admin.show_dead() == [] and admin.show_jobs() == []


@durable_only
def test_dead_letters_and_retry_policies_survive_a_restart(
    store_url: str, tmp_path: Path, servers: list[ServerProcess], workers: Workers
) -> None:
    server = start_server(tmp_path, store_url)
    servers.append(server)
    with admin_of(server) as admin:
        admin.set_retries("report", 1)
        admin.set_retries("other", 4, (2.0, 8.0))
        submit(server, "report", "r-1", unique="r-1")
        raising = workers.start(server, "report", "raise")
        wait_until(lambda: len(admin.show_dead()) == 1, "the dead letter")
        [before] = admin.show_dead()
    workers.stop(raising)
    assert server.stop() == 0
    server = start_server(tmp_path, store_url)
    servers.append(server)
    with admin_of(server) as admin:
        [after] = admin.show_dead()
        assert after._replace(handle=b"") == before._replace(handle=b"")
        assert tuple(admin.retries("report"))[:1] == (1,)
        assert tuple(admin.retries("other")) == (4, 2.0, 8.0, False)
        workers.start(server, "report", "ok")
        assert admin.retry_dead(after.id) == 1
        wait_until(lambda: workers.runs() == ["raise r-1", "ok r-1"], "the run after retry dead")
        wait_until(lambda: admin.show_jobs() == [], "the job to finish")
    assert server.stop() == 0
    server = start_server(tmp_path, store_url)
    servers.append(server)
    with admin_of(server) as admin:
        assert admin.show_dead() == [] and admin.show_jobs() == []


@durable_only
def test_a_server_killed_between_a_failure_and_its_retry_still_retries_once(
    store_url: str, tmp_path: Path, servers: list[ServerProcess], workers: Workers
) -> None:
    """docs/reliability.md case 50: the failure is stored with the job, so after a SIGKILL in the
    backoff the job runs again, once, and is gone."""
    server = start_server(tmp_path, store_url)
    servers.append(server)
    with admin_of(server) as admin:
        # A backoff long enough that the kill always falls inside it.
        admin.set_retries("bill", 3, (30.0, 30.0))
        submit(server, "bill", "b-1", unique="b-1")
        raising = workers.start(server, "bill", "raise")
        wait_until(
            lambda: [job.state for job in admin.show_jobs()] == ["retrying"], "the retry wait"
        )
    workers.stop(raising)
    stored = stored_failures(store_url, tmp_path)
    wait_until(lambda: stored() == [(b"b-1", 1)], "the failure to be committed")
    server.stop(signal.SIGKILL)
    # The retry is due 30 s after the failure: move it to now in the stored row, as if the
    # server had stayed down that long (the row is otherwise the server's own).
    make_due(store_url, tmp_path)
    server = start_server(tmp_path, store_url)
    servers.append(server)
    with admin_of(server) as admin:
        [job] = admin.show_jobs()
        assert (job.retries, job.error) == (1, b"ValueError:\\x20cannot\\x20do\\x20b-1")
        workers.start(server, "bill", "ok")
        wait_until(lambda: admin.show_jobs() == [], "the retried job to finish")
    wait_until(lambda: stored() == [], "the row to go")
    assert workers.runs() == ["raise b-1", "ok b-1"]


def _query(store_url: str, tmp_path: Path, sql: str) -> list[tuple[object, ...]]:
    """Run ``sql`` on the store's queue table (``{t}``) through a connection of the test's own."""
    if store_url.startswith("sqlite"):
        conn = sqlite3.connect(tmp_path / "queue.sqlite3", timeout=10, isolation_level=None)
        conn.text_factory = bytes
        try:
            return [tuple(row) for row in conn.execute(sql.format(t="gearman_queue"))]
        finally:
            conn.close()
    dsn, _, table = store_url.partition("?table=")
    if store_url.startswith("postgres"):
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            cursor = conn.execute(sql.format(t=table).encode())
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
    import mysql.connector
    from databases import mysql_connect_args

    mconn = mysql.connector.connect(**mysql_connect_args(dsn), autocommit=True)
    try:
        mcursor = mconn.cursor()
        mcursor.execute(sql.format(t=table))
        rows = [tuple(row) for row in mcursor.fetchall()] if mcursor.description else []
        mcursor.close()
        return rows
    finally:
        mconn.close()


def stored_failures(store_url: str, tmp_path: Path) -> Callable[[], list[tuple[bytes, int]]]:
    def read() -> list[tuple[bytes, int]]:
        rows = _query(store_url, tmp_path, "SELECT unique_key, gearsql_retries FROM {t}")
        return [(_bytes(unique), int(str(count))) for unique, count in rows]

    return read


def _bytes(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode()
    assert isinstance(value, (bytes, bytearray, memoryview)), value
    return bytes(value)


def make_due(store_url: str, tmp_path: Path) -> None:
    _query(store_url, tmp_path, f"UPDATE {{t}} SET when_to_run = {int(time.time())}")


def test_cancel_covers_retrying_jobs_and_dead_letters_from_the_client_library(
    store_url: str, tmp_path: Path, servers: list[ServerProcess], workers: Workers
) -> None:
    import asyncio

    from gearsql import AsyncClient

    server = start_server(tmp_path, store_url)
    servers.append(server)
    address = f"127.0.0.1:{server.port}"
    with admin_of(server) as admin, Client(address) as client:
        admin.set_retries("slow", 3, (30.0, 30.0))
        admin.set_retries("once", 1)
        waiting = client.submit_background("slow", "s-1")
        dead = client.submit_background("once", "o-1")
        workers.start(server, "slow", "fail")
        workers.start(server, "once", "fail")
        wait_until(
            lambda: (
                [job.state for job in admin.show_jobs()] == ["retrying"]
                and len(admin.show_dead()) == 1
            ),
            "one job waiting for its retry and one dead letter",
        )
        assert client.cancel(waiting) is True
        assert admin.show_jobs() == []

        async def cancel_dead() -> tuple[bool, bool]:
            async with AsyncClient(address) as async_client:
                return (
                    await async_client.cancel(dead.handle),
                    await async_client.cancel(dead.handle),
                )

        assert asyncio.run(cancel_dead()) == (True, False)
        assert admin.show_dead() == []
        assert client.cancel(b"H:nowhere:1") is False
    assert sorted(workers.runs()) == ["fail o-1", "fail s-1"]


# ---------------------------------------------------------------------------- the command line


def gearsql(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m gearsql ARGS`` as a real process."""
    env = {key: value for key, value in os.environ.items() if key != "GEARMAN_SERVERS"}
    return subprocess.run(
        [sys.executable, "-m", "gearsql", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_server_retries_apply_to_every_function_and_the_cli_lists_retries_and_purges(
    tmp_path: Path, servers: list[ServerProcess], workers: Workers
) -> None:
    server = start_server(tmp_path, "memory", "--retries", "2", "--retry-backoff", "0.05:0.1")
    servers.append(server)
    at = ["-h", "127.0.0.1", "-p", str(server.port)]
    for function, data in (("a", "a-1"), ("a", "a-2"), ("b", "b-1")):
        submit(server, function, data)
    workers.start(server, "a", "raise")
    workers.start(server, "b", "fail")
    with admin_of(server) as admin:
        assert tuple(admin.retries("a")) == (2, 0.05, 0.1, True)
        wait_until(lambda: len(admin.show_dead()) == 3, "three dead letters")

    listed = gearsql("dead", "list", "--json", *at)
    assert listed.returncode == 0, listed.stderr
    records = json.loads(listed.stdout)
    assert sorted((r["function"], r["attempts"], r["size"]) for r in records) == [
        ("a", 2, 3),
        ("a", 2, 3),
        ("b", 2, 3),
    ]
    [b_letter] = [r for r in records if r["function"] == "b"]
    assert b_letter["error"] == "failed" and b_letter["unique"] == ""
    table = gearsql("dead", "list", "-f", "b", *at).stdout.splitlines()
    assert table[0].split() == ["ID", "FUNCTION", "UNIQUE", "ATTEMPTS", "DIED", "SIZE", "ERROR"]
    assert len(table) == 2 and table[1].split()[1:4] == ["b", "-", "2"]

    status = json.loads(gearsql("status", "--json", *at).stdout)
    assert sorted((r["function"], r["dead"]) for r in status) == [("a", 2), ("b", 1)]
    top = gearsql("top", "--once", *at).stdout.splitlines()
    assert top[1].split()[7] == "DEAD"
    assert [line.split()[0::7] for line in top[2:]] == [["a", "2"], ["b", "1"]]

    retried = gearsql("dead", "retry", str(b_letter["id"]), *at)
    assert (retried.returncode, retried.stdout) == (0, "resubmitted 1 dead letter\n")
    purged = gearsql("dead", "purge", "--all", "-f", "a", *at)
    assert (purged.returncode, purged.stdout) == (0, "purged 2 dead letters\n")

    unknown = gearsql("dead", "purge", "99", *at)
    assert unknown.returncode == 1
    assert unknown.stderr == f"gearsql: no dead letter 99 on 127.0.0.1:{server.port}\n"
    neither = gearsql("dead", "retry", *at)
    assert neither.returncode == 1
    assert neither.stderr == "gearsql: give a dead letter ID or --all (not both)\n"
    # The resubmitted job fails twice more (the worker still fails) and is a dead letter again.
    with admin_of(server) as admin:
        wait_until(lambda: len(admin.show_dead()) == 1, "the resubmitted job's dead letter")
    assert sorted(workers.runs()).count("fail b-1") == 4


def test_dead_list_against_c_gearmand_is_one_error_line(gearmand_server: ServerProcess) -> None:
    result = gearsql("dead", "list", "-h", "127.0.0.1", "-p", str(gearmand_server.port))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines == [
        f"gearsql: 127.0.0.1:{gearmand_server.port} keeps no dead letters or retry policies "
        "(is it C gearmand? it answered UNKNOWN_SHOW_ARGUMENTS)"
    ]


@pytest.mark.parametrize("value", ["0", "5:1", "x", "-1:3"])
def test_a_bad_retry_backoff_is_refused_before_the_server_starts(value: str) -> None:
    result = gearsql("server", "--store", "memory", "--retry-backoff", value)
    assert result.returncode == 2
    assert "--retry-backoff" in result.stderr and "Traceback" not in result.stderr


def test_the_retries_command_shows_sets_and_resets_a_functions_policy(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    server = start_server(tmp_path, "memory", "--retries", "3", "--retry-backoff", "2:60")
    servers.append(server)
    at = ["-h", "127.0.0.1", "-p", str(server.port)]
    assert gearsql("retries", "mail", *at).stdout == "mail: 3 2:60 (server default)\n"
    assert gearsql("retries", "mail", "5", "0.5:10", *at).stdout == "mail: 5 0.5:10\n"
    with admin_of(server) as admin:
        assert tuple(admin.retries("mail")) == (5, 0.5, 10.0, False)
    assert gearsql("retries", "mail", "0", *at).stdout == "mail: 0 2:60\n"
    assert gearsql("retries", "mail", "--default", *at).stdout == (
        "mail: 3 2:60 (server default)\n"
    )
    bad = gearsql("retries", "mail", "1", "9:3", *at)
    assert (bad.returncode, bad.stderr.count("\n")) == (1, 1)
    assert bad.stderr.startswith("gearsql: backoff '9:3'")
