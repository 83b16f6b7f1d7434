"""The cookbook's SQL-driven pipelines end to end, in PostgreSQL, SQLite and MariaDB.

Everything is real: a ``gearsql server`` process, the gman_* functions installed with ``gearsql
install`` (SQLite: ``gearsql.sqlite``), the example schemas of ``sql/examples/`` loaded the way a
DBA loads them (psql, the mariadb client, ``executescript``), a ``gearsql relay`` process, the
example workers as processes, an HTTP server standing in for the Twitter API and an SMTP server.
An INSERT that commits reaches the outside world exactly once; one that rolls back never does.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import http.server
import json
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from conftest import REQUIRE_TOOLS, ServerProcess, free_port
from wire import Peer

ROOT = Path(__file__).resolve().parents[1]
SQL = ROOT / "sql" / "examples"
EXAMPLES = ROOT / "examples"
WAIT = 30.0  # for what must arrive

TITLE = 'Café ☕ it\'s "done"'
URL = "https://example.org/posts/1?a=1&b='2'"


def need_client(*names: str) -> str:
    """The first of ``names`` on PATH: a database's own command-line client."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    message = f"no {' or '.join(names)} command-line client on PATH"
    if REQUIRE_TOOLS:
        pytest.fail(message + "; GEARSQL_TEST_REQUIRE_TOOLS=1 forbids skipping")
    pytest.skip(message)


def gearsql(*args: str) -> None:
    """Run a gearsql command to its end, as an operator would."""
    done = subprocess.run(
        [sys.executable, "-m", "gearsql", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"gearsql {args[0]}: exit {done.returncode}\n{done.stderr}"


# -- the databases ---------------------------------------------------------------------------


class Database(Protocol):
    """A database with the gman_* functions and the example schemas installed."""

    dsn: str  # what `gearsql relay --dsn` is given

    def insert(self, table: str, row: dict[str, str], *, commit: bool = True) -> None:
        """INSERT ``row`` into ``table`` in a transaction of its own, committed or rolled back."""

    def outbox(self) -> int:
        """Rows in the outbox: jobs committed that the relay has not yet submitted."""


class Postgres:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        gearsql("install", "postgres", "--dsn", dsn)
        psql = need_client("psql")
        subprocess.run(
            [
                psql,
                dsn,
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-f",
                str(SQL / "postgres" / "tweets.sql"),
                "-f",
                str(SQL / "postgres" / "mail.sql"),
            ],
            check=True,
            timeout=60,
            capture_output=True,
        )

    def insert(self, table: str, row: dict[str, str], *, commit: bool = True) -> None:
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            columns = ", ".join(row)
            marks = ", ".join(["%s"] * len(row))
            conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", list(row.values()))
            if commit:
                conn.commit()
            else:
                conn.rollback()

    def outbox(self) -> int:
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            row = conn.execute("SELECT count(*) FROM gearsql.gman_outbox").fetchone()
            return int(row[0]) if row else 0


class MariaDB:
    def __init__(self, dsn: str) -> None:
        from databases import mysql_connect_args

        self.dsn = dsn
        self.args = mysql_connect_args(dsn)
        gearsql("install", "mysql", "--dsn", dsn)
        client = need_client("mariadb", "mysql")
        command = [
            client,
            "-h",
            str(self.args["host"]),
            "-P",
            str(self.args["port"]),
            "-u",
            str(self.args["user"]),
            f"--password={self.args['password']}",
            str(self.args["database"]),
        ]
        for name in ("tweets.sql", "mail.sql"):
            with open(SQL / "mysql" / name, "rb") as script:
                subprocess.run(command, stdin=script, check=True, timeout=60, capture_output=True)

    def insert(self, table: str, row: dict[str, str], *, commit: bool = True) -> None:
        import mysql.connector

        conn = mysql.connector.connect(**self.args, charset="utf8mb4", autocommit=False)
        try:
            cursor = conn.cursor()
            columns = ", ".join(row)
            marks = ", ".join(["%s"] * len(row))
            cursor.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(row.values()))
            cursor.close()
            if commit:
                conn.commit()
            else:
                conn.rollback()
        finally:
            conn.close()

    def outbox(self) -> int:
        import mysql.connector

        conn = mysql.connector.connect(**self.args)
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT count(*) FROM gman_outbox")
            count = int(cursor.fetchone()[0])
            cursor.close()
            return count
        finally:
            conn.close()


class SQLite:
    """An application's SQLite file; the connection that inserts has the gman_* functions."""

    def __init__(self, path: Path) -> None:
        import gearsql.sqlite

        self.path = path
        self.dsn = f"sqlite:///{path}"
        with gearsql.sqlite.connect(str(path)) as conn:  # transactional: no job server needed
            for name in ("tweets.sql", "mail.sql"):
                conn.executescript((SQL / "sqlite" / name).read_text())
        conn.close()

    def insert(self, table: str, row: dict[str, str], *, commit: bool = True) -> None:
        import gearsql.sqlite

        conn = gearsql.sqlite.connect(str(self.path), timeout=WAIT)
        try:
            columns = ", ".join(row)
            marks = ", ".join(["?"] * len(row))
            conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(row.values()))
            if commit:
                conn.commit()
            else:
                conn.rollback()
        finally:
            conn.close()

    def outbox(self) -> int:
        conn = sqlite3.connect(self.path, timeout=WAIT)
        try:
            return int(conn.execute("SELECT count(*) FROM gman_outbox").fetchone()[0])
        finally:
            conn.close()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    pytest.importorskip("psycopg")
    from databases import postgres_database

    with postgres_database() as dsn:  # a database of this module's own, dropped at the end
        yield Postgres(dsn)


