"""The outbox of a PostgreSQL database (psycopg 3), woken by ``LISTEN``: the outbox insert
calls ``pg_notify``, which PostgreSQL delivers only when the transaction commits."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, Literal

from gearsql._sqlcommon import DEAD_COLUMNS, NOTIFY_CHANNEL, check_identifier
from gearsql.relay.batch import OutboxRow, as_bytes, inline_bytes, rows_from_claim
from gearsql.relay.origin import check_postgres
from gearsql.relay.source import (
    SENT_KEEP_IDS,
    SENT_KEEP_SECONDS,
    OutboxMissing,
    Sent,
    Source,
    close_quietly,
)

if TYPE_CHECKING:
    import psycopg

__all__ = ["CHANNEL", "PostgresSource"]

log = logging.getLogger("gearsql.relay")

#: The channel the outbox insert notifies, with the schema as payload (gearsql/bridges/postgres.py).
CHANNEL = NOTIFY_CHANNEL


class PostgresSource(Source):
    """``<schema>.gman_outbox`` in PostgreSQL; ``wake`` is ``listen`` or ``poll``."""

    wake: Literal["listen", "poll"]

    def __init__(
        self, dsn: str, schema: str = "gearsql", wake: Literal["listen", "poll"] = "listen"
    ) -> None:
        check_identifier(schema, "schema")
        if wake not in ("listen", "poll"):
            raise ValueError(f"a PostgreSQL relay listens or polls, not {wake!r}")
        self.dsn = dsn
        self.schema = schema
        self.wake = wake
        self.table = f'"{schema}".gman_outbox'
        self.dead_table = f'"{schema}".gman_outbox_dead'
        self.sent_table = f'"{schema}".gman_outbox_sent'
        self.contact_table = f'"{schema}".gman_relay_contact'
        self.function_servers_table = f'"{schema}".gman_function_servers'
        #: Whether gman_function_servers exists and this role may read it (asked at open).
        self._routes_readable = False
        self._routes_denied = False
        #: Whether gman_outbox_sent and gman_relay_contact exist (asked at the first use after
        #: a connect; an older install has neither, and the relay records nothing there).
        self._extras: tuple[bool, bool] | None = None
        self.conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._identity = f"postgresql:?:{schema}"
        self._description = f"postgresql {self.table}"

    def open(self) -> None:
        import psycopg

        self.close()
        self.conn = conn = psycopg.connect(self.dsn, connect_timeout=10)
        database, exists, keeps_dead, routes = _one(
            conn.execute(
                "SELECT current_database(), to_regclass(%s) IS NOT NULL, "
                "to_regclass(%s) IS NOT NULL, has_table_privilege(to_regclass(%s), 'SELECT')",
                (self.table, self.dead_table, self.function_servers_table),
            )
        )
        self.keeps_dead = bool(keeps_dead)
        self._routes_readable = bool(routes)
        if routes is False and not self._routes_denied:  # the table is there, not for this role
            self._routes_denied = True
            log.warning(
                "postgresql %s: this role may not read %s; every function goes to the relay's "
                "servers",
                self.schema,
                self.function_servers_table,
            )
        conn.rollback()
        try:  # the cluster's own id, so that the name is the same whatever host name is used
            (system,) = _one(conn.execute("SELECT system_identifier FROM pg_control_system()"))
        except psycopg.Error:  # not granted
            system = "?"
        conn.rollback()
        self.servers_setting = _setting(conn, f'"{self.schema}".gman_settings', "servers")
        self._identity = f"postgresql:{system}:{database}:{self.schema}"
        self._description = f"postgresql database {database!r}, {self.table}"
        if not exists:
            raise OutboxMissing(
                f"{self.table} does not exist in database {database!r}: run "
                f"`gearsql install postgres --schema {self.schema}` first"
            )
        check_postgres(conn, self.schema, self.dsn)  # a restored copy stops here

    def identity(self) -> str:
        return self._identity

    def describe(self) -> str:
        return self._description

    def claim(self, limit: int, max_bytes: int, skip: Collection[bytes] = ()) -> list[OutboxRow]:
        conn = self.conn
        assert conn is not None
        where = "WHERE NOT (function = ANY(%s::bytea[])) " if skip else ""
        params: tuple[Any, ...] = (inline_bytes(limit, max_bytes),)
        params += ([bytes(name) for name in skip], limit) if skip else (limit,)
        # Lock and read in one statement, but a workload too large to come inline only once
        # its row is within the budget; the rows locked but not kept are let go at commit and
        # come in the next batch.
        claimed = conn.execute(
            f"SELECT id, function, unique_key, "
            "CASE WHEN octet_length(workload) <= %s THEN workload END, priority, "
            f"octet_length(workload) FROM {self.table} {where}"
            "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
            params,
        ).fetchall()
        if not claimed:
            conn.rollback()
            return []
        return rows_from_claim(claimed, max_bytes, self._workloads)

    def _workloads(self, ids: list[int]) -> dict[int, bytes]:
        conn = self.conn
        assert conn is not None
        rows = conn.execute(
            f"SELECT id, workload FROM {self.table} WHERE id = ANY(%s::bigint[])",
            (_bigints(ids),),
        ).fetchall()
        return {int(id_): workload for id_, workload in rows}

    def _has_extras(self) -> tuple[bool, bool]:
        conn = self.conn
        assert conn is not None
        if self._extras is None:
            sent, contact = _one(
                conn.execute(
                    "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
                    (self.sent_table, self.contact_table),
                )
            )
            self._extras = (bool(sent), bool(contact))
        return self._extras

    def _record(self, conn: psycopg.Connection[tuple[Any, ...]], sent: Sequence[Sent]) -> None:
        """Insert the handles of ``sent`` and prune gman_outbox_sent, in a savepoint: a role
        that may not write the table (not the installing one) records nothing there, rather
        than fail every batch."""
        import psycopg

        try:
            with conn.transaction():
                # One JSON text: psycopg dumps arrays element by element in Python.
                conn.execute(
                    f"INSERT INTO {self.sent_table} (id, function, handle, server) "
                    "SELECT (r->>0)::bigint, decode(r->>1, 'hex'), r->>2, r->>3 "
                    "FROM jsonb_array_elements(%s::jsonb) AS r ON CONFLICT (id) DO NOTHING",
                    (
                        json.dumps(
                            [[row.id, row.function.hex(), row.handle, row.server] for row in sent]
                        ),
                    ),
                )
                conn.execute(
                    f"DELETE FROM {self.sent_table} WHERE id <= %s", (sent[-1].id - SENT_KEEP_IDS,)
                )
                conn.execute(
                    f"DELETE FROM {self.sent_table} "
                    "WHERE sent_at < now() - make_interval(secs => %s)",
                    (SENT_KEEP_SECONDS,),
                )
        except psycopg.errors.InsufficientPrivilege as exc:
            self._extras = (False, self._has_extras()[1])
            log.warning(
                "%s: this role may not write %s (%s); the relay records no handles there",
                self.describe(),
                self.sent_table,
                exc,
            )

    def finish(
        self, ids: list[int], dead: Sequence[tuple[int, str]] = (), sent: Sequence[Sent] = ()
    ) -> None:
        conn = self.conn
        assert conn is not None
        if sent and self._has_extras()[0]:
            self._record(conn, sent)
        if dead and self.keeps_dead:
            conn.execute(
                f"INSERT INTO {self.dead_table} ({', '.join(DEAD_COLUMNS)}, reason) "
                f"SELECT {', '.join('o.' + column for column in DEAD_COLUMNS)}, d.reason "
                f"FROM {self.table} AS o "
                "JOIN unnest(%s::bigint[], %s::text[]) AS d(id, reason) ON o.id = d.id "
                "ON CONFLICT (id) DO NOTHING",
                ([id_ for id_, _ in dead], [reason for _, reason in dead]),
            )
        gone = ids + [id_ for id_, _ in dead]
        if gone:
            conn.execute(
                f"DELETE FROM {self.table} WHERE id = ANY(%s::bigint[])", (_bigints(gone),)
            )
        conn.commit()

    def contact(self, relay: str, servers: str) -> None:
        conn = self.conn
        assert conn is not None
        if not self._has_extras()[1]:
            conn.rollback()
            return
        import psycopg

        try:
            conn.execute(
                f"INSERT INTO {self.contact_table} (relay, last_contact, servers) "
                "VALUES (%s, now(), %s) ON CONFLICT (relay) DO UPDATE "
                "SET last_contact = excluded.last_contact, servers = excluded.servers",
                (relay, servers),
            )
            conn.commit()
        except psycopg.errors.InsufficientPrivilege as exc:
            conn.rollback()
            self._extras = (self._has_extras()[0], False)
            log.warning(
                "%s: this role may not write %s (%s); the relay records no contact there",
                self.describe(),
                self.contact_table,
                exc,
            )

    def function_servers(self) -> dict[bytes, str]:
        conn = self.conn
        assert conn is not None
        if not self._routes_readable:
            return {}
        import psycopg

        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        rows = conn.execute(f"SELECT function, servers FROM {self.function_servers_table}")
        entries = {as_bytes(function): str(servers) for function, servers in rows}
        if idle:
            conn.rollback()
        return entries

    def close(self) -> None:
        self._extras = None
        conn, self.conn = self.conn, None
        close_quietly(conn)

    async def watch(self, wake: Callable[[], None]) -> None:
        if self.wake != "listen":
            await super().watch(wake)
            return
        import psycopg

        async with await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, connect_timeout=10
        ) as conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            wake()  # rows committed before LISTEN took effect
            async for notify in conn.notifies():
                if notify.payload in (self.schema, ""):
                    wake()


def _bigints(ids: Sequence[int]) -> str:
    """``ids`` as a bigint[] literal: cheaper than a list, which psycopg dumps in Python."""
    return "{" + ",".join(map(str, ids)) + "}"


def _one(cursor: psycopg.Cursor[tuple[Any, ...]]) -> tuple[Any, ...]:
    """The one row a query returns (psycopg types ``fetchone`` as optional)."""
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("the query returned no row")
    return row


def _setting(conn: psycopg.Connection[tuple[Any, ...]], table: str, name: str) -> str | None:
    """Setting ``name`` of ``table``; None when the table or the row is missing, or this role
    may not read it (the relay then keeps to the servers it was given)."""
    import psycopg

    try:
        row = conn.execute(f"SELECT value FROM {table} WHERE name = %s", (name,)).fetchone()
    except psycopg.Error:
        row = None
    conn.rollback()
    return None if row is None else str(row[0])
