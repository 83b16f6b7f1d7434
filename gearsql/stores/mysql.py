"""The MySQL/MariaDB store: background jobs in C gearmand's MySQL queue table, byte-exact.

``--store mysql://user:password@host:3306/db?table=gearman_queue`` (``mariadb://`` too; more
options: ``connect_timeout=5`` and ``timeout=60`` seconds, ``unix_socket=/path``). It needs
mysql-connector-python (the ``mysql`` extra). All database work runs on one thread of the
store's own; the event loop only waits for the result (``gearsql/stores/threaded.py``).

Table layout, gearsql schema version 2 (``SCHEMA_VERSION``)::

    unique_key      VARBINARY(64)       -- gearmand: VARCHAR(64)
    function_name   VARBINARY(512)      -- gearmand: VARCHAR(255)
    priority        INT
    data            LONGBLOB
    when_to_run     BIGINT              -- gearmand: INT
    id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY  -- gearsql's own
    gearsql_retries INT DEFAULT 0       -- gearsql's own (version 2): failed runs so far
    gearsql_error   BLOB                -- gearsql's own (version 2): the last run's error
    UNIQUE KEY unique_key (unique_key, function_name)

Version 2 also creates two tables shared by every queue table in the database, keyed by its
name: ``gearsql_dead`` (dead letters, numbered by the server) and ``gearsql_retry_policy``
(retry policies set per function). Version 3 adds ``gearsql_unique`` (remembered uniques of
the unique window, with their expiry and kept result), ``gearsql_unique_window`` (windows
set per function) and ``gearsql_schedule`` (recurring schedules with their next tick).

These are gearmand's columns and key, with three changes of gearsql's own:

* The key columns are binary. Uniques and function names are bytes, not text: a VARCHAR
  rejects bytes that are not valid in its character set, and its default collation ignores
  case and accents, so ``A`` and ``a`` would be one job. Binary columns compare byte by byte,
  and function names may be 512 bytes long (gearmand's own limit).
* ``when_to_run`` is a BIGINT, so epoch times after 2038 fit (gearmand's docs say BIGINT).
* ``id`` numbers the rows in the order they were first stored, so a replay is oldest first;
  a job that replaces one with the same unique and function keeps its place.

C gearmand names the columns in each of its statements, so it can still use the table.

Opening creates the table, or brings an existing one to this layout with one ``ALTER TABLE``
holding only the changes it lacks, so a table C gearmand made is taken over in place: binary
key columns, LONGBLOB data, a BIGINT ``when_to_run`` (added, as 0, to tables from gearmand
before 1.1), ``id`` as the primary key (replacing any other, such as the old libdrizzle
queue's key on ``unique_key`` alone), the unique key on (unique_key, function_name), and
InnoDB for a table in an engine without transactions. This is idempotent; the version reached
is recorded in the table ``gearsql_schema`` (name, version), as in the SQLite store, and a
table recorded with a newer version than this gearsql knows is refused.

The session uses the binary character set (values travel as bytes and are never converted) and
strict SQL mode (a unique longer than 64 bytes is an error, never silently cut).

One gearsql server per table, since two would run every job twice: the store holds the named
lock ``GET_LOCK('gearsql.<hash of database and table>')`` while connected (MySQL releases it
with the connection), and a second server fails to open (after waiting up to 3 s, in case the
holder is a server that has just stopped). When the holder is the store's own previous
connection (cut off by a network failure the server has not noticed), the store ends it with
``KILL`` and takes the lock.

Faults: connecting gives up after the connect timeout (5 s), reads and writes after the
timeout (60 s). An operation whose connection was lost (killed, closed by ``wait_timeout``, a
server restart) or that hit a deadlock runs once more, on a new connection if needed; a commit
is an upsert plus deletions by key, so running it twice is harmless. If that fails too, or
after a timeout, the store raises :class:`StoreError`; nothing loops. A job too big for the
server's ``max_allowed_packet`` is refused with a clear :class:`StoreError` before anything is
sent, and the store keeps working.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

try:
    import mysql.connector
    from mysql.connector.abstracts import MySQLConnectionAbstract, MySQLCursorAbstract
    from mysql.connector.constants import DEFAULT_CONFIGURATION
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "the MySQL store needs mysql-connector-python: pip install 'gearsql[mysql]'"
    ) from exc

from gearsql._log import reason
from gearsql._mysqlurl import literal_size, parse_mysql_url
from gearsql.stores.base import (
    JOB_COLUMNS,
    Changes,
    SideTable,
    StoredJob,
    StoreError,
    check_identifier,
    job_from_row,
    side_sql,
    side_writes,
)
from gearsql.stores.threaded import ReconnectingStore

__all__ = ["SCHEMA_VERSION", "MySQLStore"]

#: Version of gearsql's own changes to gearmand's table layout (kept in ``gearsql_schema``).
SCHEMA_VERSION = 3

#: Client errors and server errors that mean the connection is gone (not that the statement
#: was wrong): reconnecting and running the operation again may succeed.
_CONNECTION_LOST = {
    1053,  # ER_SERVER_SHUTDOWN
    1927,  # ER_CONNECTION_KILLED (MariaDB)
    2006,  # CR_SERVER_GONE_ERROR
    2013,  # CR_SERVER_LOST
    2055,  # CR_SERVER_LOST_EXTENDED
    4031,  # ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8 after wait_timeout)
}
#: The transaction was rolled back by the server and may simply be run again.
_DEADLOCK = 1213
#: The server refused a packet over max_allowed_packet and closed the connection.
_PACKET_TOO_LARGE = 1153
#: KILL of a connection that has already ended.
_UNKNOWN_THREAD = 1094
#: The driver's read and write timeouts (connector 9 and later): the connection is unusable.
_TIMEOUTS: tuple[type[Exception], ...] = tuple(
    getattr(mysql.connector.errors, name)
    for name in ("ReadTimeoutError", "WriteTimeoutError")
    if hasattr(mysql.connector.errors, name)
)

#: Quotes, commas, parentheses and the two numbers of one row in a statement, at most.
_ROW_OVERHEAD = 64
#: Statements are cut at this size even when the server would take bigger ones.
_BATCH_BYTES = 4 * 1024 * 1024
_SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION"


def _escaped_size(value: bytes) -> int:
    """An upper bound on the length of ``value`` as a quoted literal in a statement."""
    if len(value) <= 4096:  # cheaper than counting, and close enough for small values
        return 2 * len(value) + 2
    return literal_size(value)


def _as_int(value: Any) -> int:
    return int(value) if value is not None else 0


def _as_text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def _fetch(cursor: Any) -> list[tuple[Any, ...]]:
    """All rows of the last statement (plain tuples: the store never asks for dict rows)."""
    return [tuple(row) for row in cursor.fetchall()]


def _lost(exc: mysql.connector.Error) -> bool:
    """Whether the connection is gone: the server said so, or the driver has none (its own
    errors carry no number)."""
    if exc.errno in _CONNECTION_LOST:
        return True
    return exc.errno in (None, -1) and isinstance(
        exc, (mysql.connector.errors.OperationalError, mysql.connector.errors.InterfaceError)
    )


def _reason(exc: mysql.connector.Error) -> str:
    """The driver's message on one line, without its multi-line boilerplate."""
    return reason(exc.msg or str(exc))