@pytest.fixture(scope="module")
def mariadb() -> Iterator[MariaDB]:
    pytest.importorskip("mysql.connector")
    from databases import mysql_database

    with mysql_database() as dsn:
        yield MariaDB(dsn)


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.pg),
        pytest.param("sqlite"),
        pytest.param("mariadb", marks=pytest.mark.mysql),
    ]
)
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if request.param == "sqlite":
        return SQLite(tmp_path_factory.mktemp("sqlite") / "app.db")
    return request.getfixturevalue(request.param)


# -- processes -------------------------------------------------------------------------------


class Processes:
    """Child processes (relay, workers) with their output in files, stopped at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        with open(self.directory / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self.running.append((name, proc))
        return proc

    def report(self) -> str:
        """What each process printed, and how those that ended ended."""
        parts = []
        for name, proc in self.running:
            code = proc.poll()
            state = "running" if code is None else f"exited with {code}"
            text = (self.directory / f"{name}.log").read_text(errors="replace")
            parts.append(f"--- {name} ({state}):\n{text[-4000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for _, proc in reversed(self.running):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in self.running:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    yield running
    running.stop()


def servers(server: ServerProcess) -> str:
    return f"{server.host}:{server.port}"


def start_relay(processes: Processes, database: Database, server: ServerProcess) -> None:
    processes.start(
        "relay",
        [
            sys.executable,
            "-m",
            "gearsql",
            "relay",
            "--dsn",
            database.dsn,
            "--servers",
            servers(server),
            "--poll-interval",
            "0.1",
        ],
    )


# -- the outside world: a tweet API and an SMTP server ----------------------------------------


class TweetAPI:
    """An HTTP server in a thread that keeps every POST it gets."""

    def __init__(self) -> None:
        self.posts: queue.Queue[tuple[str, str, bytes]] = queue.Queue()
        self.failures = 0  # answer this many POSTs with 503 first
        posts = self.posts
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                posts.put((self.path, self.headers.get("Content-Type", ""), body))
                if api.failures > 0:
                    api.failures -= 1
                    self.send_error(503, "Service Unavailable")
                    return
                answer = b'{"data": {"id": "1"}}'
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/2/tweets"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(WAIT)


@pytest.fixture
def tweet_api() -> Iterator[TweetAPI]:
    api = TweetAPI()
    yield api
    api.close()


class Mailbox:
    """An aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: queue.Queue[tuple[Any, email.message.EmailMessage]] = queue.Queue()
        self.refusals = 0  # answer this many messages with 451 (try again later) first

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refusals > 0:
            self.refusals -= 1
            return "451 4.3.0 Try again later"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        self.messages.put((envelope, message))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[tuple[str, Mailbox]]:
    from aiosmtpd.controller import Controller

    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), ready_timeout=WAIT)
    controller.start()
    try:
        yield f"127.0.0.1:{controller.port}", mailbox
    finally:
        controller.stop()


def arrive(box: queue.Queue[Any], processes: Processes, what: str) -> Any:
    try:
        return box.get(timeout=WAIT)
    except queue.Empty:
        pytest.fail(f"{what} did not arrive within {WAIT:g} s\n{processes.report()}")


