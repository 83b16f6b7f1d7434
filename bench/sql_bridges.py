"""Calls per second of gman_do_background in immediate mode, from PostgreSQL and from SQLite;
then N foreground jobs row by row (gman_do) against gman_map.

Starts its own `gearsql server` (memory store) on a free port; PostgreSQL is measured when a DSN
is given (--pg-dsn or $GEARSQL_TEST_PG_DSN), in a schema of its own that is dropped afterwards.
Each background call submits one job and waits for JOB_CREATED, over the session's cached
connection; no worker runs, so the jobs just queue.

The second table runs --map-jobs jobs that each take --job-ms milliseconds (a worker in this
process with --workers jobs at a time, asyncio.sleep) twice per database: as
``SELECT gman_do('bench_sleep', x) FROM <N rows>`` (one job after another: a row's call returns
before the next row's starts) and as one ``gman_map('bench_sleep', <the N workloads>)`` (all
submitted at once). --map-jobs 0 skips it.

    python bench/sql_bridges.py --calls 5000 --pg-dsn postgresql://postgres@127.0.0.1/postgres
    python bench/sql_bridges.py --calls 0 --map-jobs 8 --job-ms 500 --workers 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from typing import Any

from ports import free_port


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


def start_sleep_worker(address: str, workers: int, job_ms: int) -> tuple[Any, threading.Thread]:
    """A worker in a thread that answers ``bench_sleep`` after ``job_ms`` ms, ``workers`` jobs at
    a time."""
    from gearsql import Worker

    worker = Worker(address, concurrency=workers)

    async def sleep(job: Any) -> bytes:
        await asyncio.sleep(job_ms / 1000)
        return bytes(job.data)

    worker.register("bench_sleep", sleep)
    thread = threading.Thread(
        target=worker.run_forever, kwargs={"handle_signals": False}, daemon=True
    )
    thread.start()
    return worker, thread


def map_sqlite(address: str, jobs: int) -> tuple[float, float]:
    """Seconds for ``jobs`` gman_do row by row, then for one gman_map of as many workloads."""
    from gearsql.sqlite import connect

    conn = connect(":memory:", address)
    conn.execute("CREATE TABLE t (x TEXT)")
    conn.executemany("INSERT INTO t VALUES (?)", [(f"job {i}",) for i in range(jobs)])
    conn.execute("SELECT gman_do('bench_sleep', 'warm-up')").fetchall()
    started = time.perf_counter()
    rows = conn.execute("SELECT gman_do('bench_sleep', x) FROM t").fetchall()
    row_by_row = time.perf_counter() - started
    assert len(rows) == jobs
    started = time.perf_counter()
    (result,) = conn.execute(
        "SELECT gman_map('bench_sleep', (SELECT json_group_array(x) FROM t))"
    ).fetchone()
    mapped = time.perf_counter() - started
    assert result.count("job ") == jobs
    conn.close()
    return row_by_row, mapped


def map_postgres(dsn: str, address: str, jobs: int) -> tuple[float, float]:
    import psycopg

    from gearsql.bridges.postgres import install, uninstall

    schema = "gearsql_bench_" + secrets.token_hex(4)
    install(dsn, schema, servers=address)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "CREATE TEMP TABLE t AS SELECT 'job ' || i AS x "
                f"FROM generate_series(1, {jobs}) AS i"
            )
            conn.execute(f"SELECT {schema}.gman_do('bench_sleep', 'warm-up')")
            started = time.perf_counter()
            rows = conn.execute(f"SELECT {schema}.gman_do('bench_sleep', x) FROM t").fetchall()
            row_by_row = time.perf_counter() - started
            assert len(rows) == jobs
            started = time.perf_counter()
            rows = conn.execute(
                f"SELECT * FROM {schema}.gman_map('bench_sleep', ARRAY(SELECT x FROM t))"
            ).fetchall()
            mapped = time.perf_counter() - started
            assert len(rows) == jobs
    finally:
        uninstall(dsn, schema, force=True)
    return row_by_row, mapped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per database")
    parser.add_argument(
        "--pg-dsn",
        default=os.environ.get("GEARSQL_TEST_PG_DSN"),
        help="PostgreSQL DSN (default $GEARSQL_TEST_PG_DSN; none: skip)",
    )
    parser.add_argument("--map-jobs", type=int, default=8, help="jobs for gman_do vs gman_map")
    parser.add_argument("--job-ms", type=int, default=500, help="milliseconds each job takes")
    parser.add_argument("--workers", type=int, default=8, help="jobs the worker runs at a time")
    args = parser.parse_args()
    port = free_port()
    server = start_server(port)
    address = f"127.0.0.1:{port}"
    rows = []
    maps = []
    try:
        if args.calls:
            rows.append(("SQLite", bench_sqlite(address, args.calls)))
            if args.pg_dsn:
                rows.append(("PostgreSQL", bench_postgres(args.pg_dsn, address, args.calls)))
        if args.map_jobs:
            worker, thread = start_sleep_worker(address, args.workers, args.job_ms)
            try:
                maps.append(("SQLite", *map_sqlite(address, args.map_jobs)))
                if args.pg_dsn:
                    maps.append(("PostgreSQL", *map_postgres(args.pg_dsn, address, args.map_jobs)))
            finally:
                worker.stop()
                thread.join(10)
    finally:
        server.terminate()
        server.wait(10)
    if rows:
        print(f"gman_do_background, immediate mode, {args.calls} calls, one session")
        print(f"{'database':<12}{'calls/s':>10}")
        for name, rate in rows:
            print(f"{name:<12}{rate:>10.0f}")
    if maps:
        print(
            f"{args.map_jobs} foreground jobs of {args.job_ms} ms, {args.workers} at a time "
            "in the worker, one session"
        )
        print(f"{'database':<12}{'gman_do per row s':>18}{'gman_map s':>12}{'speed-up':>10}")
        for name, row_by_row, mapped in maps:
            print(f"{name:<12}{row_by_row:>18.3f}{mapped:>12.3f}{row_by_row / mapped:>9.1f}x")
    if not args.pg_dsn:
        print("PostgreSQL: skipped (no --pg-dsn / $GEARSQL_TEST_PG_DSN)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
