"""Shared fixtures: real job servers (gearsql and C gearmand) in their own processes."""

from __future__ import annotations

import importlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REQUIRE_TOOLS = os.environ.get("GEARSQL_TEST_REQUIRE_TOOLS") == "1"

# The user's own HOME, before pytest_configure points HOME at a directory of the test session's.
REAL_HOME = os.path.expanduser("~")
_STATE_VARIABLES = ("HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME")
_saved_environment: dict[str, str | None] = {}


def pytest_configure(config: pytest.Config) -> None:
    """Tests never touch the user's own state: for the whole session HOME and the XDG
    directories point into a temporary directory, so a ``gearsql server`` started without
    ``--store`` (its default is ``$XDG_STATE_HOME/gearsql/queue.sqlite3``) gets a queue of the
    session's own, never the one a ``gearsql server`` of the user's may be running on."""
    home = Path(tempfile.mkdtemp(prefix="gearsql-test-home-"))
    config.stash[_home_key] = home
    for name in _STATE_VARIABLES:
        _saved_environment[name] = os.environ.get(name)
    os.environ["HOME"] = str(home)
    os.environ["XDG_STATE_HOME"] = str(home / ".local" / "state")
    os.environ["XDG_CONFIG_HOME"] = str(home / ".config")
    os.environ["XDG_CACHE_HOME"] = str(home / ".cache")
    os.environ["XDG_DATA_HOME"] = str(home / ".local" / "share")


def pytest_unconfigure(config: pytest.Config) -> None:
    for name, value in _saved_environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    home = config.stash.get(_home_key, None)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


_home_key = pytest.StashKey[Path]()


def need_module(name: str, what: str) -> Any:
    """Imports an optional test dependency; without it the calling test module is skipped with
    the reason, or fails under GEARSQL_TEST_REQUIRE_TOOLS=1."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        message = f"{what} is not installed ({exc}): pip install -e '.[test]'"
        if REQUIRE_TOOLS:
            pytest.fail(message + "; GEARSQL_TEST_REQUIRE_TOOLS=1 forbids skipping")
        pytest.skip(message, allow_module_level=True)


#: Ports the tests hand to servers they start: below Linux's ephemeral range (32768-60999), so
#: that no outgoing connection of any test (or of the databases) takes one between the moment
#: it is found free and the moment the server binds it; random, so that test runs beside each
#: other rarely pick the same.
_PORTS = (20000, 32000)
_RANDOM = random.SystemRandom()  # not reseeded by test plugins


def free_port() -> int:
    for _ in range(200):
        port = _RANDOM.randint(*_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORTS[0]}-{_PORTS[1]}")


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on port {port} within {timeout} s")


class ServerProcess:
    """A job server running as a child process on a free loopback port."""

    def __init__(self, kind: str, log_path: Path, extra_args: list[str] | None = None):
        self.kind = kind
        self.port = free_port()
        self.host = "127.0.0.1"
        self.log_path = log_path
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def command(self) -> list[str]:
        if self.kind == "gearsql":
            return [
                sys.executable,
                "-m",
                "gearsql",
                "server",
                "--port",
                str(self.port),
                "--listen",
                self.host,
                "--log-file",
                str(self.log_path),
                "--verbose",
                "INFO",
                *self.extra_args,
            ]
        return [
            "gearmand",
            "--port",
            str(self.port),
            "--listen",
            self.host,
            "--log-file",
            str(self.log_path),
            "--verbose",
            "INFO",
            *self.extra_args,
        ]

    def start(self) -> ServerProcess:
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian packages gearman-job-server / gearman-tools)"
        if REQUIRE_TOOLS:
            pytest.fail(message + "; GEARSQL_TEST_REQUIRE_TOOLS=1 forbids skipping")
        pytest.skip(message)
    return path


@pytest.fixture
def gearsql_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh ``gearsql server`` with the in-memory store."""
    server = ServerProcess("gearsql", tmp_path / "gearsql.log", ["--store", "memory"]).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gearmand_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh C gearmand (Debian's gearman-job-server)."""
    need_tool("gearmand")
    server = ServerProcess("gearmand", tmp_path / "gearmand.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["gearsql", "gearmand"])
def any_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """Each test using this runs once against gearsql and once against C gearmand."""
    if request.param == "gearmand":
        need_tool("gearmand")
        server = ServerProcess("gearmand", tmp_path / "gearmand.log")
    else:
        server = ServerProcess("gearsql", tmp_path / "gearsql.log", ["--store", "memory"])
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """DSN of a PostgreSQL database of this test session's own."""
    from databases import postgres_database

    with postgres_database() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def mysql_dsn() -> Iterator[str]:
    """DSN of a MySQL/MariaDB database of this test session's own."""
    from databases import mysql_database

    with mysql_database() as dsn:
        yield dsn


@pytest.fixture
def relays(gearsql_server: ServerProcess, tmp_path: Path) -> Iterator[Any]:
    """Starts ``gearsql relay`` processes (tests/relaying.py) against ``gearsql_server``; all
    are stopped at the end."""
    from relaying import Relays

    relays = Relays(gearsql_server, tmp_path)
    yield relays
    relays.stop_all()


@pytest.fixture
def recorder(gearsql_server: ServerProcess) -> Iterator[Any]:
    """A real worker in a thread that records the jobs it runs (tests/relaying.py)."""
    from relaying import Recorder

    recorder = Recorder(gearsql_server)
    yield recorder
    recorder.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.databases("postgres", "sqlite")``: a test that means nothing for some
    database is not collected for it, rather than skipped (CI treats database skips as
    failures)."""
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("databases")
        callspec = getattr(item, "callspec", None)
        kind = callspec.params.get("database") if callspec is not None else None
        if marker is not None and kind is not None and kind not in marker.args:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = []
    for name in ("GEARSQL_TEST_PG_DSN", "GEARSQL_TEST_MYSQL_DSN", "GEARSQL_TEST_REQUIRE_DB"):
        lines.append(f"{name}={os.environ.get(name, '(unset)')}")
    return lines


@pytest.fixture
def tcp_proxy() -> Iterator[Any]:
    """``tcp_proxy(dsn)`` starts a real TCP proxy (tests/tcpproxy.py) in front of the database
    a ``postgresql://`` or ``mysql://`` DSN names; every proxy is closed at the end."""
    from urllib.parse import urlsplit

    from tcpproxy import TcpProxy

    proxies: list[TcpProxy] = []

    def start(dsn: str) -> TcpProxy:
        parts = urlsplit(dsn)
        default_port = 3306 if parts.scheme in ("mysql", "mariadb") else 5432
        proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or default_port))
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()


@pytest.fixture(scope="session")
def pki() -> Iterator[Any]:
    """A CA, a server certificate for localhost/127.0.0.1 and client certificates (tests/pki.py),
    made with the openssl command in a directory any local user can read (a database server's
    user reads them too)."""
    from pki import make_pki

    if shutil.which("openssl") is None:
        message = "the openssl command is not installed (Debian package openssl)"
        if REQUIRE_TOOLS:
            pytest.fail(message + "; GEARSQL_TEST_REQUIRE_TOOLS=1 forbids skipping")
        pytest.skip(message)
    directory = Path(tempfile.mkdtemp(prefix="gearsql-test-pki-"))
    directory.chmod(0o755)
    try:
        yield make_pki(directory / "pki")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