def idle(server: ServerProcess) -> bool:
    """Whether the server holds no job at all, queued or running (its `status` lines)."""
    with Peer(server.address) as peer:
        lines = peer.admin("status").decode().splitlines()
    return all(int(line.split("\t")[1]) == 0 for line in lines if "\t" in line)


def nothing_more(box: queue.Queue[Any], database: Database, server: ServerProcess) -> list[Any]:
    """Whatever else reached ``box`` once nothing is left that could still reach it (the test
    expects nothing): the outbox is empty, so the relay has submitted every committed row, and
    the server holds no job, so every worker has finished (a worker posts or mails before it
    reports the job complete)."""
    deadline = time.monotonic() + WAIT
    while database.outbox() or not idle(server):
        assert time.monotonic() < deadline, "the outbox or the job server never emptied"
        time.sleep(0.05)
    extra = []
    while not box.empty():
        extra.append(box.get_nowait())
    return extra


# -- the pipelines ---------------------------------------------------------------------------


def test_a_committed_blog_entry_is_tweeted_once_and_a_rolled_back_one_never(
    database: Database,
    gearsql_server: ServerProcess,
    processes: Processes,
    tweet_api: TweetAPI,
) -> None:
    start_relay(processes, database, gearsql_server)
    processes.start(
        "tweet_worker",
        [
            sys.executable,
            str(EXAMPLES / "tweet_worker.py"),
            "--servers",
            servers(gearsql_server),
            "--api-url",
            tweet_api.url,
        ],
    )

    database.insert(
        "blog_entries", {"title": "Never published", "url": "https://example.org/x"}, commit=False
    )
    database.insert("blog_entries", {"title": TITLE, "url": URL})

    path, content_type, body = arrive(tweet_api.posts, processes, "the tweet")
    assert (path, content_type) == ("/2/tweets", "application/json")
    assert json.loads(body) == {"text": f"{TITLE} - {URL}"}
    assert nothing_more(tweet_api.posts, database, gearsql_server) == []


def test_a_committed_outgoing_mail_is_sent_once_and_a_rolled_back_one_never(
    database: Database,
    gearsql_server: ServerProcess,
    processes: Processes,
    smtp_server: tuple[str, Mailbox],
) -> None:
    smtp, mailbox = smtp_server
    start_relay(processes, database, gearsql_server)
    processes.start(
        "mail_worker",
        [
            sys.executable,
            str(EXAMPLES / "mail_worker.py"),
            "--servers",
            servers(gearsql_server),
            "--smtp",
            smtp,
        ],
    )

    database.insert(
        "outgoing_mail",
        {
            "recipient": "mallory@example.com",
            "subject": "Undone",
            "body": "This transaction rolls back.",
        },
        commit=False,
    )
    database.insert(
        "outgoing_mail",
        {
            "sender": "alice@example.com",
            "recipient": "bob@example.com",
            "subject": "Lunch? ☕",
            "body": "At noon, café.\n",
        },
    )

    envelope, message = arrive(mailbox.messages, processes, "the mail")
    assert (envelope.mail_from, envelope.rcpt_tos) == ("alice@example.com", ["bob@example.com"])
    assert (message["From"], message["To"], message["Subject"]) == (
        "alice@example.com",
        "bob@example.com",
        "Lunch? ☕",
    )
    assert message["Message-ID"].endswith("@gearsql.example>")
    assert message.get_content().replace("\r\n", "\n") == "At noon, café.\n"  # SMTP has CRLF
    assert nothing_more(mailbox.messages, database, gearsql_server) == []


def test_mail_queued_while_no_worker_runs_is_sent_when_one_starts(
    database: Database,
    gearsql_server: ServerProcess,
    processes: Processes,
    smtp_server: tuple[str, Mailbox],
) -> None:
    """The queue decouples the application from the mail server: the INSERT returns at once
    and the message leaves when a worker is there."""
    smtp, mailbox = smtp_server
    start_relay(processes, database, gearsql_server)
    for n in range(3):
        database.insert(
            "outgoing_mail",
            {"recipient": f"user{n}@example.com", "subject": f"Newsletter {n}", "body": "Hello."},
        )
    processes.start(
        "mail_worker",
        [
            sys.executable,
            str(EXAMPLES / "mail_worker.py"),
            "--servers",
            servers(gearsql_server),
            "--smtp",
            smtp,
        ],
    )
    received = [arrive(mailbox.messages, processes, f"mail {n}")[1] for n in range(3)]
    assert sorted((m["From"], m["To"], m["Subject"]) for m in received) == [
        ("gearsql@localhost", f"user{n}@example.com", f"Newsletter {n}") for n in range(3)
    ]
    assert len({m["Message-ID"] for m in received}) == 3
    assert nothing_more(mailbox.messages, database, gearsql_server) == []


