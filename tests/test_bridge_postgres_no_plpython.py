"""gearsql in a PostgreSQL database without PL/Python, as managed services offer it.

Two installs on the same server: one by a role that owns its database but is no superuser (it may
not create plpython3u, so the install detects that and goes without), one by a superuser with
``--no-plpython``. Background calls write the outbox (transactional mode); the other functions
fail with SQLSTATE 0A000 saying they need PL/Python.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

pytestmark = pytest.mark.pg


@pytest.fixture
def dsns() -> Iterator[tuple[str, str]]:
    """A fresh database owned by a role that is no superuser: (that role's DSN, the DSN of the
    test server's superuser)."""
    psycopg = pytest.importorskip("psycopg")
    from databases import postgres_database

    role = f"gearsql_owner_{secrets.token_hex(4)}"
    with postgres_database() as dsn:
        parts = urlsplit(dsn)
        database = parts.path.lstrip("/")
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER')
            admin.execute(f'ALTER DATABASE "{database}" OWNER TO "{role}"')
            admin.execute(f'ALTER SCHEMA public OWNER TO "{role}"')
            try:
                netloc = role + "@" + parts.netloc.rsplit("@", 1)[-1]
                yield urlunsplit(parts._replace(netloc=netloc)), dsn
            finally:
                admin.execute(f'REASSIGN OWNED BY "{role}" TO CURRENT_USER')
                admin.execute(f'DROP OWNED BY "{role}"')
                admin.execute(f'DROP ROLE "{role}"')


def _check_background_only(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'SET search_path = "{schema}"')
        with conn.transaction():
            handle = conn.execute(
                "SELECT gman_do_low_background('record', 'kept', 'u1')"
            ).fetchone()[0]
        assert handle.startswith("outbox:")
        row = conn.execute(
            "SELECT function, unique_key, workload, priority FROM gman_outbox"
        ).fetchone()
        assert (bytes(row[0]), bytes(row[1]), bytes(row[2]), row[3]) == (
            b"record",
            b"u1",
            b"kept",
            "low",
        )
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="function name is empty"):
            conn.execute("SELECT gman_do_background('', 'x')")
        for sql in (
            "SELECT gman_do('reverse', 'x')",
            "SELECT gman_servers_set('a:1')",
            "SELECT * FROM gman_job_status('H:x:1')",
            "SELECT gman_sum('count', 'x') FROM generate_series(1, 2)",
        ):
            with pytest.raises(
                psycopg.errors.FeatureNotSupported, match=r"needs PL/Python \(plpython3u\)"
            ):
                conn.execute(sql)
        conn.execute(
            f"UPDATE \"{schema}\".gman_settings SET value = 'immediate' "
            "WHERE name = 'background_mode'"
        )
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="'immediate', which needs"):
            conn.execute("SELECT gman_do_background('record', 'x')")
        assert (
            conn.execute(
                "SELECT count(*) FROM pg_extension WHERE extname = 'plpython3u'"
            ).fetchone()[0]
            == 0
        )


def test_an_owner_that_is_no_superuser_installs_without_plpython(dsns: tuple[str, str]) -> None:
    from gearsql.bridges.postgres import install, plpython_available

    owner_dsn = dsns[0]
    assert plpython_available(owner_dsn) is False
    assert install(owner_dsn, "gearsql") is False
    _check_background_only(owner_dsn, "gearsql")


def test_a_superuser_installs_without_plpython_when_told(dsns: tuple[str, str]) -> None:
    from gearsql.bridges.postgres import plpython_available

    superuser = dsns[1]
    assert plpython_available(superuser) is True  # it could, but is told not to
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gearsql",
            "install",
            "postgres",
            "--dsn",
            superuser,
            "--schema",
            "bare",
            "--no-plpython",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert "without PL/Python" in result.stdout
    _check_background_only(superuser, "bare")
