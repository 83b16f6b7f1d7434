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
            self.route_sql = "SELECT gearsql.gman_servers_set(%s, %s)"
            self.outbox = "gearsql.gman_outbox"
        else:
            from gearsql.bridges.mysql import install as install_mysql

            install_mysql(dsn)
            self.settings = "gman_settings"
            self.background = "gman_do_background"
            self.route_sql = "SELECT gman_servers_set_function(%s, %s)"
            self.outbox = "gman_outbox"

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

    def set_servers(self, *servers: ServerProcess) -> None:
        self._run(
            f"UPDATE {self.settings} SET value = %s WHERE name = 'servers'",
            (",".join(f"{server.host}:{server.port}" for server in servers),),
        )

    def route(self, server: ServerProcess | None, function: str) -> Any:
        """gman_servers_set(servers, function) (MariaDB: gman_servers_set_function)."""
        servers = None if server is None else f"{server.host}:{server.port}"
        ((chosen,),) = self._run(self.route_sql, (servers, function))
        return chosen

    def enqueue(self, workload: str, function: str = "servers_probe") -> None:
        """A transactional background call, as an application makes it."""
        ((handle,),) = self._run(f"SELECT {self.background}(%s, %s)", (function, workload))
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


def test_rows_of_a_function_with_servers_of_its_own_go_there_within_the_allowed(
    installed: _Installed,
    gearsql_server: ServerProcess,
    second_server: ServerProcess,
    tmp_path: Path,
) -> None:
    """gman_servers_set(servers, function) in the database: the relay submits that function's
    rows to those servers, the others as before; a removal is followed with the next batch; a
    choice the installer no longer allows is ignored with a warning."""
    one = f"{gearsql_server.host}:{gearsql_server.port}"
    two = f"{second_server.host}:{second_server.port}"
    installed.set_servers(gearsql_server, second_server)
    assert installed.route(second_server, "fs_a") == two
    assert installed.route(second_server, "fs_c") == two
    relay = _relay(installed, None, tmp_path)
    try:
        relay.wait_log(f"jobs of function 'fs_a' go to {two} (gman_servers_set)")
        for number in range(10):
            installed.enqueue(f"a{number}", "fs_a")
            installed.enqueue(f"b{number}", "fs_b")
        eventually(lambda: queued(second_server, "fs_a") == 10, what="fs_a on server 2")
        eventually(
            lambda: queued(gearsql_server, "fs_b") + queued(second_server, "fs_b") == 10,
            what="fs_b on the servers setting's servers",
        )
        assert queued(gearsql_server, "fs_a") == 0

        assert installed.route(None, "fs_a") is None  # back to the default: both servers
        for number in range(20):
            installed.enqueue(f"again{number}", "fs_a")
        eventually(
            lambda: queued(gearsql_server, "fs_a") + queued(second_server, "fs_a") == 30,
            what="fs_a relayed again",
        )
        assert queued(gearsql_server, "fs_a") > 0

        installed.set_servers(gearsql_server)  # the installer narrows the allowed servers
        installed.drop_relay_connections()
        relay.wait_log(f"the servers setting changed from {one},{two} to {one}")
        relay.wait_log(f"gman_servers_set chose '{two}' for function 'fs_c', but this relay")
        installed.enqueue("narrowed", "fs_c")
        eventually(lambda: queued(gearsql_server, "fs_c") == 1, what="fs_c on server 1")
        assert queued(second_server, "fs_c") == 0
        assert relay.log().count("for function 'fs_c'") == 1
    finally:
        code = relay.stop()
    assert code == 0, relay.log()


