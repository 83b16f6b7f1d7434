"""Whether an outbox belongs to the database it is in (docs/reliability.md case 52).

A database restored from a dump (staging made from production, say) holds the outbox rows that
production had not yet relayed, and production's relay submits them too: a relay started on
the copy would submit them a second time, under another unique (the default unique prefix is
made from the database's identity). So the PostgreSQL install records the database's identity
in ``<schema>.gman_origin`` (:data:`gearsql._sqlcommon.PG_ORIGIN_QUERY`), and the relay compares
it with the database it is connected to whenever it connects:

- the same, or no recorded identity (an install older than the table records it now): relay;
- different with an empty outbox: nothing can be submitted twice, so the relay records the new
  identity, logs it and relays;
- different with rows in the outbox: :class:`CopiedDatabase`, a configuration error (the relay
  stops, ``gearsql relay`` exits with status 2) until ``gearsql relay adopt`` says what to do
  with the rows (:func:`adopt`).

MariaDB and SQLite are not checked: see docs/reliability.md case 52.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from gearsql._log import NOTICE
from gearsql._sqlcommon import DEAD_COLUMNS, PG_ORIGIN_QUERY, check_identifier

if TYPE_CHECKING:
    import psycopg

__all__ = ["CopiedDatabase", "adopt", "check_postgres"]

log = logging.getLogger("gearsql.relay")


class CopiedDatabase(ValueError):
    """The outbox holds rows written in another database: this one is a copy of it."""


def _origin_table(schema: str) -> str:
    return f'"{schema}".gman_origin'


def check_postgres(conn: psycopg.Connection[tuple[Any, ...]], schema: str, dsn: str) -> None:
    """Compare the recorded identity of ``schema``'s outbox with this database's (see the
    module's docstring); commits or rolls back. A role that may not read ``gman_origin`` (or
    an install without it) is not checked."""
    import psycopg

    table = _origin_table(schema)
    try:
        (exists,) = _one(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)))
        if not exists:
            conn.rollback()
            return
        current, described = _one(conn.execute(PG_ORIGIN_QUERY))
        row = conn.execute(f"SELECT identity, description FROM {table} LIMIT 1").fetchone()
        if row is None:
            conn.execute(
                f"INSERT INTO {table} (identity, description) VALUES (%s, %s)",
                (current, described),
            )
            conn.commit()
            log.log(NOTICE, "recorded the outbox's database: %s", described)
            return
        recorded, recorded_described = row
        if recorded == current:
            conn.rollback()
            return
        (pending,) = _one(conn.execute(f'SELECT count(*) FROM "{schema}".gman_outbox'))
        if pending:
            conn.rollback()
            raise CopiedDatabase(
                f"this is {described}, but its outbox was written in {recorded_described}: "
                f"this database looks like a copy of that one (a restored dump?), and its "
                f"{pending} pending outbox row(s) may have been submitted there already. "
                f"Run `gearsql relay adopt --dsn {_shown(dsn)}{_schema_option(schema)}` to "
                "submit them from here, or add --discard to move them to gman_outbox_dead"
            )
        conn.execute(
            f"UPDATE {table} SET identity = %s, description = %s, recorded_at = now()",
            (current, described),
        )
        conn.commit()
        log.log(
            NOTICE,
            "this is %s, a copy of %s with an empty outbox: recorded it as the outbox's database",
            described,
            recorded_described,
        )
    except psycopg.errors.InsufficientPrivilege:
        conn.rollback()
        log.log(NOTICE, "this role may not use %s: not checked for being a copy", table)


def adopt(dsn: str, schema: str = "gearsql", discard: bool = False) -> str:
    """Record the database ``dsn`` names as its outbox's own; with ``discard`` first move the
    rows in its outbox to ``gman_outbox_dead`` (reason ``discarded: database copied from
    ...``). One transaction. Returns what was done, for people. Raises ValueError for a DSN
    that is not PostgreSQL or a database without the outbox."""
    from urllib.parse import urlsplit

    check_identifier(schema, "schema")
    if urlsplit(dsn).scheme not in ("postgresql", "postgres"):
        raise ValueError(
            "relay adopt is for PostgreSQL: MariaDB and SQLite outboxes record no database "
            "identity (docs/reliability.md case 52)"
        )
    import psycopg

    table = _origin_table(schema)
    outbox = f'"{schema}".gman_outbox'
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        (exists,) = _one(
            conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
                (table, outbox),
            )
        )
        if not exists:
            raise ValueError(
                f"{table} or {outbox} does not exist: run `gearsql install postgres "
                f"--schema {schema}` (again) first"
            )
        current, described = _one(conn.execute(PG_ORIGIN_QUERY))
        row = conn.execute(f"SELECT description FROM {table} LIMIT 1 FOR UPDATE").fetchone()
        before = "no recorded database" if row is None else str(row[0])
        moved = 0
        if discard:
            columns = ", ".join(DEAD_COLUMNS)
            cursor = conn.execute(
                f'INSERT INTO "{schema}".gman_outbox_dead ({columns}, reason) '
                f"SELECT {columns}, %s FROM {outbox} ORDER BY id FOR UPDATE "
                "ON CONFLICT (id) DO NOTHING",
                (f"discarded: database copied from {before}",),
            )
            moved = cursor.rowcount
            conn.execute(
                f'DELETE FROM {outbox} WHERE id IN (SELECT id FROM "{schema}".gman_outbox_dead)'
            )
        conn.execute(f"DELETE FROM {table}")
        conn.execute(
            f"INSERT INTO {table} (identity, description) VALUES (%s, %s)", (current, described)
        )
        (pending,) = _one(conn.execute(f"SELECT count(*) FROM {outbox}"))
    done = f"recorded {described} as the outbox's database (it was {before})"
    if discard:
        done += f"; moved {moved} outbox row(s) to gman_outbox_dead"
    return f"{done}; {pending} row(s) left for the relay to submit"


def _one(cursor: psycopg.Cursor[tuple[Any, ...]]) -> tuple[Any, ...]:
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("the query returned no row")
    return row


def _schema_option(schema: str) -> str:
    return "" if schema == "gearsql" else f" --schema {schema}"


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
