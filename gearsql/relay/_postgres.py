"""The outbox of a PostgreSQL database (psycopg 3), woken by ``LISTEN``: the outbox insert
calls ``pg_notify``, which PostgreSQL delivers only when the transaction commits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gearsql.relay.batch import OutboxRow, row_from_values, take_within
from gearsql.relay.source import IDENTIFIER, OutboxMissing, Source, close_quietly

__all__ = ["CHANNEL", "PostgresSource"]

#: The channel the outbox insert notifies, with the schema as payload (gearsql/bridges/postgres.py).
CHANNEL = "gearsql_outbox"


class PostgresSource(Source):
    """``<schema>.gman_outbox`` in PostgreSQL; ``wake`` is ``listen`` or ``poll``."""

    def __init__(self, dsn: str, schema: str = "gearsql", wake: str = "listen") -> None:
        if not IDENTIFIER.match(schema):
            raise ValueError(f"schema {schema!r} is not a plain SQL identifier")
        if wake not in ("listen", "poll"):
            raise ValueError(f"a PostgreSQL relay listens or polls, not {wake!r}")
        self.dsn = dsn
        self.schema = schema
        self.wake = wake
        self.table = f'"{schema}".gman_outbox'
        self.dead_table = f'"{schema}".gman_outbox_dead'
        self.conn: Any = None
        self._identity = f"postgresql:?:{schema}"
        self._description = f"postgresql {self.table}"

    def open(self) -> None:
        import psycopg

        self.close()
        self.conn = psycopg.connect(self.dsn, connect_timeout=10)
        database, exists, self.keeps_dead = self.conn.execute(
            "SELECT current_database(), to_regclass(%s) IS NOT NULL, "
            "to_regclass(%s) IS NOT NULL", (self.table, self.dead_table)
        ).fetchone()
        self.conn.rollback()
        try:  # the cluster's own id, so that the name is the same whatever host name is used
            (system,) = self.conn.execute(
                "SELECT system_identifier FROM pg_control_system()"
            ).fetchone()
        except psycopg.Error:  # not granted
            system = "?"
        self.conn.rollback()
        self._identity = f"postgresql:{system}:{database}:{self.schema}"
        self._description = f"postgresql database {database!r}, {self.table}"
        if not exists:
            raise OutboxMissing(
                f"{self.table} does not exist in database {database!r}: run "
                f"`gearsql install postgres --schema {self.schema}` first"
            )

    def identity(self) -> str:
        return self._identity

    def describe(self) -> str:
        return self._description

    def claim(self, limit: int, max_bytes: int) -> list[OutboxRow]:
        # Lock first, then read only the workloads that fit in memory; the rows locked but not
        # read are let go at commit and come in the next batch.
        sizes = self.conn.execute(
            f"SELECT id, octet_length(workload) FROM {self.table} "
            "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
            (limit,),
        ).fetchall()
        if not sizes:
            self.conn.rollback()
            return []
        ids = take_within(sizes, max_bytes)
        rows = self.conn.execute(
            f"SELECT id, function, unique_key, workload, priority FROM {self.table} "
            "WHERE id = ANY(%s) ORDER BY id",
            (ids,),
        ).fetchall()
        return [row_from_values(row) for row in rows]

    def finish(self, ids: list[int], dead: Sequence[tuple[int, str]] = ()) -> None:
        if dead and self.keeps_dead:
            self.conn.execute(
                f"INSERT INTO {self.dead_table} (id, created_at, function, unique_key, workload, "
                "priority, reason) SELECT o.id, o.created_at, o.function, o.unique_key, "
                f"o.workload, o.priority, d.reason FROM {self.table} AS o "
                "JOIN unnest(%s::bigint[], %s::text[]) AS d(id, reason) ON o.id = d.id "
                "ON CONFLICT (id) DO NOTHING",
                ([id_ for id_, _ in dead], [reason for _, reason in dead]),
            )
        gone = ids + [id_ for id_, _ in dead]
        if gone:
            self.conn.execute(f"DELETE FROM {self.table} WHERE id = ANY(%s)", (gone,))
        self.conn.commit()

    def close(self) -> None:
        close_quietly(self.conn)
        self.conn = None

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
