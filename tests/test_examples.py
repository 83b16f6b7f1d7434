"""The recipes in examples/ run as documented: real job server, worker processes or threads,
and real services (an SMTP server, an HTTP server, SQLite)."""

from __future__ import annotations

import contextlib
import email
import email.policy
import functools
import http.server
import json
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerProcess, free_port

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
WAIT = 30.0


def recipe(name: str, server: ServerProcess, *args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / f"{name}.py"), "--servers", server_url(server), *args]


def server_url(server: ServerProcess) -> str:
    return f"{server.host}:{server.port}"


def run_recipe(name: str, server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a recipe command to its end (within WAIT seconds) and capture its output."""
    return subprocess.run(
        recipe(name, server, *args), capture_output=True, text=True, timeout=WAIT, check=False
    )


@contextlib.contextmanager
def background(
    command: list[str], stop_signal: int = signal.SIGTERM
) -> Iterator[subprocess.Popen[str]]:
    """A recipe process (a worker, a waiting client) stopped and reaped at the end."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(stop_signal)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def line_reader(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """Lines of ``proc``'s stdout, readable with a timeout."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def explain(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


# -- scatter/gather ----------------------------------------------------------------------------


def test_scatter_gather_makes_thumbnails_on_worker_processes(
    gearsql_server: ServerProcess, tmp_path: Path
) -> None:
    image_module = pytest.importorskip("PIL.Image", reason="pip install 'gearsql[examples]'")
    sizes = {"wide.jpg": (640, 480), "tall.png": (300, 900), "small.gif": (50, 40)}
    expected = {}
    for name, size in sizes.items():
        image = image_module.new("RGB", size, (200, 30, 90))
        image.save(tmp_path / name)
        image.thumbnail((64, 64))  # what the worker is asked to do, done here directly
        expected[Path(name).stem] = image.size
    out = tmp_path / "thumbs"

    worker = recipe("scatter_gather", gearsql_server, "worker", "--size", "64")
    with background(worker), background(worker):
        done = run_recipe(
            "scatter_gather",
            gearsql_server,
            "run",
            "--workers",
            "0",
            "--out",
            str(out),
            *(str(tmp_path / name) for name in sizes),
        )
    assert done.returncode == 0, explain(done)
    for stem, size in expected.items():
        with image_module.open(out / f"{stem}.thumb.png") as thumb:
            assert (thumb.format, thumb.size) == ("PNG", size)


def test_scatter_gather_reports_a_bad_image_and_keeps_the_others(
    gearsql_server: ServerProcess, tmp_path: Path
) -> None:
    image_module = pytest.importorskip("PIL.Image", reason="pip install 'gearsql[examples]'")
    image_module.new("RGB", (400, 200)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")

    done = run_recipe(  # two worker threads inside the recipe's own process
        "scatter_gather",
        gearsql_server,
        "run",
        "--out",
        str(tmp_path),
        str(tmp_path / "bad.png"),
        str(tmp_path / "good.png"),
    )
    assert done.returncode == 1, explain(done)
    assert "bad.png: failed: " in done.stderr and "UnidentifiedImageError" in done.stderr
    with image_module.open(tmp_path / "good.thumb.png") as thumb:
        assert thumb.size == (128, 64)


# -- map/reduce --------------------------------------------------------------------------------


def test_map_reduce_aggregates_like_a_direct_count(
    gearsql_server: ServerProcess, tmp_path: Path
) -> None:
    rng = random.Random(3)
    paths = ["/", "/index.html", "/api/items?id=7", "/static/app.js", "/img/logo.png"]
    statuses = Counter[str]()
    sent = Counter[str]()
    lines = []
    for n in range(2000):
        path, status = rng.choice(paths), rng.choice(["200", "200", "304", "404", "500"])
        size = rng.choice(["-", str(rng.randrange(0, 50_000))])
        statuses[status] += 1
        sent[path] += 0 if size == "-" else int(size)
        lines.append(
            f"10.0.{n % 4}.{n % 250} - frank [10/Oct/2000:13:55:{n % 60:02d} -0700] "
            f'"GET {path} HTTP/1.1" {status} {size} "http://ref.example/" "curl/8.0"'
        )
        if n % 500 == 0:
            lines.append("a line that is not a log entry")
    log = tmp_path / "access.log"
    log.write_text("\n".join(lines) + "\n")

    # Workers per operation, in their own processes.
    with (
        background(recipe("map_reduce", gearsql_server, "worker", "count_status")),
        background(recipe("map_reduce", gearsql_server, "worker", "bytes_by_path")),
        background(recipe("map_reduce", gearsql_server, "worker", "sum_counts")),
    ):
        done = run_recipe(
            "map_reduce",
            gearsql_server,
            "run",
            "--workers",
            "0",
            "--chunk-lines",
            "97",
            "--json",
            str(log),
        )
    assert done.returncode == 0, explain(done)
    report = json.loads(done.stdout)
    assert report == {"count_status": dict(statuses), "bytes_by_path": dict(sent)}


def test_map_reduce_prints_a_report_with_its_own_workers(
    gearsql_server: ServerProcess, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    log.write_text(
        '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /a HTTP/1.0" 200 100\n'
        '1.2.3.4 - - [10/Oct/2000:13:55:37 -0700] "GET /a HTTP/1.0" 404 -\n'
        '1.2.3.4 - - [10/Oct/2000:13:55:38 -0700] "POST /b HTTP/1.0" 200 7\n'
    )
    done = run_recipe("map_reduce", gearsql_server, "run", "--chunk-lines", "1", str(log))
    assert done.returncode == 0, explain(done)
    assert done.stdout.split() == (
        "requests by status: 200 2 404 1 top paths by bytes sent: 100 /a 7 /b".split()
    )


# -- asynchronous queue: delayed e-mail -------------------------------------------------------


class Mailbox:
    """An aiosmtpd handler keeping each message with the time it arrived."""

    def __init__(self) -> None:
        self.messages: queue.Queue[tuple[float, email.message.EmailMessage]] = queue.Queue()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        self.messages.put((time.time(), message))
        return "250 Message accepted for delivery"

    def receive(self) -> tuple[float, email.message.EmailMessage]:
        return self.messages.get(timeout=WAIT)


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


def test_delayed_email_is_sent_by_the_worker_now_and_later(
    gearsql_server: ServerProcess, smtp_server: tuple[str, Mailbox]
) -> None:
    smtp, mailbox = smtp_server
    with background(recipe("delayed_email", gearsql_server, "worker", "--smtp", smtp)):
        done = run_recipe(
            "delayed_email",
            gearsql_server,
            "send",
            "--to",
            "bob@example.com",
            "--from",
            "alice@example.com",
            "--subject",
            "Lunch?",
            "--body",
            "At noon.",
        )
        assert done.returncode == 0, explain(done)
        _, message = mailbox.receive()
        assert (message["From"], message["To"], message["Subject"]) == (
            "alice@example.com",
            "bob@example.com",
            "Lunch?",
        )
        assert message["Message-ID"].endswith("@gearsql.example>")
        assert message.get_content().strip() == "At noon."

        done = run_recipe(
            "delayed_email",
            gearsql_server,
            "send",
            "--to",
            "carol@example.com",
            "--subject",
            "Later",
            "--body",
            "Sent with a delay.",
            "--delay",
            "1.5",
        )
        assert done.returncode == 0, explain(done)
        due = int(done.stdout.rsplit("(epoch ", 1)[1].rstrip(")\n"))
        arrived, message = mailbox.receive()
    assert (message["To"], message["Subject"]) == ("carol@example.com", "Later")
    assert message.get_content().strip() == "Sent with a delay."
    assert arrived >= due  # an epoch job never runs before its time
    assert mailbox.messages.empty()


# -- pipeline: the search engine --------------------------------------------------------------


PAGES = {
    "cats.html": ("All about cats", "Cats purr and sleep most of the day."),
    "dogs.html": ("All about dogs", "Dogs bark at the postman."),
    "birds.html": ("All about birds", "Birds sing at dawn, then sleep in trees."),
}


@pytest.fixture
def website(tmp_path: Path) -> Iterator[tuple[str, Counter[str]]]:
    """A local HTTP server with generated pages; yields its base URL and GETs per path."""
    site = tmp_path / "site"
    site.mkdir()
    for name, (title, text) in PAGES.items():
        site.joinpath(name).write_text(
            f"<html><head><title>{title}</title><style>p {{ color: red }}</style></head>"
            f"<body><h1>{title}</h1><p>{text}</p><script>var hidden = 'zebra';</script>"
            "</body></html>"
        )
    fetched: Counter[str] = Counter()
    lock = threading.Lock()

    class CountingHandler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                fetched[self.path] += 1
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(CountingHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", fetched
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(WAIT)


def test_search_engine_indexes_each_url_once_and_finds_pages(
    gearsql_server: ServerProcess, website: tuple[str, Counter[str]], tmp_path: Path
) -> None:
    base, fetched = website
    db = str(tmp_path / "index.db")
    cats, dogs, birds = (f"{base}/{name}" for name in PAGES)

    done = run_recipe(
        "search_engine",
        gearsql_server,
        "--db",
        db,
        "crawl",
        cats,
        dogs,
        cats,
        birds,
        cats,
    )
    assert done.returncode == 0, explain(done)
    # Every submitter of a URL gets an answer: those in flight together share one job.
    assert sum(cats in line for line in done.stdout.splitlines()) == 3
    assert f"indexed {cats}: All about cats" in done.stdout
    assert fetched == {"/cats.html": 1, "/dogs.html": 1, "/birds.html": 1}

    def search(query: str) -> set[str]:
        found = run_recipe("search_engine", gearsql_server, "--db", db, "search", query)
        assert found.returncode == 0, explain(found)
        return set(found.stdout.splitlines())

    assert search("sleep") == {f"{cats}\tAll about cats", f"{birds}\tAll about birds"}
    assert search("postman") == {f"{dogs}\tAll about dogs"}
    assert search("title:birds") == {f"{birds}\tAll about birds"}
    assert search("zebra") == set()  # script text is not indexed

    # A later crawl of a known URL is dropped before fetching, by fetchers in their own process.
    with (
        background(recipe("search_engine", gearsql_server, "--db", db, "fetcher")),
        background(recipe("search_engine", gearsql_server, "--db", db, "indexer")),
    ):
        again = run_recipe(
            "search_engine", gearsql_server, "--db", db, "crawl", "--workers", "0", cats
        )
    assert again.returncode == 0, explain(again)
    assert again.stdout.strip() == f"skipped {cats}: already indexed"
    assert fetched["/cats.html"] == 1


# -- timeouts ----------------------------------------------------------------------------------


def test_timeouts_client_deadline_gives_up_on_a_slow_worker(
    gearsql_server: ServerProcess,
) -> None:
    slow = recipe("timeouts", gearsql_server, "worker", "--name", "slow", "--delay", "60")
    with background(slow, stop_signal=signal.SIGKILL):  # its job would keep it busy for 60 s
        done = run_recipe("timeouts", gearsql_server, "call", "hello", "--deadline", "1")
    assert done.returncode == 1, explain(done)
    assert "gave up: job 'slow_upper': no answer within 1 s" in done.stdout
    assert "result:" not in done.stdout


def test_timeouts_worker_timeout_requeues_the_stuck_job_to_another_worker(
    gearsql_server: ServerProcess,
) -> None:
    stuck = recipe(
        "timeouts", gearsql_server, "worker", "--name", "stuck", "--delay", "60", "--timeout", "1"
    )
    healthy = recipe("timeouts", gearsql_server, "worker", "--name", "healthy")
    call = recipe("timeouts", gearsql_server, "call", "hello", "--deadline", str(WAIT))
    with (
        background(stuck, stop_signal=signal.SIGKILL),
        background(call, stop_signal=signal.SIGKILL) as caller,
    ):
        lines = line_reader(caller)
        assert lines.get(timeout=WAIT) == "update: stuck started"
        # Only now a second worker: the server must take the job back from the stuck one.
        with background(healthy):
            assert lines.get(timeout=WAIT) == "update: healthy started"
            assert lines.get(timeout=WAIT) == "result: healthy: HELLO"
            assert caller.wait(WAIT) == 0


def test_timeouts_demo_shows_both_in_one_command(gearsql_server: ServerProcess) -> None:
    done = run_recipe("timeouts", gearsql_server, "demo")
    assert done.returncode == 0, explain(done)
    assert "JobTimeout: job 'slow_upper': no answer within 1 s" in done.stdout
    assert done.stdout.splitlines()[-3:] == [
        "   update: stuck started",
        "   update: healthy started",
        "   result: healthy: HELLO",
    ]