class MySQLStore(ReconnectingStore[MySQLCursorAbstract]):
    """Durable jobs in a MySQL or MariaDB table (``--store mysql://user:pw@host/db``).

    Raises :class:`ValueError` for a URL without a database or with an unknown option, and for
    a table name that is not a plain identifier.
    """

    kind = "MySQL"
    driver_error = mysql.connector.Error

    _OPTIONS = frozenset({"table", "connect_timeout", "timeout", "unix_socket"})

    def __init__(
        self,
        url: str,
        table: str = "gearman_queue",
        connect_timeout: float = 5.0,
        timeout: float = 60.0,
    ):
        self.table = check_identifier(table)
        config, query = parse_mysql_url(url, self._OPTIONS, "MySQL store")
        host, port, user, database = (
            config["host"],
            config["port"],
            config["user"],
            config["database"],
        )
        self.database = database
        self.connect_timeout = float(query.get("connect_timeout", connect_timeout))
        self.timeout = float(query.get("timeout", timeout))
        self._where = query.get("unix_socket") or f"{host}:{port}"
        self._config: dict[str, Any] = {
            **config,
            # Every value goes over as bytes and every result comes back as bytes.
            "charset": "binary",
            "autocommit": True,
            "sql_mode": _SQL_MODE,
            "connection_timeout": max(1, round(self.connect_timeout)),
        }
        if "read_timeout" in DEFAULT_CONFIGURATION:  # connectors before 9.x have none
            self._config["read_timeout"] = self._config["write_timeout"] = max(
                1, round(self.timeout)
            )
        self.description = f"mysql {user}@{self._where}/{database} (table {self.table})"
        digest = hashlib.sha256(f"{database}.{self.table}".encode()).hexdigest()[:48]
        #: The named lock held while connected: one gearsql server per table.
        self.lock_name = f"gearsql.{digest}"
        #: The server's connection id of the store's connection (None while disconnected).
        self.connection_id: int | None = None
        super().__init__()
        #: The connection of the cursor in ``_handle`` (None while disconnected).
        self._conn: MySQLConnectionAbstract | None = None
        self._previous_id: int | None = None
        self._max_packet = 0

    # -- everything below the async methods runs on the store's own thread

    def _open(self) -> None:
        cursor = self._connect()
        try:
            self._migrate(cursor)
        except mysql.connector.Error as exc:
            self._disconnect()
            raise StoreError(
                f"cannot use MySQL table {self.database}.{self.table}: {_reason(exc)}"
            ) from exc
        except StoreError:
            self._disconnect()
            raise

    def _connect(self) -> MySQLCursorAbstract:
        """A new connection holding the table's lock, and its cursor, kept as the store's; or
        StoreError (after at most the connect timeout)."""
        try:
            conn = mysql.connector.connect(**self._config)
        except mysql.connector.errors.ConnectionTimeoutError as exc:
            raise StoreError(
                f"cannot connect to MySQL at {self._where}: no answer within "
                f"{self._config['connection_timeout']} s"
            ) from exc
        except mysql.connector.Error as exc:
            raise StoreError(f"cannot connect to MySQL at {self._where}: {_reason(exc)}") from exc
        if not isinstance(conn, MySQLConnectionAbstract):  # pragma: no cover - no pooling
            raise StoreError("unexpected pooled MySQL connection")
        try:
            # One cursor for the connection's life: making one costs a round trip (a ping).
            cursor = conn.cursor()
            cursor.execute(
                "SELECT CONNECTION_ID(), @@session.max_allowed_packet, GET_LOCK(%s, 0)",
                (self.lock_name,),
            )
            connection_id, max_packet, locked = _fetch(cursor)[0]
            if locked != 1:
                cursor.execute("SELECT IS_USED_LOCK(%s)", (self.lock_name,))
                holder = _fetch(cursor)[0][0]
                if holder is not None and _as_int(holder) == self._previous_id:
                    # Our own connection from before a network failure, which the
                    # server has not noticed yet (it would hold the lock until its
                    # wait_timeout, hours): end it, and its transaction, and go on.
                    try:
                        cursor.execute("KILL CONNECTION %s", (_as_int(holder),))
                    except mysql.connector.Error as exc:
                        if exc.errno != _UNKNOWN_THREAD:  # it ended by itself meanwhile
                            raise
                # A connection that is ending (killed just now, or closed by a server
                # that stopped a moment ago: MySQL ends sessions asynchronously) lets go
                # of the lock within moments; a live second server does not.
                wait = max(1, min(3, round(self.timeout) - 1))
                cursor.execute("SELECT GET_LOCK(%s, %s)", (self.lock_name, wait))
                locked = _fetch(cursor)[0][0]
            if locked != 1:
                raise StoreError(
                    f"the MySQL queue {self.database}.{self.table} is in use by another "
                    f"gearsql server (MySQL connection {_as_text(holder)})"
                )
        except mysql.connector.Error as exc:
            conn.close()
            raise StoreError(f"cannot set up the MySQL connection: {_reason(exc)}") from exc
        except StoreError:
            conn.close()
            raise
        self._conn, self._handle = conn, cursor
        self.connection_id = self._previous_id = _as_int(connection_id)
        self._max_packet = _as_int(max_packet)
        return cursor

    def _disconnect(self) -> None:
        conn, self._conn, self._handle, self.connection_id = self._conn, None, None, None
        if conn is not None:
            try:
                conn.close()
            except mysql.connector.Error:
                pass  # the connection was gone anyway; the server drops the lock with it

    def _migrate(self, cursor: MySQLCursorAbstract) -> None:
        table = self.table
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS gearsql_schema ("
            "name VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY, "
            "version INT NOT NULL) ENGINE=InnoDB"
        )
        cursor.execute("SELECT version FROM gearsql_schema WHERE name = %s", (table,))
        found = _fetch(cursor)
        if found and _as_int(found[0][0]) > SCHEMA_VERSION:
            raise StoreError(
                f"the MySQL table {self.database}.{table} has gearsql schema version "
                f"{_as_int(found[0][0])}, newer than this gearsql knows ({SCHEMA_VERSION}): "
                "upgrade gearsql"
            )
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS `{table}` ("
            "unique_key VARBINARY(64), function_name VARBINARY(512), priority INT, "
            "data LONGBLOB, when_to_run BIGINT, "
            "id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT, PRIMARY KEY (id), "
            "gearsql_retries INT DEFAULT 0, gearsql_error BLOB, "
            "UNIQUE KEY unique_key (unique_key, function_name)) ENGINE=InnoDB"
        )
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS gearsql_dead ("
            "queue_table VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin, id BIGINT, "
            "function_name VARBINARY(512), unique_key VARBINARY(64), priority INT, "
            "data LONGBLOB, retries INT, error BLOB, died DOUBLE, "
            "PRIMARY KEY (queue_table, id)) ENGINE=InnoDB"
        )
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS gearsql_retry_policy ("
            "queue_table VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin, "
            "function_name VARBINARY(512), attempts INT, base DOUBLE, max_delay DOUBLE, "
            "PRIMARY KEY (queue_table, function_name)) ENGINE=InnoDB"
        )
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS gearsql_unique ("
            "queue_table VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin, "
            "function_name VARBINARY(512), unique_key VARBINARY(64), expires DOUBLE, "
            "result LONGBLOB, PRIMARY KEY (queue_table, function_name, unique_key)) ENGINE=InnoDB"
        )
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS gearsql_unique_window ("
            "queue_table VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin, "
            "function_name VARBINARY(512), seconds DOUBLE, "
            "PRIMARY KEY (queue_table, function_name)) ENGINE=InnoDB"
        )
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS gearsql_schedule ("
            "queue_table VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin, "
            "name VARBINARY(64), function_name VARBINARY(512), spec VARCHAR(255), "
            "data LONGBLOB, due BIGINT, PRIMARY KEY (queue_table, name)) ENGINE=InnoDB"
        )
        changes = self._schema_changes(cursor)
        if changes:
            cursor.execute(f"ALTER TABLE `{table}` " + ", ".join(changes))
        cursor.execute(
            "INSERT INTO gearsql_schema (name, version) VALUES (%s, %s) "
            "ON DUPLICATE KEY UPDATE version = VALUES(version)",
            (table, SCHEMA_VERSION),
        )

    def _schema_changes(self, cursor: MySQLCursorAbstract) -> list[str]:
        """The ALTER TABLE clauses that bring the table to schema version 1 (none if it is)."""
        table = self.table
        cursor.execute(f"SHOW COLUMNS FROM `{table}`")
        columns = {
            _as_text(row[0]).lower(): (_as_text(row[1]).lower(), _as_text(row[5]).lower())
            for row in _fetch(cursor)
        }
        cursor.execute(f"SHOW INDEX FROM `{table}`")
        indexes: dict[str, list[tuple[int, str]]] = {}
        unique: dict[str, bool] = {}
        for row in _fetch(cursor):
            name = _as_text(row[2])
            indexes.setdefault(name, []).append((_as_int(row[3]), _as_text(row[4]).lower()))
            unique[name] = _as_int(row[1]) == 0
        keys = {name: [col for _, col in sorted(cols)] for name, cols in indexes.items()}
        cursor.execute(
            "SELECT t.ENGINE, e.TRANSACTIONS FROM information_schema.TABLES t "
            "LEFT JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE "
            "WHERE t.TABLE_SCHEMA = DATABASE() AND t.TABLE_NAME = %s",
            (table,),
        )
        engine = _fetch(cursor)

        changes = []
        for column in ("unique_key", "function_name", "priority", "data"):
            if column not in columns:
                raise StoreError(
                    f"the MySQL table {self.database}.{table} is not a Gearman queue table "
                    f"(it has no {column} column)"
                )
        for column, width in (("unique_key", 64), ("function_name", 512)):
            # A wider binary column (made by hand) may stay; anything else becomes binary.
            found = re.fullmatch(r"varbinary\((\d+)\)", columns[column][0])
            if not found or int(found.group(1)) < width:
                changes.append(f"MODIFY {column} VARBINARY({width})")
        if not columns["priority"][0].startswith("int"):
            changes.append("MODIFY priority INT")
        if columns["data"][0] != "longblob":
            changes.append("MODIFY data LONGBLOB")
        if "when_to_run" not in columns:  # gearmand before 1.1 had no epoch jobs
            changes.append("ADD COLUMN when_to_run BIGINT DEFAULT 0")
        elif not columns["when_to_run"][0].startswith("bigint"):
            changes.append("MODIFY when_to_run BIGINT")
        if "gearsql_retries" not in columns:
            changes.append("ADD COLUMN gearsql_retries INT DEFAULT 0")
        if "gearsql_error" not in columns:
            changes.append("ADD COLUMN gearsql_error BLOB")
        if "id" in columns and "auto_increment" not in columns["id"][1]:
            raise StoreError(
                f"the MySQL table {self.database}.{table} has a column id that is not "
                "gearsql's AUTO_INCREMENT row number"
            )
        if keys.get("PRIMARY") != ["id"]:
            if "PRIMARY" in keys:
                changes.append("DROP PRIMARY KEY")
            if "id" not in columns:
                changes.append("ADD COLUMN id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT")
            changes.append("ADD PRIMARY KEY (id)")
        job_key = ["unique_key", "function_name"]
        if not any(
            cols == job_key and unique[name] for name, cols in keys.items() if name != "PRIMARY"
        ):
            changes.append("ADD UNIQUE KEY gearsql_job_key (unique_key, function_name)")
        if engine and _as_text(engine[0][1]).upper() != "YES":
            changes.append("ENGINE = InnoDB")
        return changes

    def _recover(self, exc: Exception, reused: bool) -> bool:
        """Roll back, or forget the connection if it is unusable (lost, or closed by the driver
        after a timeout). A lost connection is worth one more attempt unless it was made for
        this operation; a deadlock always is."""
        assert isinstance(exc, mysql.connector.Error)
        if (
            self._conn is None
            or _lost(exc)
            or exc.errno == _PACKET_TOO_LARGE
            or isinstance(exc, _TIMEOUTS)  # a rollback would wait for the timeout again
        ):
            self._disconnect()
        else:
            try:
                self._conn.rollback()
            except mysql.connector.Error:
                self._disconnect()
        if exc.errno == _PACKET_TOO_LARGE:
            return False
        return (_lost(exc) and reused) or exc.errno == _DEADLOCK

    def _failure(self, what: str, exc: Exception, attempt: int, reused: bool) -> StoreError:
        assert isinstance(exc, mysql.connector.Error)
        if exc.errno == _PACKET_TOO_LARGE:
            return StoreError(
                f"MySQL {what} failed: the server refused a statement over its "
                "max_allowed_packet; raise max_allowed_packet on the server"
            )
        again = " (after reconnecting once)" if attempt == 2 else ""
        reason = _reason(exc)
        if isinstance(exc, _TIMEOUTS):
            reason = f"no answer within {self._config['read_timeout']} s"
        return StoreError(f"MySQL {what} failed at {self._where}{again}: {reason}")

    def _load(self, cursor: MySQLCursorAbstract) -> list[StoredJob]:
        cursor.execute(f"SELECT {', '.join(JOB_COLUMNS)} FROM `{self.table}` ORDER BY id")
        return [job_from_row(row) for row in _fetch(cursor)]

    def _select(self, cursor: MySQLCursorAbstract, table: SideTable) -> list[tuple[Any, ...]]:
        order = f" ORDER BY {table.order}" if table.order else ""
        cursor.execute(
            f"SELECT {', '.join(table.columns)} FROM {table.name} WHERE queue_table = %s{order}",
            (self.table,),
        )
        return _fetch(cursor)

    def _commit(self, cursor: MySQLCursorAbstract, changes: Changes) -> None:
        # Cut for this connection's max_allowed_packet; raises before anything is sent.
        statements = list(self._statements(changes.add, changes.remove))
        cursor.execute("START TRANSACTION")
        for sql, params in statements:
            cursor.execute(sql, params)
        for table, action, rows in side_writes(changes, self.table):
            statement = _side_sql(table, action)
            for row in rows:
                cursor.execute(statement, row)
        cursor.execute("COMMIT")

    def _statements(
        self, add: Sequence[StoredJob], remove: Sequence[StoredJob]
    ) -> Iterator[tuple[str, list[Any]]]:
        """Multi-row INSERT ... ON DUPLICATE KEY UPDATE and DELETE statements, each small
        enough for the server. Raises StoreError before anything is sent if a job cannot fit
        (checked for all of them first)."""
        table = self.table
        update = ", ".join(f"{column} = VALUES({column})" for column in JOB_COLUMNS[2:])
        insert = (
            f"INSERT INTO `{table}` ({', '.join(JOB_COLUMNS)}) VALUES {{rows}}"
            f" ON DUPLICATE KEY UPDATE {update}"
        )
        delete = f"DELETE FROM `{table}` WHERE (unique_key, function_name) IN ({{rows}})"
        add_batches = self._batches(
            add,
            len(insert),
            lambda job: (
                _escaped_size(job.unique)
                + _escaped_size(job.function)
                + _escaped_size(job.data)
                + _escaped_size(job.error)
                + _ROW_OVERHEAD
            ),
        )
        remove_batches = self._batches(
            remove,
            len(delete),
            lambda job: _escaped_size(job.unique) + _escaped_size(job.function) + _ROW_OVERHEAD,
        )
        for batch in add_batches:
            params: list[Any] = []
            for job in batch:
                params += job  # its fields are the columns, in JOB_COLUMNS' order
            yield (
                insert.format(rows=", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(batch))),
                params,
            )
        for batch in remove_batches:
            params = []
            for job in batch:
                params += (job.unique, job.function)
            yield delete.format(rows=", ".join(["(%s, %s)"] * len(batch))), params

    def _batches(
        self, jobs: Sequence[StoredJob], fixed: int, size: Callable[[StoredJob], int]
    ) -> list[list[StoredJob]]:
        # The server counts the whole statement against max_allowed_packet (and closes the
        # connection when it is over), so the cut is made here, where the sizes are known.
        limit = (self._max_packet or 1 << 24) - 16
        batches: list[list[StoredJob]] = []
        batch: list[StoredJob] = []
        total = fixed
        for job in jobs:
            cost = size(job)
            if fixed + cost > limit:
                raise StoreError(
                    f"a job of {len(job.data)} bytes does not fit the MySQL server's "
                    f"max_allowed_packet ({self._max_packet} bytes): raise max_allowed_packet "
                    "on the server or submit smaller jobs"
                )
            if batch and total + cost > min(limit, _BATCH_BYTES):
                batches.append(batch)
                batch, total = [], fixed
            batch.append(job)
            total += cost
        if batch:
            batches.append(batch)
        return batches

    def _close(self) -> None:
        self._disconnect()


def _side_sql(table: SideTable, action: str) -> str:
    """MySQL's statement for one action of :func:`~gearsql.stores.base.side_writes`."""
    if not table.replace:
        return side_sql(table, action, lambda kind: "%s", "INSERT IGNORE")
    update = ", ".join(f"{column} = VALUES({column})" for column in table.value_columns)
    return side_sql(
        table, action, lambda kind: "%s", "INSERT", f" ON DUPLICATE KEY UPDATE {update}"
    )
