"""One truth for where transactional jobs go: the relay submits to the database's own
``servers`` setting (the one its gman_* functions use), follows a change of it, and takes
``--servers`` only as an override it logs. Real PostgreSQL and MariaDB, two real job servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerProcess
from relaying import RelayProcess, eventually, queued


class _Installed:
    """A database with the functions installed by the real installer (``gearsql install``)."""

    def __init__(self, kind: str, dsn: str) -> None:
        self.kind = kind
        self.dsn = dsn
        if kind == "postgres":
            from gearsql.bridges.postgres import install

            install(dsn)
            self.settings = "gearsql.gman_settings"
            self.background = "gearsql.gman_do_background"
        else:
            from gearsql.bridges.mysql import install as install_mysql

            install_mysql(dsn)
            self.settings = "gman_settings"
            self.background = "gman_do_background"

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.kind == "postgres":
            import psycopg

            with psycopg.connect(self.dsn, autocommit=True) as conn:
                cursor = conn.execute(sql, args)
                return cursor.fetchall() if cursor.description else []
        import mysql.connector
        from databases import mysql_connect_args

        conn = mysql.connector.connect(**mysql_connect_args(self.dsn), autocommit=True)
        try:
            cursor = conn.cursor()
            cursor.execute(sql, args)
            rows = cursor.fetchall() if cursor.description else []
            cursor.close()
            return list(rows)
        finally:
            conn.close()

    def set_servers(self, server: ServerProcess) -> None:
        self._run(
            f"UPDATE {self.settings} SET value = %s WHERE name = 'servers'",
            (f"{server.host}:{server.port}",),
        )

    def enqueue(self, workload: str) -> None:
        """A transactional background call, as an application makes it."""
        ((handle,),) = self._run(f"SELECT {self.background}(%s, %s)", ("servers_probe", workload))
        assert str(handle).startswith("outbox:")

    def drop_relay_connections(self) -> None:
        """Break the relay's database connections, as a database restart would."""
        if self.kind == "postgres":
            self._run(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return
        others = self._run(
            "SELECT id FROM information_schema.processlist "
            "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
        )
        for (thread,) in others:
            try:
                self._run(f"KILL {int(thread)}")
            except Exception:  # it ended meanwhile
                pass


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.pg),
        pytest.param("mariadb", marks=pytest.mark.mysql),
    ]
)
def installed(request: pytest.FixtureRequest) -> Iterator[_Installed]:
    from databases import mysql_database, postgres_database

    fresh: Any = postgres_database if request.param == "postgres" else mysql_database
    with fresh() as dsn:
        yield _Installed(request.param, dsn)


@pytest.fixture
def second_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess("gearsql", tmp_path / "second.log", ["--store", "memory"]).start()
    try:
        yield server
    finally:
        server.stop()


def _relay(installed: _Installed, servers: str | None, tmp_path: Path) -> RelayProcess:
    relay = RelayProcess(installed.dsn, servers, tmp_path / "relay.log")
    relay.wait_log("relaying ")
    return relay


def test_the_relay_submits_to_the_databases_servers_setting_and_follows_a_change(
    installed: _Installed,
    gearsql_server: ServerProcess,
    second_server: ServerProcess,
    tmp_path: Path,
) -> None:
    installed.set_servers(gearsql_server)
    relay = _relay(installed, None, tmp_path)
    try:
        assert f"to {gearsql_server.host}:{gearsql_server.port} (" in relay.log()
        installed.enqueue("first")
        eventually(lambda: queued(gearsql_server, "servers_probe") == 1, what="row on server 1")

        installed.set_servers(second_server)
        installed.drop_relay_connections()  # the setting is read again at the reconnect
        relay.wait_log(
            f"the servers setting changed from {gearsql_server.host}:{gearsql_server.port} "
            f"to {second_server.host}:{second_server.port}"
        )
        installed.enqueue("second")
        eventually(lambda: queued(second_server, "servers_probe") == 1, what="row on server 2")
        assert queued(gearsql_server, "servers_probe") == 1
    finally:
        code = relay.stop()
    assert code == 0, relay.log()


def test_servers_given_to_the_relay_override_the_setting_and_say_so(
    installed: _Installed,
    gearsql_server: ServerProcess,
    second_server: ServerProcess,
    tmp_path: Path,
) -> None:
    installed.set_servers(second_server)
    given = f"{gearsql_server.host}:{gearsql_server.port}"
    relay = _relay(installed, given, tmp_path)
    try:
        relay.wait_log(
            f"relaying to {given} as given, not to the database's servers setting "
            f"({second_server.host}:{second_server.port})"
        )
        installed.enqueue("overridden")
        eventually(lambda: queued(gearsql_server, "servers_probe") == 1, what="row on server 1")
        assert queued(second_server, "servers_probe") == 0
    finally:
        code = relay.stop()
    assert code == 0, relay.log()
