"""What the first gman_* call of a new PostgreSQL backend costs (loading the library into the
backend's Python), against the second call of the same backend.

Installs the functions into a schema of its own (dropped afterwards) with background_mode
'immediate' and starts its own `gearsql server` (memory store) on a free port. For each of
``--connections`` new connections it times, from the client, the first and then the second
``SELECT gman_do_background('bench_first', 'x')`` (each submits one background job over the
session's connection to the job server and waits for JOB_CREATED; no worker runs) and, with
``--status``, ``gman_job_status('outbox:1')`` instead (no job server involved). Connecting is not
timed. The row ``plpython`` is the floor no library can go below: the first call of a PL/Python
function that only returns 1, in a new backend (PL/Python starting its interpreter).

When the database runs on this machine (its backends' ``/proc/<pid>/schedstat`` readable), each
call's CPU time in the backend is shown too: on a shared machine it moves far less than the
time seen from the client, which includes waiting for a core.

    python bench/sql_first_call.py --connections 20 --pg-dsn postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ports import free_port
from sql_bridges import start_server


def cpu_seconds(pid: int) -> float | None:
    """The CPU time process ``pid`` has run (None when its schedstat cannot be read)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def timed(conn: Any, query: str) -> tuple[float, float | None]:
    """(seconds seen from the client, CPU seconds of the backend or None) of one query."""
    pid = conn.info.backend_pid
    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    conn.execute(query).fetchall()
    elapsed = time.perf_counter() - started
    after = cpu_seconds(pid)
    return elapsed, None if cpu is None or after is None else after - cpu


def measure(dsn: str, schema: str, query: str, connections: int) -> list[list[tuple]]:
    """[first call, second call, first call of the no-op] for each new backend, each
    (seconds, backend CPU seconds or None)."""
    import psycopg

    timings = []
    for _ in range(connections):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT 1")
            times = [timed(conn, query.format(schema=schema)) for _call in range(2)]
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT 1")
            times.append(timed(conn, f"SELECT {schema}._bench_noop()"))
        timings.append(times)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=20, help="new backends to time")
    parser.add_argument(
        "--pg-dsn",
        default=os.environ.get("GEARSQL_TEST_PG_DSN"),
        help="PostgreSQL DSN (default $GEARSQL_TEST_PG_DSN)",
    )
    parser.add_argument(
        "--status",
        action="store_true",
        help="time gman_job_status('outbox:1') (no job server) instead of gman_do_background",
    )
    args = parser.parse_args()
    if not args.pg_dsn:
        parser.error("give --pg-dsn or set $GEARSQL_TEST_PG_DSN")
    import psycopg

    from gearsql.bridges.postgres import install, uninstall

    port = free_port()
    server = start_server(port)
    schema = "gearsql_bench_" + secrets.token_hex(4)
    if args.status:
        query = "SELECT * FROM {schema}.gman_job_status('outbox:1')"
    else:
        query = "SELECT {schema}.gman_do_background('bench_first', 'x')"
    try:
        install(args.pg_dsn, schema, servers=f"127.0.0.1:{port}", background_mode="immediate")
        try:
            with psycopg.connect(args.pg_dsn, autocommit=True) as conn:
                conn.execute(
                    f"CREATE FUNCTION {schema}._bench_noop() RETURNS integer "
                    "LANGUAGE plpython3u AS 'return 1'"
                )
            timings = measure(args.pg_dsn, schema, query, args.connections)
        finally:
            with psycopg.connect(args.pg_dsn, autocommit=True) as conn:
                conn.execute(f"DROP FUNCTION IF EXISTS {schema}._bench_noop()")
            uninstall(args.pg_dsn, schema, force=True)
    finally:
        server.terminate()
        server.wait(10)
    print(f"{query.format(schema='<schema>')}: {args.connections} new backends")
    cpu = all(t[1] is not None for times in timings for t in times)
    header = f"{'call':<10}{'p50 ms':>9}{'min ms':>9}{'max ms':>9}"
    print(header + (f"{'cpu p50':>9}{'cpu min':>9}" if cpu else ""))
    for column, name in enumerate(("first", "second", "plpython")):
        values = sorted(times[column][0] * 1000 for times in timings)
        line = f"{name:<10}{statistics.median(values):>9.1f}{values[0]:>9.1f}{values[-1]:>9.1f}"
        if cpu:
            used = sorted(times[column][1] * 1000 for times in timings)
            line += f"{statistics.median(used):>9.2f}{used[0]:>9.2f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