def test_a_functions_own_servers_being_down_holds_up_only_its_rows(
    installed: _Installed,
    gearsql_server: ServerProcess,
    second_server: ServerProcess,
    tmp_path: Path,
) -> None:
    """The rows of a function whose own servers are down wait in the outbox (logged once, tried
    again with backoff) while the rows of other functions, written after them, are submitted;
    when those servers are back, the waiting rows follow."""
    two = f"{second_server.host}:{second_server.port}"
    installed.set_servers(gearsql_server, second_server)
    installed.route(second_server, "fs_down")
    second_server.stop()
    relay = _relay(installed, None, tmp_path)
    try:
        relay.wait_log(f"jobs of function 'fs_down' go to {two} (gman_servers_set)")
        for number in range(5):  # the oldest rows are those of the function that cannot go
            installed.enqueue(f"down{number}", "fs_down")
        for number in range(10):
            installed.enqueue(f"up{number}", "fs_up")
        eventually(lambda: queued(gearsql_server, "fs_up") == 10, what="fs_up past fs_down")
        relay.wait_log(f"{two}, the servers of function(s) 'fs_down', do not take jobs")
        # The submitted rows leave the outbox when the relay's transaction commits, just after
        # their JOB_CREATED: the function's own rows stay.
        eventually(
            lambda: installed._run(f"SELECT count(*) FROM {installed.outbox}") == [(5,)],
            what="only fs_down's rows in the outbox",
        )
        second_server.start()
        eventually(lambda: queued(second_server, "fs_down") == 5, what="fs_down once back")
        relay.wait_log(f"{two} take jobs again")
        assert queued(gearsql_server, "fs_down") == 0
        assert relay.log().count("do not take jobs") == 1
    finally:
        code = relay.stop()
    assert code == 0, relay.log()


@pytest.mark.mysql
def test_mariadb_foreground_calls_of_a_function_go_to_its_servers(
    gearsql_server: ServerProcess, second_server: ServerProcess, tmp_path: Path
) -> None:
    """gman_do in MariaDB runs through the relay: a function with servers of its own runs on
    them (the worker is only there)."""
    import threading

    from databases import mysql_database

    from gearsql import Worker

    worker = Worker(f"{second_server.host}:{second_server.port}")
    worker.register("fs_fg", lambda job: job.data[::-1])
    thread = threading.Thread(
        target=worker.run_forever, kwargs={"handle_signals": False}, daemon=True
    )
    thread.start()
    with mysql_database() as dsn:
        installed = _Installed("mariadb", dsn)
        installed.set_servers(gearsql_server, second_server)
        installed._run("UPDATE gman_settings SET value = '20' WHERE name = 'timeout'")
        installed.route(second_server, "fs_fg")
        relay = _relay(installed, None, tmp_path)
        try:
            for number in range(4):  # not one of them reaches server 1, which has no worker
                ((result,),) = installed._run("SELECT gman_do('fs_fg', %s)", (f"call{number}",))
                assert bytes(result) == f"call{number}".encode()[::-1]
        finally:
            code = relay.stop()
            worker.stop()
            thread.join(10)
        assert code == 0, relay.log()


def test_function_routes_keep_within_the_relays_servers_warn_once_and_share_clients(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The relay's side of gman_function_servers without a database: each entry resolved
    against the relay's servers, one client per distinct list, one warning per entry."""
    import asyncio
    import logging

    from gearsql.client import AsyncClient
    from gearsql.relay.routes import FunctionRoutes

    async def main() -> None:
        default = AsyncClient("h1:1,h2:2")
        routes = FunctionRoutes("db")
        entries = {b"a": "h2:2", b"b": "h3:3,h2:2", b"c": "h3:3", b"d": "bad:x"}
        with caplog.at_level(logging.INFO, logger="gearsql.relay"):
            routes.update(entries, default)
            routes.update(dict(entries), default)  # read again, unchanged: no new lines
        a = routes.client_for("a", default)
        assert a.servers == ["h2:2"] and a is not default
        assert routes.client_for(b"b", default) is a  # h3 is outside: the same list as a's
        for function in ("c", "d", "other"):
            assert routes.client_for(function, default) is default
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 3, warnings
        assert (
            "for function 'b', but this relay submits only to h1:1,h2:2; its jobs go to h2:2"
            in (warnings[0])
        )
        assert warnings[1].endswith("the choice is ignored: its jobs go to those")
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="gearsql.relay"):
            routes.update({b"b": "h3:3,h2:2"}, default)
        assert [r.getMessage() for r in caplog.records] == [
            "db: jobs of function 'a' go to the relay's servers again (h1:1,h2:2)"
        ]
        assert routes.client_for("a", default) is default
        await routes.close()
        await default.close()

    asyncio.run(main())
