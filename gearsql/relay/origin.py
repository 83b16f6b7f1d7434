"""Whether an outbox belongs to the database it is in (docs/reliability.md case 52).

A database restored from a dump (staging made from production, say) holds the outbox rows that
production had not yet relayed, and production's relay submits them too: a relay started on
the copy would submit them a second time, under another unique (the default unique prefix is
made from the database's identity). So the database's identity is recorded in ``gman_origin``
(PostgreSQL: :data:`gearsql._sqlcommon.PG_ORIGIN_QUERY`; MariaDB:
:data:`gearsql._sqlcommon.MYSQL_ORIGIN_QUERY`; SQLite: where its main file lives,
``st_dev:st_ino``), and the relay compares it with the database it is connected to whenever it
connects:

- the same, or no recorded identity (an install older than the table records it now): relay;
- different with an empty outbox: nothing can be submitted twice, so the relay records the new
  identity, logs it and relays;
- different with rows in the outbox: :class:`CopiedDatabase`, a configuration error (the relay
  stops, ``gearsql relay`` exits with status 2) until ``gearsql relay adopt`` says what to do
  with the rows (:func:`adopt`).

The PostgreSQL and MariaDB installs make ``gman_origin`` and record the database. SQLite has
no install (its functions make the outbox at their first use), so the relay (or ``gearsql
relay adopt``) makes the table in the file and records the file at its first contact: the
"no recorded identity: record it" case above is what makes the check work at all there, and a
file copied before any relay ran on it passes for its own. A copied file (``cp``, the backup
API, ``VACUUM INTO``, a dump loaded into a new file) is a new inode, so it differs; the same
file reopened, renamed or moved within its file system keeps it. A database whose identity
cannot be told (an in-memory one, a file that cannot be stat'ed) is not checked, and the relay
says so.

One logic for the three databases (:func:`_check`, :func:`_adopt`) over their own SQL
(:class:`_Dialect`) and driver (:class:`_Database`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gearsql._log import NOTICE
from gearsql._mysqlurl import MYSQL_SCHEMES
from gearsql._sqlcommon import (
    DEAD_COLUMNS,
    MYSQL_ORIGIN_QUERY,
    MYSQL_ORIGIN_SETUP,
    PG_ORIGIN_QUERY,
    check_identifier,
)
from gearsql._sqliteurl import SQLITE_SCHEMES, sqlite_path
from gearsql.relay.source import SQLITE_OUTBOX_ORIGIN, connect_file

if TYPE_CHECKING:
    import sqlite3

    import psycopg

    from gearsql._mysqlurl import MySQLConnection

__all__ = ["CopiedDatabase", "adopt", "check_mysql", "check_postgres", "check_sqlite"]

log = logging.getLogger("gearsql.relay")


class CopiedDatabase(ValueError):
    """The outbox holds rows written in another database: this one is a copy of it."""


class _Database(Protocol):
    """A connection in a transaction, as the checks use it (``%s`` parameters)."""

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute; the rows changed."""
        ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


@dataclass(frozen=True)
class _Dialect:
    """What differs between the databases: names and the few statements that are not the same
    SQL, and which driver errors mean "this account may not use the table" (or, in SQLite, the
    file is read-only)."""

    table: str
    outbox: str
    dead: str
    #: One row, two values: whether gman_origin exists (and may be seen), whether gman_outbox
    #: does.
    exists: tuple[str, tuple[str, ...]]
    #: Made where the outbox is, before gman_origin is read (SQLite, which has no install:
    #: the relay or adopt makes them at the first contact).
    create: tuple[str, ...]
    #: Run before the identity query.
    setup: str | None
    #: (identity, description) of the connected database; no row, or a NULL identity, when it
    #: cannot be told.
    identity: str
    #: Appended to adopt's read of gman_origin, to lock it.
    for_update: str
    #: INSERT ... SELECT of the outbox's rows into the dead letters, skipping ids already there;
    #: one parameter, the reason.
    discard: str
    #: Why adopt refuses a database without the tables, and what to do.
    missing: str
    #: The option of ``gearsql relay adopt`` after ``--dsn`` (the schema).
    option: str
    denied: Callable[[Exception], bool]


