"""What an AFTER INSERT trigger calling gman_do_background costs a bulk INSERT in PostgreSQL.

Inserts the same rows twice, in one statement each, into two tables alike but for the trigger:
one plain, one whose ``AFTER INSERT ... FOR EACH ROW`` trigger calls
``gman_do_background('bench_trigger', NEW.payload)`` (transactional mode: each call checks its
arguments and writes an outbox row; no job server is involved). Everything lives in a schema of
its own, dropped afterwards. Prints both times side by side and their ratio.

    python bench/triggers.py --rows 100000 --repeat 5 --pg-dsn postgresql://postgres@127.0.0.1/postgres

With ``--repeat N`` both inserts run N times, alternating, and the best time of each is shown
(each run's times go to stderr).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time


def bench(dsn: str, rows: int, repeat: int = 1) -> tuple[float, float]:
    """(seconds without the trigger, seconds with it) for ``rows`` rows: the best of ``repeat``
    runs of each, alternating (outside load only ever slows a run down)."""
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
            times: dict[str, list[float]] = {"plain": [], "triggered": []}
            for run in range(repeat):
                if run:
                    conn.execute(f"TRUNCATE {schema}.plain, {schema}.triggered")
                    conn.execute(f"TRUNCATE {schema}.gman_outbox")
                for table in ("plain", "triggered"):
                    started = time.perf_counter()
                    conn.execute(
                        f"INSERT INTO {schema}.{table} (id, payload) "
                        "SELECT i, 'row ' || i FROM generate_series(1, %s) AS i",
                        (rows,),
                    )
                    times[table].append(time.perf_counter() - started)
                print(
                    f"run {run + 1}: plain {times['plain'][-1]:.3f} s, "
                    f"with trigger {times['triggered'][-1]:.3f} s",
                    file=sys.stderr,
                )
                outbox = conn.execute(f"SELECT count(*) FROM {schema}.gman_outbox").fetchone()
                if outbox is None or outbox[0] != rows:
                    raise SystemExit(f"the outbox holds {outbox} rows, not {rows}")
    finally:
        uninstall(dsn, schema, force=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return min(times["plain"]), min(times["triggered"])


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
    args = parser.parse_args()
    if not args.pg_dsn:
        print("gearsql: give --pg-dsn (or set GEARSQL_TEST_PG_DSN)", file=sys.stderr)
        return 2
    if args.rows < 1 or args.repeat < 1:
        print("gearsql: --rows and --repeat must be at least 1", file=sys.stderr)
        return 2
    plain, triggered = bench(args.pg_dsn, args.rows, args.repeat)
    print(f"{'rows':>8}  {'plain INSERT':>14}  {'with trigger':>14}  {'ratio':>7}")
    print(f"{args.rows:>8}  {plain:>12.3f} s  {triggered:>12.3f} s  {triggered / plain:>6.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
