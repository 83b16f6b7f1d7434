"""A user's mistake on the command line is one ``gearsql: ...`` line on stderr and a non-zero
exit status, never a traceback; each case runs the real ``python -m gearsql`` in a subprocess,
against the real databases where one is involved."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ServerProcess, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent


def gearsql(
    *args: str, home: Path, cwd: Path = ROOT, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m gearsql ARGS`` with its own HOME (so the default store is the test's)."""
    env = {key: value for key, value in os.environ.items() if key != "XDG_STATE_HOME"}
    env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "gearsql", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The process failed with exactly one line on stderr, ``gearsql: ...``, holding each of
    ``expected``; returns that line."""
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gearsql: "), result.stderr
    for text in expected:
        assert text in lines[0]
    return lines[0]


# ------------------------------------------------------------------------------ gearsql server


def test_the_example_config_file_runs_as_written_from_the_repository(tmp_path: Path) -> None:
    """server/gearsql.conf, as the README gives it (only the port is the test's own: options
    on the command line win over the file's)."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "XDG_STATE_HOME"}
    env["HOME"] = str(tmp_path)
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gearsql",
            "server",
            "--config-file",
            "server/gearsql.conf",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            wait_for_port(port, proc, timeout=60)  # type: ignore[arg-type]
        finally:
            proc.terminate()
            _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert f"listening on 127.0.0.1:{port}" in stderr
    assert (tmp_path / ".local" / "state" / "gearsql" / "queue.sqlite3").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--store", "memroy"], ["--store: unknown store 'memroy'", "use memory"]),
        (["--store", "redis://127.0.0.1:6379/0"], ["unknown store 'redis://", "postgresql://"]),
        (["--store", "sqlite://queue.db"], ["the path follows three slashes", "sqlite:////"]),
        (["--store", "sqlite:///q.db?max_size=lots"], ["max_size is a size in bytes", "100MB"]),
        (
            ["-l", "/nodir/x.log"],
            ["-l/--log-file: cannot open /nodir/x.log", "create its directory"],
        ),
        (["-P", "/nodir/x.pid"], ["-P/--pid-file: /nodir does not exist"]),
    ],
)
def test_a_bad_server_option_is_one_line(
    tmp_path: Path, args: list[str], expected: list[str]
) -> None:
    result = gearsql("server", "--port", str(free_port()), *args, home=tmp_path)
    assert_one_error_line(result, *expected)
    assert not Path("/nodir").exists()


def test_a_missing_directory_of_an_explicit_sqlite_store_is_an_error_not_created(
    tmp_path: Path,
) -> None:
    result = gearsql(
        "server",
        "--port",
        str(free_port()),
        "--store",
        "sqlite:///nodir/q.db",
        home=tmp_path,
        cwd=tmp_path,
    )
    assert_one_error_line(result, f"{tmp_path}/nodir does not exist")
    assert not (tmp_path / "nodir").exists()
    assert not (tmp_path / ".local").exists()  # nor the default state directory


