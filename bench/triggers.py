"""What an AFTER INSERT trigger calling gman_do_background costs a bulk INSERT.

Inserts the same rows twice, in one statement each, into two tables alike but for the trigger:
one plain, one whose ``AFTER INSERT ... FOR EACH ROW`` trigger calls
``gman_do_background('bench_trigger', NEW.payload)`` (transactional mode: each call checks its
arguments and writes an outbox row; no job server is involved). PostgreSQL (``--pg-dsn``, in a
schema of its own), and with ``--mysql-dsn`` MariaDB (a database of its own) and with
``--sqlite`` SQLite (a temporary file, the functions of gearsql.sqlite); everything made is
dropped afterwards. Prints both times side by side and their ratio, a line per database.

    python bench/triggers.py --rows 100000 --repeat 5 \\
        --pg-dsn postgresql://postgres@127.0.0.1/postgres \\
        --mysql-dsn mysql://root@127.0.0.1/test --sqlite

With ``--repeat N`` both inserts run N times, alternating, and the best time of each is shown
(each run's times go to stderr).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any


def alternate(
    insert: Callable[[str], None],
    outbox: Callable[[], int],
    reset: Callable[[], None],
    rows: int,
    repeat: int,
    name: str,
) -> tuple[float, float]:
    """Best time of ``insert("plain")`` and of ``insert("triggered")`` over ``repeat`` runs,
    alternating (outside load only ever slows a run down); ``reset`` empties both tables and
    the outbox between runs, and the outbox must hold ``rows`` rows after each."""
    times: dict[str, list[float]] = {"plain": [], "triggered": []}
    for run in range(repeat):
        if run:
            reset()
        for table in ("plain", "triggered"):
            started = time.perf_counter()
            insert(table)
            times[table].append(time.perf_counter() - started)
        print(
            f"{name} run {run + 1}: plain {times['plain'][-1]:.3f} s, "
            f"with trigger {times['triggered'][-1]:.3f} s",
            file=sys.stderr,
        )
        held = outbox()
        if held != rows:
            raise SystemExit(f"{name}: the outbox holds {held} rows, not {rows}")
    return min(times["plain"]), min(times["triggered"])


def bench(dsn: str, rows: int, repeat: int = 1) -> tuple[float, float]:
    """PostgreSQL: (seconds without the trigger, seconds with it) for ``rows`` rows."""
    import psycopg

    from gearsql.bridges.postgres import install, uninstall

    schema = "gearsql_bench_" + secrets.token_hex(4)
    install(dsn, schema, background_mode="transactional")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {schema}.plain (id bigint PRIMARY KEY, payload text)")
            conn.execute(f"CREATE TABLE {schema}.triggered (id bigint PRIMARY KEY, payload text)")
            conn.execute(
                f"CREATE FUNCTION {schema}.enqueue() RETURNS trigger LANGUAGE plpgsql AS $$\n"
                f"BEGIN\n    PERFORM {schema}.gman_do_background('bench_trigger', NEW.payload);\n"
                "    RETURN NULL;\nEND\n$$"
            )
            conn.execute(
                f"CREATE TRIGGER enqueue AFTER INSERT ON {schema}.triggered "
                f"FOR EACH ROW EXECUTE FUNCTION {schema}.enqueue()"
            )

            def insert(table: str) -> None:
                conn.execute(
                    f"INSERT INTO {schema}.{table} (id, payload) "
                    "SELECT i, 'row ' || i FROM generate_series(1, %s) AS i",
                    (rows,),
                )

            def outbox() -> int:
                row = conn.execute(f"SELECT count(*) FROM {schema}.gman_outbox").fetchone()
                return -1 if row is None else int(row[0])

            def reset() -> None:
                conn.execute(f"TRUNCATE {schema}.plain, {schema}.triggered, {schema}.gman_outbox")

            return alternate(insert, outbox, reset, rows, repeat, "postgresql")
    finally:
        uninstall(dsn, schema, force=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def bench_mariadb(dsn: str, rows: int, repeat: int = 1) -> tuple[float, float]:
    """MariaDB: the same, in a database of its own (made and dropped here), the trigger
    ``SET @h = gman_do_background('bench_trigger', NEW.payload)``; rows from the Sequence
    engine's ``seq_1_to_<rows>``."""
    from urllib.parse import urlsplit, urlunsplit

    import mysql.connector

    from gearsql._mysqlurl import connect_config
    from gearsql.bridges.mysql import install

    parts = urlsplit(dsn)
    name = "gearsql_bench_" + secrets.token_hex(4)
    own = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))
    admin: Any = mysql.connector.connect(**{**connect_config(dsn), "autocommit": True})
    cursor = admin.cursor()
    cursor.execute(f"CREATE DATABASE `{name}`")
    try:
        install(own)
        cursor.execute(f"USE `{name}`")
        for table in ("plain", "triggered"):
            cursor.execute(f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, payload TEXT)")
        cursor.execute(
            "CREATE TRIGGER enqueue AFTER INSERT ON triggered FOR EACH ROW "
            "SET @gearsql_handle = gman_do_background('bench_trigger', NEW.payload)"
        )

        def insert(table: str) -> None:
            cursor.execute(
                f"INSERT INTO {table} (id, payload) "
                f"SELECT seq, CONCAT('row ', seq) FROM seq_1_to_{int(rows)}"
            )

        def outbox() -> int:
            cursor.execute("SELECT COUNT(*) FROM gman_outbox")
            return int(cursor.fetchone()[0])

        def reset() -> None:
            for table in ("plain", "triggered", "gman_outbox"):
                cursor.execute(f"DELETE FROM {table}")

        return alternate(insert, outbox, reset, rows, repeat, "mariadb")
    finally:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def bench_sqlite(rows: int, repeat: int = 1) -> tuple[float, float]:
    """SQLite: the same in a temporary file through gearsql.sqlite.connect (the functions are
    Python there), the trigger ``SELECT gman_do_background('bench_trigger', NEW.payload)``,
    each insert in one transaction."""
    import tempfile

    import gearsql.sqlite

    with tempfile.TemporaryDirectory() as tmp:
        conn = gearsql.sqlite.connect(f"{tmp}/bench.db", isolation_level=None)
        try:
            for table in ("plain", "triggered"):
                conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, payload TEXT)")
            conn.execute(
                "CREATE TRIGGER enqueue AFTER INSERT ON triggered BEGIN "
                "SELECT gman_do_background('bench_trigger', NEW.payload); END"
            )

            def insert(table: str) -> None:
                conn.execute("BEGIN")
                conn.execute(
                    "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
                    f"INSERT INTO {table} (id, payload) SELECT i, 'row ' || i FROM s",
                    (rows,),
                )
                conn.execute("COMMIT")

            def outbox() -> int:
                return int(conn.execute("SELECT count(*) FROM gman_outbox").fetchone()[0])

            def reset() -> None:
                for table in ("plain", "triggered", "gman_outbox"):
                    conn.execute(f"DELETE FROM {table}")

            return alternate(insert, outbox, reset, rows, repeat, "sqlite")
        finally:
            conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per INSERT")
    parser.add_argument(
        "--pg-dsn",
        default=os.environ.get("GEARSQL_TEST_PG_DSN"),
        help="PostgreSQL to measure (default $GEARSQL_TEST_PG_DSN)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each, alternating; the best is shown"
    )
    parser.add_argument("--mysql-dsn", help="also MariaDB (a database of its own is made there)")
    parser.add_argument("--sqlite", action="store_true", help="also SQLite (a temporary file)")
    args = parser.parse_args()
    if not (args.pg_dsn or args.mysql_dsn or args.sqlite):
        print("gearsql: give --pg-dsn (or set GEARSQL_TEST_PG_DSN)", file=sys.stderr)
        return 2
    if args.rows < 1 or args.repeat < 1:
        print("gearsql: --rows and --repeat must be at least 1", file=sys.stderr)
        return 2
    results = []
    if args.pg_dsn:
        results.append(("postgresql", *bench(args.pg_dsn, args.rows, args.repeat)))
    if args.mysql_dsn:
        results.append(("mariadb", *bench_mariadb(args.mysql_dsn, args.rows, args.repeat)))
    if args.sqlite:
        results.append(("sqlite", *bench_sqlite(args.rows, args.repeat)))
    print(f"{'database':<12}{'rows':>8}  {'plain INSERT':>14}  {'with trigger':>14}  {'ratio':>7}")
    for name, plain, triggered in results:
        print(
            f"{name:<12}{args.rows:>8}  {plain:>12.3f} s  {triggered:>12.3f} s  "
            f"{triggered / plain:>6.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
