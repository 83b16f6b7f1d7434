"""The outbox of a MariaDB or MySQL database (mysql-connector-python), woken by the outbox's row
events in the binlog (mysql-replication) where the binlog is on in ROW format and the account
may read it, else polled. InnoDB writes a transaction's events to the binlog when it commits,
so a rolled-back row never wakes the relay; the table stays the only source of truth."""

from __future__ import annotations

import logging
import random
import re
import threading
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, Literal

from gearsql._log import NOTICE
from gearsql._mysqlurl import MySQLConnection, MySQLCursor
from gearsql._sqlcommon import DEAD_COLUMNS
from gearsql.relay._thread import watch_in_thread
from gearsql.relay.batch import OutboxRow, as_bytes, inline_bytes, rows_from_claim
from gearsql.relay.origin import check_mysql
from gearsql.relay.source import (
    SENT_KEEP_IDS,
    SENT_KEEP_SECONDS,
    OutboxMissing,
    Sent,
    SideTask,
    Source,
    close_quietly,
)

if TYPE_CHECKING:
    import asyncio

    from gearsql.client import AsyncClient

__all__ = ["MySQLConnection", "MySQLCursor", "MySQLSource", "binlog_problem"]

log = logging.getLogger("gearsql.relay")
_DEAD = ", ".join(DEAD_COLUMNS)

#: Seconds between the binlog's heartbeats, which is also how soon its reader notices a stop.
HEARTBEAT = 0.5


def _skip_locked(version: str) -> bool:
    numbers = [int(part) for part in re.findall(r"\d+", version)[:2]] + [0, 0]
    if "mariadb" in version.lower():
        return (numbers[0], numbers[1]) >= (10, 6)
    return numbers[0] >= 8


def _servers_setting(cursor: MySQLCursor) -> str | None:
    """The ``servers`` row of ``gman_settings``; None when it or the table is missing or this
    user may not read it (the relay then keeps to the servers it was given)."""
    import mysql.connector

    try:
        cursor.execute("SELECT value FROM gman_settings WHERE name = 'servers'")
        row = cursor.fetchone()
    except mysql.connector.Error:
        return None
    return None if row is None else str(row[0])


def _integers(ids: Sequence[int]) -> str:
    """``ids`` as a list of SQL literals."""
    return ",".join(str(int(id_)) for id_ in ids)


def _binary(value: bytes) -> str:
    """``value`` as a hexadecimal SQL literal (binary string)."""
    return f"X'{value.hex()}'"


def _text(value: str) -> str:
    """``value`` as a utf8mb4 hexadecimal SQL literal: no escaping to get wrong."""
    return f"_utf8mb4 X'{value.encode('utf-8').hex()}'"


def binlog_problem(cursor: MySQLCursor) -> str | None:
    """Why the relay cannot follow this server's binlog (None when it can): the binlog must be
    on in ROW format, mysql-replication installed, and the account allowed to read it."""
    cursor.execute("SELECT @@log_bin, @@binlog_format")
    log_bin, binlog_format = cursor.fetchone()
    if not int(log_bin):
        return "the binlog is off (log_bin=OFF)"
    if str(binlog_format).upper() != "ROW":
        return f"binlog_format is {binlog_format}, not ROW"
    try:
        import pymysqlreplication  # type: ignore[import-untyped,unused-ignore]  # noqa: F401
    except ImportError:
        return "mysql-replication is not installed (pip install 'gearsql[mysql]')"
    cursor.execute("SHOW GRANTS")
    grants = " ".join(str(row[0]).upper() for row in cursor.fetchall())
    if "ALL PRIVILEGES ON *.*" not in grants and "REPLICATION SLAVE" not in grants:
        return "the account lacks the REPLICATION SLAVE privilege"
    errors = []
    for statement in ("SHOW MASTER STATUS", "SHOW BINARY LOG STATUS"):  # MySQL 8.4 renamed it
        try:
            cursor.execute(statement)
            status = cursor.fetchall()
        except Exception as exc:  # no BINLOG MONITOR / REPLICATION CLIENT, or the other name
            errors.append(str(exc))
            continue
        return None if status else f"{statement} returns nothing"
    return f"cannot read the binlog position: {errors[0]}"