def test_the_example_http_sink_answers_like_the_tweet_api(tmp_path: Path) -> None:
    """examples/http_sink.py, the stand-in the docker compose file runs for the Twitter API."""
    import urllib.request

    port = free_port()
    processes = Processes(tmp_path)
    proc = processes.start(
        "http_sink",
        [
            sys.executable,
            str(EXAMPLES / "http_sink.py"),
            "--port",
            str(port),
        ],
    )
    try:
        deadline = time.monotonic() + WAIT
        while True:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/2/tweets",
                data=json.dumps({"text": "hi ☕"}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    status, answer = response.status, json.loads(response.read())
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, processes.report()
                time.sleep(0.05)
    finally:
        processes.stop()
    assert status == 201 and answer["data"]["text"] == "hi ☕"
    assert 'POST /2/tweets {"text": "hi \\u2615"}' in processes.report()


def test_every_database_has_both_example_pipelines() -> None:
    assert sorted(path.relative_to(SQL).as_posix() for path in SQL.glob("*/*.sql")) == [
        f"{db}/{name}"
        for db in ("mysql", "postgres", "sqlite")
        for name in ("mail.sql", "tweets.sql")
    ]
    mysql_tweets = (SQL / "mysql" / "tweets.sql").read_text()
    # The trigger written for the old gearman-mysql-udf, unchanged.
    assert (
        "CREATE TRIGGER tweet_blog BEFORE INSERT ON blog_entries FOR EACH ROW "
        "SET @ret=gman_do_background('send_tweet', CONCAT(NEW.title, \" - \", NEW.url));"
    ) in mysql_tweets.splitlines()


# -- when the outside world fails for a moment -----------------------------------------------


def test_the_tweet_worker_tries_again_when_the_api_is_unavailable(
    gearsql_server: ServerProcess, processes: Processes, tweet_api: TweetAPI, tmp_path: Path
) -> None:
    """A background job that fails is never run again, so the worker itself retries a 5xx."""
    database = SQLite(tmp_path / "app.db")
    tweet_api.failures = 1
    start_relay(processes, database, gearsql_server)
    processes.start(
        "tweet_worker",
        [
            sys.executable,
            str(EXAMPLES / "tweet_worker.py"),
            "--servers",
            servers(gearsql_server),
            "--api-url",
            tweet_api.url,
            "--retries",
            "1",
        ],
    )
    database.insert("blog_entries", {"title": "Second try", "url": "https://example.org/2"})
    refused = arrive(tweet_api.posts, processes, "the first POST")
    accepted = arrive(tweet_api.posts, processes, "the second POST")
    assert (
        json.loads(refused[2])
        == json.loads(accepted[2])
        == {"text": "Second try - https://example.org/2"}
    )
    assert nothing_more(tweet_api.posts, database, gearsql_server) == []
    assert "tweeted: Second try - https://example.org/2" in processes.report()


def test_the_mail_worker_tries_again_after_a_temporary_smtp_failure(
    gearsql_server: ServerProcess,
    processes: Processes,
    smtp_server: tuple[str, Mailbox],
    tmp_path: Path,
) -> None:
    smtp, mailbox = smtp_server
    database = SQLite(tmp_path / "app.db")
    mailbox.refusals = 1
    start_relay(processes, database, gearsql_server)
    processes.start(
        "mail_worker",
        [
            sys.executable,
            str(EXAMPLES / "mail_worker.py"),
            "--servers",
            servers(gearsql_server),
            "--smtp",
            smtp,
            "--retries",
            "1",
        ],
    )
    database.insert(
        "outgoing_mail",
        {"recipient": "dave@example.com", "subject": "Greylisted", "body": "Hello."},
    )
    _, message = arrive(mailbox.messages, processes, "the mail")
    assert (message["To"], message["Subject"]) == ("dave@example.com", "Greylisted")
    assert nothing_more(mailbox.messages, database, gearsql_server) == []
    assert "451" in processes.report()
