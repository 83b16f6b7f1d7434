"""Real database servers for tests: a DSN from the environment, else Docker, else a skip.

Each test session works in a database of its own (created here, dropped at the end), so the
suite never touches anyone's data on a shared server. ``GEARSQL_TEST_REQUIRE_DB=1`` (set in CI)
turns "no database" (no DSN, no Docker, no driver) into a stop instead of a skip. A server that
does not answer is never a skip, with or without it: a DSN given is a DSN meant, so an
unreachable one stops the run once with one clear message instead of a failure or a skip per
test (``tests/test_databases.py``).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

REQUIRE_DB = os.environ.get("GEARSQL_TEST_REQUIRE_DB") == "1"


def _no_database(kind: str, why: str) -> NoReturn:
    message = f"no {kind} server for the tests: {why}"
    if REQUIRE_DB:
        pytest.exit(message + " (GEARSQL_TEST_REQUIRE_DB=1 forbids skipping)", returncode=1)
    pytest.skip(message)


def _cannot_connect(kind: str, dsn: str, exc: Exception) -> NoReturn:
    """Stop the whole run: the database it was pointed at does not answer or refuses it."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    pytest.exit(
        f"cannot connect to the {kind} server at {_without_password(dsn)}: {reason}", returncode=1
    )


def _without_password(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _docker_available() -> bool:
    """Whether a Docker engine answers /_ping (asked directly: the docker package leaks a
    socket when no engine is there, which warnings-as-errors turns into a test error)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True  # a remote engine: testcontainers will say if it does not answer
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(3)
        try:
            sock.connect(host[len("unix://") :])
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"OK" in sock.recv(1024)
        except OSError:
            return False


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@contextmanager
def postgres_database() -> Iterator[str]:
    """A DSN for a fresh PostgreSQL database, dropped afterwards."""
    dsn = os.environ.get("GEARSQL_TEST_PG_DSN")
    container = None
    if not dsn:
        if not _docker_available():
            _no_database("PostgreSQL", "set GEARSQL_TEST_PG_DSN (or start a Docker engine)")
        from testcontainers.postgres import PostgresContainer  # type: ignore[import-untyped]

        container = PostgresContainer("postgres:16", driver=None).start()
        dsn = container.get_connection_url()
    try:
        import psycopg
    except ImportError:
        _no_database("PostgreSQL", "psycopg is not installed (pip install -e '.[postgres]')")
    try:
        admin = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        _cannot_connect("PostgreSQL", dsn, exc)
    name = f"gearsql_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(dsn, name)
    finally:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()
        if container is not None:
            container.stop()


def mysql_connect_args(dsn: str) -> dict[str, object]:
    parts = urlsplit(dsn)
    args: dict[str, object] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": parts.username or "root",
        "password": parts.password or "",
    }
    if parts.path.strip("/"):
        args["database"] = parts.path.strip("/")
    return args


@contextmanager
def mysql_database() -> Iterator[str]:
    """A DSN for a fresh MySQL/MariaDB database, dropped afterwards."""
    dsn = os.environ.get("GEARSQL_TEST_MYSQL_DSN")
    container = None
    if not dsn:
        if not _docker_available():
            _no_database("MySQL/MariaDB", "set GEARSQL_TEST_MYSQL_DSN (or start a Docker engine)")
        from testcontainers.mysql import MySqlContainer  # type: ignore[import-untyped]

        container = MySqlContainer("mariadb:11").start()
        dsn = container.get_connection_url().replace("mysql+pymysql://", "mysql://")
    try:
        import mysql.connector
    except ImportError:
        _no_database("MySQL/MariaDB", "mysql-connector-python is not installed")
    args = mysql_connect_args(dsn)
    args.pop("database", None)
    try:
        admin = mysql.connector.connect(**args, connection_timeout=5, autocommit=True)
    except mysql.connector.Error as exc:
        _cannot_connect("MySQL/MariaDB", dsn, exc)
    name = f"gearsql_test_{os.getpid()}_{secrets.token_hex(3)}"
    cursor = admin.cursor()
    cursor.execute(f"CREATE DATABASE `{name}`")
    try:
        yield _with_database(dsn, name)
    finally:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()
        if container is not None:
            container.stop()