class MySQLSource(Source):
    """``gman_outbox`` in the DSN's database; ``wanted`` is ``auto``, ``binlog`` or ``poll``."""

    wake: Literal["binlog", "poll"]

    def __init__(self, dsn: str, wanted: Literal["auto", "binlog", "poll"] = "auto") -> None:
        from gearsql._mysqlurl import connect_config

        if wanted not in ("auto", "binlog", "poll"):
            raise ValueError(f"a MySQL relay follows the binlog or polls, not {wanted!r}")
        self.dsn = dsn
        self.config = {**connect_config(dsn), "autocommit": False}
        self.database = str(self.config["database"])
        self.wanted = wanted
        self.wake = "poll" if wanted == "auto" else wanted
        self.conn: MySQLConnection | None = None
        self.skip_locked = True
        self.mariadb = False
        self._identity = f"mysql:{self.config['host']}:{self.config['port']}:{self.database}"
        self._chosen = False
        #: Whether gman_outbox_sent and gman_relay_contact exist (asked at the first use after
        #: a connect; an older install has neither, and the relay records nothing there).
        self._extras: tuple[bool, bool] | None = None
        self._routes_denied = False

    def open(self) -> None:
        import mysql.connector

        self.close()
        conn: MySQLConnection = mysql.connector.connect(**self.config)
        self.conn = conn
        cursor = conn.cursor()
        try:
            # No gap locks: a claim must not block the application's inserts into the outbox.
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            cursor.execute("SELECT VERSION(), @@hostname, @@port")
            version, hostname, port = cursor.fetchone()
            cursor.execute(
                "SELECT COUNT(*), COUNT(NULLIF(table_name, 'gman_outbox')) "
                "FROM information_schema.tables WHERE table_schema = DATABASE() "
                "AND table_name IN ('gman_outbox', 'gman_outbox_dead')"
            )
            tables, dead_tables = (int(n) for n in cursor.fetchone())
            tables -= dead_tables
            self.keeps_dead = dead_tables > 0
            self.servers_setting = _servers_setting(cursor) if tables else None
            problem = binlog_problem(cursor) if not self._chosen and self.wanted != "poll" else None
        finally:
            cursor.close()
        conn.rollback()
        self._identity = f"mysql:{hostname}:{port}:{self.database}"
        self.mariadb = "mariadb" in str(version).lower()
        self.skip_locked = _skip_locked(str(version))
        if not tables:
            raise OutboxMissing(
                f"gman_outbox does not exist in database {self.database!r}: run "
                "`gearsql install mysql` first"
            )
        check_mysql(conn, self.dsn)  # a restored copy stops here
        if not self._chosen:
            self._chosen = True
            if not self.skip_locked:
                log.warning("%s has no SKIP LOCKED: relays on it take turns", version)
            self._choose_wake(problem)

    def _choose_wake(self, problem: str | None) -> None:
        if self.wanted == "poll":
            return
        if problem is None:
            self.wake = "binlog"
        elif self.wanted == "binlog":
            raise ValueError(f"--source binlog: {problem}")
        else:
            self.wake = "poll"
            log.log(NOTICE, "%s: polling the outbox, because %s", self.describe(), problem)

    def identity(self) -> str:
        return self._identity

    def describe(self) -> str:
        return f"mysql {self.config['host']}:{self.config['port']}/{self.database}"

    def _connection(self) -> MySQLConnection:
        assert self.conn is not None, "open() first"
        return self.conn

    def claim(self, limit: int, max_bytes: int, skip: Collection[bytes] = ()) -> list[OutboxRow]:
        where = f"WHERE function NOT IN ({','.join(map(_binary, skip))}) " if skip else ""
        cursor = self._connection().cursor()
        try:
            lock = "FOR UPDATE SKIP LOCKED" if self.skip_locked else "FOR UPDATE"
            # Lock and read in one statement, but a workload too large to come inline only
            # once its row is within the budget. FORCE INDEX: right after a bulk insert the
            # table's statistics are stale, and a full scan with a sort would lock every row.
            cursor.execute(
                "SELECT id, function, unique_key, IF(LENGTH(workload) <= %s, workload, NULL), "
                "priority, LENGTH(workload) FROM gman_outbox FORCE INDEX (PRIMARY) "
                f"{where}ORDER BY id LIMIT %s {lock}",
                (inline_bytes(limit, max_bytes), limit),
            )
            claimed = cursor.fetchall()
        finally:
            cursor.close()
        if not claimed:
            self._connection().rollback()
            return []
        return rows_from_claim(claimed, max_bytes, self._workloads)

    def _workloads(self, ids: list[int]) -> dict[int, bytes]:
        cursor = self._connection().cursor()
        try:
            cursor.execute(
                "SELECT id, workload FROM gman_outbox FORCE INDEX (PRIMARY) "
                f"WHERE id IN ({_integers(ids)})"
            )
            return {int(id_): bytes(workload) for id_, workload in cursor.fetchall()}
        finally:
            cursor.close()

    def _has_extras(self) -> tuple[bool, bool]:
        if self._extras is None:
            cursor = self._connection().cursor()
            try:
                cursor.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = DATABASE() "
                    "AND table_name IN ('gman_outbox_sent', 'gman_relay_contact')"
                )
                names = {str(row[0]) for row in cursor.fetchall()}
            finally:
                cursor.close()
            self._extras = ("gman_outbox_sent" in names, "gman_relay_contact" in names)
        return self._extras

    def finish(
        self, ids: list[int], dead: Sequence[tuple[int, str]] = (), sent: Sequence[Sent] = ()
    ) -> None:
        if sent and self._has_extras()[0]:
            cursor = self._connection().cursor()
            try:
                # Literals made here: the connector's escaping of 4 parameters a row, in
                # Python, cost more than the rest of the batch.
                cursor.execute(
                    "INSERT IGNORE INTO gman_outbox_sent (id, function, handle, server) VALUES "
                    + ",".join(
                        f"({int(row.id)}, {_binary(row.function)}, {_text(row.handle)}, "
                        f"{_text(row.server)})"
                        for row in sent
                    )
                )
                cursor.execute(
                    "DELETE FROM gman_outbox_sent WHERE id <= %s", (sent[-1].id - SENT_KEEP_IDS,)
                )
                cursor.execute(
                    "DELETE FROM gman_outbox_sent WHERE sent_at < NOW(6) - INTERVAL %s SECOND",
                    (SENT_KEEP_SECONDS,),
                )
            except Exception as exc:
                self._denied(exc, "gman_outbox_sent")
            finally:
                cursor.close()
        if dead:
            cursor = self._connection().cursor()
            try:
                for id_, reason in dead:
                    if self.keeps_dead:
                        cursor.execute(
                            f"INSERT IGNORE INTO gman_outbox_dead ({_DEAD}, reason) "
                            f"SELECT {_DEAD}, %s FROM gman_outbox WHERE id = %s",
                            (reason[:1000], id_),
                        )
                    cursor.execute("DELETE FROM gman_outbox WHERE id = %s", (id_,))
            finally:
                cursor.close()
        if ids:
            cursor = self._connection().cursor()
            try:
                # One primary key lookup per id, in this order: `WHERE id IN (...)` lets
                # InnoDB scan (and lock-wait on) rows another relay holds, which deadlocks two
                # relays and undoes a batch already submitted.
                ids_table = " UNION ALL ".join(f"SELECT {int(id_)} AS id" for id_ in ids)
                cursor.execute(
                    f"DELETE o FROM ({ids_table}) AS d STRAIGHT_JOIN gman_outbox AS o "
                    "ON o.id = d.id"
                )
            finally:
                cursor.close()
        self._connection().commit()

    def contact(self, relay: str, servers: str) -> None:
        if not self._has_extras()[1]:
            self._connection().rollback()
            return
        cursor = self._connection().cursor()
        try:
            cursor.execute(
                "INSERT INTO gman_relay_contact (relay, last_contact, servers) "
                "VALUES (%s, NOW(6), %s) "
                "ON DUPLICATE KEY UPDATE last_contact = NOW(6), servers = VALUES(servers)",
                (relay, servers),
            )
        except Exception as exc:
            self._denied(exc, "gman_relay_contact")
        finally:
            cursor.close()
        self._connection().commit()

    def _denied(self, exc: Exception, table: str) -> None:
        """A relay account without the privileges on ``table`` (an install made again without
        ``--relay-account``) records nothing there, rather than fail every batch; anything else
        is raised. The statement's failure leaves the rest of the transaction as it was."""
        if getattr(exc, "errno", None) not in (1142, 1143):  # table or column access denied
            raise exc
        sent, contact = self._has_extras()
        self._extras = (False, contact) if table == "gman_outbox_sent" else (sent, False)
        log.warning(
            "%s: this account may not write %s (%s); the relay records nothing there: "
            "run the install again with --relay-account",
            self.describe(),
            table,
            exc,
        )

    def function_servers(self) -> dict[bytes, str]:
        """``gman_function_servers`` ({} without the table or the privilege to read it)."""
        conn = self._connection()
        idle = not getattr(conn, "in_transaction", True)
        cursor = conn.cursor()
        try:
            cursor.execute("SELECT function, servers FROM gman_function_servers")
            rows = cursor.fetchall()
        except Exception as exc:
            # No such table (an older install), no SELECT on it (no --relay-account grant).
            if getattr(exc, "errno", None) not in (1142, 1146):
                raise
            if getattr(exc, "errno", None) == 1142 and not self._routes_denied:
                self._routes_denied = True
                log.warning(
                    "%s: this account may not read gman_function_servers (%s); every function "
                    "goes to the relay's servers: run the install again with --relay-account",
                    self.describe(),
                    exc,
                )
            rows = []
        finally:
            cursor.close()
        if idle:
            conn.rollback()
        return {as_bytes(function): str(servers) for function, servers in rows}

    def close(self) -> None:
        self._extras = None
        conn, self.conn = self.conn, None
        close_quietly(conn)

    async def watch(self, wake: Callable[[], None]) -> None:
        if self.wake != "binlog":
            await super().watch(wake)
            return
        await watch_in_thread(self._follow_binlog, wake, "gearsql-relay-binlog")

    def _follow_binlog(self, wake: Callable[[], None], stopping: threading.Event) -> None:
        from pymysqlreplication import BinLogStreamReader  # type: ignore[import-untyped,unused-ignore]
        from pymysqlreplication.event import (  # type: ignore[import-untyped,unused-ignore]
            HeartbeatLogEvent,
        )
        from pymysqlreplication.row_event import (  # type: ignore[import-untyped,unused-ignore]
            WriteRowsEvent,
        )

        # It asks for binlog_row_metadata=FULL on every connect, for column names this
        # follower does not read.
        logging.getLogger("pymysqlreplication").setLevel(logging.ERROR)
        settings: dict[str, Any] = {
            "host": self.config["host"],
            "port": int(self.config["port"]),
            "user": self.config["user"],
            "passwd": self.config["password"],
            "connect_timeout": 10,
        }
        if "unix_socket" in self.config:
            settings["unix_socket"] = self.config["unix_socket"]
        start: dict[str, Any] = {"resume_stream": True}
        if self.mariadb:
            # From the current end: MariaDB starts a dump without a GTID position at the
            # beginning of the oldest binlog.
            start["auto_position"] = self._gtid_position()
        stream = BinLogStreamReader(
            connection_settings=settings,
            server_id=random.randint(100_000, 2**31 - 1),
            blocking=True,
            only_events=[WriteRowsEvent, HeartbeatLogEvent],
            only_schemas=[self.database],
            only_tables=["gman_outbox"],
            is_mariadb=self.mariadb,
            slave_heartbeat=HEARTBEAT,
            **start,
        )
        try:
            wake()  # rows committed before the stream started
            log.info("%s: following the binlog", self.describe())
            for event in stream:
                if stopping.is_set():
                    return
                if isinstance(event, WriteRowsEvent):
                    wake()
        finally:
            stream.close()

    def _gtid_position(self) -> str:
        import mysql.connector

        conn: MySQLConnection = mysql.connector.connect(**{**self.config, "autocommit": True})
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT @@gtid_binlog_pos")
            (position,) = cursor.fetchone()
            cursor.close()
        finally:
            conn.close()
        return str(position or "")

    def side_tasks(self) -> list[SideTask]:
        """MariaDB's foreground ``gman_do`` calls (:mod:`gearsql.bridges.mysql_calls`) when the
        database has their table ``gman_calls``."""
        conn = self._connection()
        cursor = conn.cursor()
        try:
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = 'gman_calls'"
            )
            (tables,) = cursor.fetchone()
        finally:
            cursor.close()
        conn.rollback()
        if not tables:
            return []
        from gearsql._mysqlurl import connector
        from gearsql.bridges.mysql_calls import serve_calls

        async def calls(client: AsyncClient, stop: asyncio.Event) -> None:
            await serve_calls(connector(self.dsn), client, self.database, stop)

        return [calls]