def _postgres(schema: str) -> _Dialect:
    import psycopg

    table, outbox, dead = (
        f'"{schema}".{name}' for name in ("gman_origin", "gman_outbox", "gman_outbox_dead")
    )
    columns = ", ".join(DEAD_COLUMNS)
    return _Dialect(
        table=table,
        outbox=outbox,
        dead=dead,
        exists=(
            "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
            (table, outbox),
        ),
        create=(),
        setup=None,
        identity=PG_ORIGIN_QUERY,
        for_update=" FOR UPDATE",
        discard=f"INSERT INTO {dead} ({columns}, reason) SELECT {columns}, %s FROM {outbox} "
        "ORDER BY id FOR UPDATE ON CONFLICT (id) DO NOTHING",
        missing=f"{table} or {outbox} does not exist: run `gearsql install postgres --schema "
        f"{schema}` (again) first",
        option="" if schema == "gearsql" else f" --schema {schema}",
        denied=lambda exc: isinstance(exc, psycopg.errors.InsufficientPrivilege),
    )


def _mysql() -> _Dialect:
    columns = ", ".join(DEAD_COLUMNS)
    return _Dialect(
        table="gman_origin",
        outbox="gman_outbox",
        dead="gman_outbox_dead",
        # information_schema lists only the tables this account has a privilege on.
        exists=(
            "SELECT COALESCE(SUM(TABLE_NAME = 'gman_origin'), 0) > 0, "
            "COALESCE(SUM(TABLE_NAME = 'gman_outbox'), 0) > 0 FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ('gman_origin', 'gman_outbox')",
            (),
        ),
        create=(),
        setup=MYSQL_ORIGIN_SETUP,
        identity=MYSQL_ORIGIN_QUERY,
        for_update=" FOR UPDATE",
        discard=f"INSERT IGNORE INTO gman_outbox_dead ({columns}, reason) "
        f"SELECT {columns}, %s FROM gman_outbox ORDER BY id FOR UPDATE",
        missing="gman_origin or gman_outbox does not exist: run `gearsql install mysql` (again) "
        "first",
        option="",
        # ER_TABLEACCESS_DENIED_ERROR, ER_COLUMNACCESS_DENIED_ERROR
        denied=lambda exc: getattr(exc, "errno", None) in (1142, 1143),
    )


#: SQLite's gman_origin, made by the relay (no install makes it).
SQLITE_ORIGIN_TABLE = (
    "CREATE TABLE IF NOT EXISTS gman_origin (identity TEXT NOT NULL, description TEXT NOT NULL,"
    " recorded_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
)

#: The identity of an SQLite database and its description: the device and inode of its main
#: file (:func:`_file_identity`), NULL for an in-memory database.
SQLITE_ORIGIN_QUERY = (
    "SELECT identity, 'SQLite file ' || quote(file) || ' (device:inode ' || identity || ')' "
    "FROM (SELECT file, gearsql_file_identity(file) AS identity "
    "FROM pragma_database_list WHERE name = 'main')"
)


def _sqlite() -> _Dialect:
    from gearsql.bridges import load_library

    columns = ", ".join(DEAD_COLUMNS)
    return _Dialect(
        table="gman_origin",
        outbox="gman_outbox",
        dead="gman_outbox_dead",
        exists=(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = "
            "'gman_origin'), EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
            "name = 'gman_outbox')",
            (),
        ),
        # The dead letters too: adopt --discard may come before any relay made them.
        create=(SQLITE_ORIGIN_TABLE, load_library().SQLITE_DEAD_TABLE),
        setup=None,
        identity=SQLITE_ORIGIN_QUERY,
        for_update="",  # adopt's transaction holds the file's write lock from its start
        discard=f"INSERT OR IGNORE INTO gman_outbox_dead ({columns}, reason) "
        f"SELECT {columns}, %s FROM gman_outbox ORDER BY id",
        missing=f"gman_outbox does not exist: {SQLITE_OUTBOX_ORIGIN}",
        option="",
        # A read-only file or directory, or a file unlinked or moved since it was opened:
        # gman_origin cannot be made or written.
        denied=lambda exc: "readonly database" in str(exc),
    )


class _Psycopg:
    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        self.conn = conn

    # No parameters are passed as None: PG_ORIGIN_QUERY has format()'s own %s.
    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        return self.conn.execute(sql, params or None).fetchone()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, params or None).rowcount

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()


