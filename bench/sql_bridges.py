"""Calls per second of gman_do_background in immediate mode, from PostgreSQL and from SQLite.

Starts its own `gearsql server` (memory store) on a free port; PostgreSQL is measured when a DSN
is given (--pg-dsn or $GEARSQL_TEST_PG_DSN), in a schema of its own that is dropped afterwards.
Each call submits one background job and waits for JOB_CREATED, over the session's cached
connection; no worker runs, so the jobs just queue.

    python bench/sql_bridges.py --calls 5000 --pg-dsn postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gearsql",
            "server",
            "--port",
            str(port),
            "--store",
            "memory",
            "--log-file",
            "none",
        ]
    )
    for _ in range(300):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the job server did not start")


def bench_sqlite(address: str, calls: int) -> float:
    from gearsql.sqlite import register

    conn = sqlite3.connect(":memory:")
    register(conn, address, background_mode="immediate")
    conn.execute("SELECT gman_do_background('bench_sqlite', 'warm-up')").fetchall()
    started = time.perf_counter()
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "SELECT count(gman_do_background('bench_sqlite', 'payload ' || i)) FROM n",
        (calls,),
    ).fetchall()
    elapsed = time.perf_counter() - started
    conn.close()
    return calls / elapsed


def bench_postgres(dsn: str, address: str, calls: int) -> float:
    import psycopg

    from gearsql.bridges.postgres import install, uninstall

    schema = "gearsql_bench_" + secrets.token_hex(4)
    install(dsn, schema, servers=address, background_mode="immediate")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"SELECT {schema}.gman_do_background('bench_pg', 'warm-up')")
            started = time.perf_counter()
            conn.execute(
                f"SELECT count({schema}.gman_do_background('bench_pg', 'payload ' || i)) "
                "FROM generate_series(1, %s) AS i",
                (calls,),
            )
            elapsed = time.perf_counter() - started
    finally:
        uninstall(dsn, schema, force=True)
    return calls / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per database")
    parser.add_argument(
        "--pg-dsn",
        default=os.environ.get("GEARSQL_TEST_PG_DSN"),
        help="PostgreSQL DSN (default $GEARSQL_TEST_PG_DSN; none: skip)",
    )
    args = parser.parse_args()
    port = free_port()
    server = start_server(port)
    address = f"127.0.0.1:{port}"
    rows = []
    try:
        rows.append(("SQLite", bench_sqlite(address, args.calls)))
        if args.pg_dsn:
            rows.append(("PostgreSQL", bench_postgres(args.pg_dsn, address, args.calls)))
    finally:
        server.terminate()
        server.wait(10)
    print(f"gman_do_background, immediate mode, {args.calls} calls, one session")
    print(f"{'database':<12}{'calls/s':>10}")
    for name, rate in rows:
        print(f"{name:<12}{rate:>10.0f}")
    if not args.pg_dsn:
        print("PostgreSQL: skipped (no --pg-dsn / $GEARSQL_TEST_PG_DSN)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