@pytest.mark.parametrize("form", ["relative", "absolute"])
def test_sqlite_store_urls_are_relative_with_three_slashes_absolute_with_four(
    tmp_path: Path, form: str
) -> None:
    (tmp_path / "data").mkdir()
    url = "sqlite:///data/q.db" if form == "relative" else f"sqlite:///{tmp_path}/data/q.db"
    assert url.startswith("sqlite:////") == (form == "absolute")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "XDG_STATE_HOME"}
    env["HOME"] = str(tmp_path)
    with subprocess.Popen(
        [sys.executable, "-m", "gearsql", "server", "--port", str(port), "--store", url],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            wait_for_port(port, proc, timeout=60)  # type: ignore[arg-type]
        finally:
            proc.terminate()
            _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert f"store: sqlite {tmp_path}/data/q.db " in stderr
    assert (tmp_path / "data" / "q.db").exists()


def test_server_help_lists_every_store_kind(tmp_path: Path) -> None:
    result = gearsql("server", "--help", home=tmp_path)
    text = " ".join(result.stdout.split())
    for kind in (
        "sqlite:///RELATIVE/PATH",
        "sqlite:////ABSOLUTE/PATH",
        "postgresql://",
        "mysql://",
        "memory",
    ):
        assert kind in text


# ------------------------------------------------------------------------- install, uninstall


def test_install_postgres_with_a_mysql_url_says_which_dsn_it_needs(tmp_path: Path) -> None:
    result = gearsql(
        "install", "postgres", "--dsn", "mysql://root@127.0.0.1:3306/test", home=tmp_path
    )
    assert_one_error_line(result, "not a PostgreSQL DSN", "postgresql://user@host")


def test_install_mysql_with_a_postgresql_url_says_which_dsn_it_needs(tmp_path: Path) -> None:
    result = gearsql(
        "install", "mysql", "--dsn", "postgresql://postgres@127.0.0.1/postgres", home=tmp_path
    )
    assert_one_error_line(result, "not a MySQL URL", "mysql://user:pw@host")


@contextlib.contextmanager
def postgres_role(dsn: str, name: str) -> Iterator[None]:
    """A login role without privileges, dropped afterwards (with what it owns)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{name}" LOGIN')
        try:
            yield
        finally:
            admin.execute(f'DROP OWNED BY "{name}"')
            admin.execute(f'DROP ROLE "{name}"')


def test_install_postgres_by_a_role_that_is_no_superuser_goes_without_plpython(
    tmp_path: Path, pg_dsn: str
) -> None:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    role = f"gearsql_nosuper_{secrets.token_hex(3)}"
    with postgres_role(pg_dsn, role), psycopg.connect(pg_dsn, autocommit=True) as admin:
        database = conninfo_to_dict(pg_dsn)["dbname"]
        dsn = make_conninfo(pg_dsn, user=role)
        schema = f"nosuper_{secrets.token_hex(3)}"
        # Without CREATE on the database: one line naming the role and what is needed.
        result = gearsql("install", "postgres", "--dsn", dsn, "--schema", schema, home=tmp_path)
        assert_one_error_line(result, f"(as {role})", "needs CREATE on the database", "superuser")
        admin.execute(f'GRANT CREATE ON DATABASE "{database}" TO "{role}"')
        try:
            # With it: what the server allows a role that is no superuser, no PL/Python.
            result = gearsql("install", "postgres", "--dsn", dsn, "--schema", schema, home=tmp_path)
            assert result.returncode == 0, result.stderr
            assert "without PL/Python" in result.stdout
        finally:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            admin.execute(f'REVOKE CREATE ON DATABASE "{database}" FROM "{role}"')


@contextlib.contextmanager
def mysql_account(dsn: str, name: str) -> Iterator[str]:
    """An account without privileges, dropped afterwards; yields its mysql:// URL."""
    from urllib.parse import urlsplit, urlunsplit

    import mysql.connector
    from databases import mysql_connect_args

    args = mysql_connect_args(dsn)
    args.pop("database", None)
    admin = mysql.connector.connect(**args, autocommit=True)
    cursor = admin.cursor()
    cursor.execute(f"CREATE USER '{name}'@'%'")
    try:
        parts = urlsplit(dsn)
        netloc = f"{name}@{parts.hostname}:{parts.port or 3306}"
        yield urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    finally:
        cursor.execute(f"DROP USER '{name}'@'%'")
        admin.close()


def _mysql_admin(dsn: str) -> object:
    import mysql.connector
    from databases import mysql_connect_args

    return mysql.connector.connect(**mysql_connect_args(dsn), autocommit=True)


def test_install_mysql_without_privileges_says_which_are_needed(tmp_path: Path) -> None:
    pytest.importorskip("mysql.connector")
    from databases import mysql_database

    name = f"gearsql_np_{secrets.token_hex(3)}"
    with mysql_database() as dsn, mysql_account(dsn, name) as user_dsn:
        database = dsn.rsplit("/", 1)[1]
        result = gearsql("install", "mysql", "--dsn", user_dsn, home=tmp_path)
        assert_one_error_line(
            result,
            f"Access denied for user '{name}'",
            "the database's owner",
            "CREATE, INSERT, CREATE ROUTINE and ALTER ROUTINE",
        )
        # The database's owner may install, but granting to others needs the GRANT OPTION.
        admin: object = _mysql_admin(dsn)
        cursor = admin.cursor()  # type: ignore[attr-defined]
        cursor.execute(f"GRANT ALL ON `{database}`.* TO '{name}'@'%'")
        try:
            result = gearsql(
                "install", "mysql", "--dsn", user_dsn, "--grant-to", f"'{name}'@'%'", home=tmp_path
            )
            assert_one_error_line(result, "grant command denied", "GRANT OPTION")
            result = gearsql("install", "mysql", "--dsn", user_dsn, home=tmp_path)
            assert result.returncode == 0, result.stderr
            result = gearsql("uninstall", "mysql", "--dsn", user_dsn, home=tmp_path)
            assert result.returncode == 0, result.stderr
        finally:
            cursor.execute(f"REVOKE ALL ON `{database}`.* FROM '{name}'@'%'")
            admin.close()  # type: ignore[attr-defined]


# ------------------------------------------------------------------ install postgres --timeout


def test_install_postgres_timeout_sets_how_long_gman_do_waits(
    tmp_path: Path, gearsql_server: ServerProcess
) -> None:
    """--timeout is the 'timeout' setting: a gman_do no worker answers fails after it, and a
    later install without --timeout keeps it."""
    psycopg = pytest.importorskip("psycopg")
    from databases import postgres_database

    with postgres_database() as dsn:
        servers = f"{gearsql_server.host}:{gearsql_server.port}"
        result = gearsql(
            "install",
            "postgres",
            "--dsn",
            dsn,
            "--servers",
            servers,
            "--timeout",
            "1.5",
            home=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        result = gearsql("install", "postgres", "--dsn", dsn, home=tmp_path)
        assert result.returncode == 0, result.stderr
        with psycopg.connect(dsn, autocommit=True) as conn:
            setting = conn.execute(
                "SELECT value FROM gearsql.gman_settings WHERE name = 'timeout'"
            ).fetchone()
            assert setting == ("1.5",)
            with pytest.raises(psycopg.Error, match=r"no result within 1.5 s"):
                conn.execute("SELECT gearsql.gman_do('no_worker_for_this', 'x')")


@pytest.mark.parametrize("value", ["soon", "0", "-1", "86401"])
def test_install_postgres_refuses_a_timeout_that_is_not_seconds(tmp_path: Path, value: str) -> None:
    result = gearsql("install", "postgres", "--print-sql", "--timeout", value, home=tmp_path)
    assert result.returncode == 2
    assert "timeout must be" in result.stderr
    assert "Traceback" not in result.stderr