class _Connector:
    """A mysql-connector connection with autocommit off."""

    def __init__(self, conn: MySQLConnection) -> None:
        self.conn = conn

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        cursor = self.conn.cursor()
        try:
            cursor.execute(sql, *([params] if params else []))
            rows = cursor.fetchall()
        finally:
            cursor.close()
        return tuple(rows[0]) if rows else None

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = self.conn.cursor()
        try:
            cursor.execute(sql, *([params] if params else []))
            return int(getattr(cursor, "rowcount", 0))
        finally:
            cursor.close()

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()


class _SQLite:
    """An :mod:`sqlite3` connection in autocommit mode (``isolation_level=None``): the first
    statement begins the transaction with ``begin``. It is given ``gearsql_file_identity()``
    for :data:`SQLITE_ORIGIN_QUERY`.

    The relay's check begins a deferred transaction: it only reads unless it records the file,
    so it takes no write lock that an application's transaction would meet. Two relays
    recording one file at the same moment: one gets "database is locked" and connects again.
    Adopt, which writes, begins ``BEGIN IMMEDIATE``."""

    def __init__(self, conn: sqlite3.Connection, begin: str = "BEGIN") -> None:
        self.conn = conn
        self.begin = begin
        conn.create_function("gearsql_file_identity", 1, _file_identity)

    def _execute(self, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
        if not self.conn.in_transaction:
            self.conn.execute(self.begin)
        # The checks' SQL marks its parameters %s and has no other %s.
        return self.conn.execute(sql.replace("%s", "?"), params)

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row = self._execute(sql, params).fetchone()
        return None if row is None else tuple(row)

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._execute(sql, params).rowcount

    def commit(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


def _file_identity(path: str | None) -> str | None:
    """``st_dev:st_ino`` of the file at ``path``; None for an in-memory database (no path) or
    a file that cannot be stat'ed."""
    if not path:
        return None
    try:
        found = os.stat(path)
    except OSError:
        return None
    return f"{found.st_dev}:{found.st_ino}"


def check_postgres(conn: psycopg.Connection[tuple[Any, ...]], schema: str, dsn: str) -> None:
    """Compare the recorded identity of ``schema``'s outbox with this database's (see the
    module's docstring); commits or rolls back. A role that may not read ``gman_origin`` (or
    an install without it) is not checked."""
    _check(_Psycopg(conn), _postgres(schema), dsn)


def check_mysql(conn: MySQLConnection, dsn: str) -> None:
    """:func:`check_postgres` for the MariaDB database ``conn`` is connected to (autocommit
    off). An account without a privilege on ``gman_origin`` does not see it, and is not
    checked, like an install without it."""
    _check(_Connector(conn), _mysql(), dsn)


def check_sqlite(conn: sqlite3.Connection, dsn: str) -> None:
    """:func:`check_postgres` for the SQLite file ``conn`` has open (autocommit mode, outside
    a transaction), making ``gman_origin`` there and recording the file at the first contact.
    A read-only file without the table, and a database whose file cannot be told (in memory,
    or not to be stat'ed), are not checked."""
    _check(_SQLite(conn), _sqlite(), dsn)


def _identity(db: _Database, dialect: _Dialect) -> tuple[str, str] | None:
    if dialect.setup is not None:
        db.run(dialect.setup)
    row = db.one(dialect.identity)
    return None if row is None or row[0] is None else (str(row[0]), str(row[1]))


def _tables(db: _Database, dialect: _Dialect) -> tuple[bool, bool]:
    """Whether gman_origin exists (and may be seen), whether gman_outbox does; the dialect's
    own tables are made first where the outbox is."""
    found = db.one(*dialect.exists)
    origin, outbox = (bool(found[0]), bool(found[1])) if found is not None else (False, False)
    if outbox and dialect.create:
        for statement in dialect.create:
            db.run(statement)
        origin = True
    return origin, outbox


def _check(db: _Database, dialect: _Dialect, dsn: str) -> None:
    table = dialect.table
    try:
        origin, outbox = _tables(db, dialect)
        if outbox and not origin:
            log.log(
                NOTICE,
                "%s is missing, or this account may not read it: not checked for being a copy "
                "(run the install again, with the relay's account, to record the database)",
                table,
            )
        if not (origin and outbox):
            db.rollback()
            return
        current = _identity(db, dialect)
        if current is None:
            db.rollback()
            log.log(NOTICE, "cannot tell which database this is: not checked for being a copy")
            return
        identity, described = current
        row = db.one(f"SELECT identity, description FROM {table} LIMIT 1")
        if row is None:
            db.run(
                f"INSERT INTO {table} (identity, description) VALUES (%s, %s)",
                (identity, described),
            )
            db.commit()
            log.log(NOTICE, "recorded the outbox's database: %s", described)
            return
        recorded, recorded_described = row
        if recorded == identity:
            db.rollback()
            return
        counted = db.one(f"SELECT count(*) FROM {dialect.outbox}")
        pending = int(counted[0]) if counted is not None else 0
        if pending:
            db.rollback()
            raise CopiedDatabase(
                f"this is {described}, but its outbox was written in {recorded_described}: "
                f"this database looks like a copy of that one (a restored dump?), and its "
                f"{pending} pending outbox row(s) may have been submitted there already. "
                f"Run `gearsql relay adopt --dsn {_shown(dsn)}{dialect.option}` to "
                "submit them from here, or add --discard to move them to gman_outbox_dead"
            )
        db.run(
            f"UPDATE {table} SET identity = %s, description = %s, recorded_at = CURRENT_TIMESTAMP",
            (identity, described),
        )
        db.commit()
        log.log(
            NOTICE,
            "this is %s, a copy of %s with an empty outbox: recorded it as the outbox's database",
            described,
            recorded_described,
        )
    except Exception as exc:
        if not dialect.denied(exc):
            raise
        db.rollback()
        log.log(
            NOTICE,
            "this account may not use %s (or the database is read-only): not checked for being "
            "a copy",
            table,
        )


def adopt(dsn: str, schema: str = "gearsql", discard: bool = False) -> str:
    """Record the database ``dsn`` names as its outbox's own; with ``discard`` first move the
    rows in its outbox to ``gman_outbox_dead`` (reason ``discarded: database copied from
    ...``). One transaction. Returns what was done, for people. Raises ValueError for a DSN
    that is not PostgreSQL, MariaDB or SQLite, or a database (or SQLite file) without the
    outbox. ``schema`` is PostgreSQL's; a MariaDB outbox is in the DSN's database, an SQLite
    one in the file."""
    from urllib.parse import urlsplit

    check_identifier(schema, "schema")
    scheme = urlsplit(dsn).scheme
    if scheme in ("postgresql", "postgres"):
        import psycopg

        with psycopg.connect(dsn, connect_timeout=10) as conn:
            return _adopt(_Psycopg(conn), _postgres(schema), discard)
    if scheme in MYSQL_SCHEMES:
        import mysql.connector

        from gearsql._mysqlurl import connect_config

        connection: Any = mysql.connector.connect(**{**connect_config(dsn), "autocommit": False})
        try:
            return _adopt(_Connector(connection), _mysql(), discard)
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.close()
    if scheme in SQLITE_SCHEMES:
        file = connect_file(sqlite_path(dsn))
        try:  # closed in its transaction, it is rolled back
            return _adopt(_SQLite(file, "BEGIN IMMEDIATE"), _sqlite(), discard)
        finally:
            file.close()
    raise ValueError(
        f"unknown database {dsn!r}: use postgresql://..., mysql://..., "
        "sqlite:///relative/path.db or sqlite:////absolute/path.db"
    )


def _adopt(db: _Database, dialect: _Dialect, discard: bool) -> str:
    table, outbox = dialect.table, dialect.outbox
    if not all(_tables(db, dialect)):
        raise ValueError(dialect.missing)
    current = _identity(db, dialect)
    if current is None:
        raise ValueError(f"cannot tell which database this is from {table}")
    identity, described = current
    row = db.one(f"SELECT description FROM {table} LIMIT 1{dialect.for_update}")
    before = "no recorded database" if row is None else str(row[0])
    moved = 0
    if discard:
        moved = db.run(dialect.discard, (f"discarded: database copied from {before}",))
        db.run(f"DELETE FROM {outbox} WHERE id IN (SELECT id FROM {dialect.dead})")
    db.run(f"DELETE FROM {table}")
    db.run(f"INSERT INTO {table} (identity, description) VALUES (%s, %s)", (identity, described))
    counted = db.one(f"SELECT count(*) FROM {outbox}")
    db.commit()
    pending = int(counted[0]) if counted is not None else 0
    done = f"recorded {described} as the outbox's database (it was {before})"
    if discard:
        done += f"; moved {moved} outbox row(s) to gman_outbox_dead"
    return f"{done}; {pending} row(s) left for the relay to submit"


def _shown(dsn: str) -> str:
    """The DSN without its password, for a log line."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}"))
