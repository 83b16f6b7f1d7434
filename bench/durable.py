"""Durable queues side by side: gearsql's stores against C gearmand's queue plugins, one run.

For every store (memory, SQLite, PostgreSQL, MySQL/MariaDB) this starts gearsql with
``--store URL`` and C gearmand with the matching ``-q`` plugin, each on a fresh server, a fresh
table (or SQLite file) and the same disk, and measures with ``loadgen.py``:

- ``submit-bg``: 100-byte SUBMIT_JOB_BG jobs with 36-byte uniques (like libgearman), a window in
  flight per connection, timed to the last JOB_CREATED; then the rows in the table are counted
  while the server still runs: every acknowledged job must be there.
- ``drain``: N jobs queued (not timed), then 4 workers empty the queue (each WORK_COMPLETE
  deletes a row).

Server CPU per 100k jobs is the job server's process only; the database server's own CPU for
PostgreSQL and MariaDB is shown separately. C gearmand commits every job in a transaction of its
own, so its durable queues get fewer jobs (``--slow-jobs``, 5k for libsqlite3, 4x that for
Postgres and MySQL); the figures are rates. See
bench/README.md, section "Durable queues".

    python bench/durable.py                         # every store, both servers
    python bench/durable.py --quick --stores sqlite,memory
    python bench/durable.py --stores sqlite --jobs 200000 --json bench/results/durable.json
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare
import loadgen
from compare import format_table, start_server
from loadgen import LoadConfig, ScenarioError

STORES = ("memory", "sqlite", "postgresql", "mysql")
SERVERS = ("gearmand", "gearsql")
SCENARIOS = ("submit-bg", "drain")
DEFAULT_JOBS = 100_000
DEFAULT_SLOW_JOBS = 5_000
QUICK_JOBS = 2_000
QUICK_SLOW_JOBS = 300
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_MYSQL_DSN = "mysql://root@127.0.0.1:3306/"
#: What the first target asks of gearsql's default SQLite store, in background jobs/s.
SQLITE_TARGET = 50_000
#: What the second target asks: durable submit rate / gearsql's in-memory rate.
MEMORY_FRACTION_TARGET = 0.30


# ---------------------------------------------------------------------------------------------
# Databases of our own on the machine's PostgreSQL and MariaDB servers


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@dataclass
class Databases:
    """The benchmark's own databases (created at the start, dropped at the end)."""

    tmpdir: Path
    name: str
    pg_admin: Any = None
    pg_dsn: str = ""
    mysql_admin: Any = None
    mysql_dsn: str = ""

    # -- connections of the database servers, for their CPU time

    def db_pids(self, store: str) -> list[int]:
        if store == "postgresql" and self.pg_admin is not None:
            rows = self.pg_admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.name,)
            ).fetchall()
            return [int(row[0]) for row in rows]
        if store == "mysql" and self.mysql_admin is not None:
            pids = []
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        comm = Path(f"/proc/{entry}/comm").read_text().strip()
                    except OSError:
                        continue
                    if comm in ("mariadbd", "mysqld"):
                        pids.append(int(entry))
            return pids
        return []

    def db_cpu(self, store: str) -> dict[int, float]:
        cpu = {}
        for pid in self.db_pids(store):
            try:
                cpu[pid] = loadgen.process_cpu_seconds(pid)
            except OSError:
                pass
        return cpu

    # -- tables

    def count_rows(self, store: str, server: str, table: str) -> int | None:
        if store == "sqlite":
            conn = sqlite3.connect(self.sqlite_path(table), timeout=30)
            try:
                return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            finally:
                conn.close()
        if store == "postgresql":
            import psycopg

            with psycopg.connect(self.pg_dsn, autocommit=True) as conn:
                return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
        if store == "mysql":
            conn = _mysql_connect(self.mysql_dsn)
            try:
                cursor = conn.cursor()
                cursor.execute(f"SELECT count(*) FROM `{table}`")
                return int(cursor.fetchone()[0])
            finally:
                conn.close()
        return None

    def drop_table(self, store: str, table: str) -> None:
        if store == "sqlite":
            for suffix in ("", "-wal", "-shm", "-journal", ".lock"):
                Path(f"{self.sqlite_path(table)}{suffix}").unlink(missing_ok=True)
        elif store == "postgresql" and self.pg_admin is not None:
            import psycopg

            with psycopg.connect(self.pg_dsn, autocommit=True) as conn:
                conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        elif store == "mysql" and self.mysql_admin is not None:
            conn = _mysql_connect(self.mysql_dsn)
            try:
                conn.cursor().execute(f"DROP TABLE IF EXISTS `{table}`")
            finally:
                conn.close()

    def sqlite_path(self, table: str) -> Path:
        return self.tmpdir / f"{table}.sqlite3"

    # -- how each server is told to use a store

    def gearsql_args(self, store: str, table: str) -> list[str]:
        if store == "memory":
            return ["--store", "memory"]
        if store == "sqlite":
            return ["--store", f"sqlite:///{self.sqlite_path(table)}?table={table}"]
        if store == "postgresql":
            return ["--store", f"{self.pg_dsn}?table={table}"]
        if store == "mysql":
            return ["--store", f"{self.mysql_dsn}?table={table}"]
        raise ValueError(store)

    def gearmand_args(self, store: str, table: str) -> list[str]:
        if store == "memory":
            return []
        if store == "sqlite":
            path = str(self.sqlite_path(table))
            return ["-q", "libsqlite3", "--libsqlite3-db", path, "--libsqlite3-table", table]
        if store == "postgresql":
            parts = urlsplit(self.pg_dsn)
            conninfo = (
                f"host={parts.hostname or '127.0.0.1'} port={parts.port or 5432} "
                f"user={unquote(parts.username or 'postgres')} dbname={self.name}"
            )
            if parts.password:
                conninfo += f" password={unquote(parts.password)}"
            return ["-q", "Postgres", "--libpq-conninfo", conninfo, "--libpq-table", table]
        if store == "mysql":
            parts = urlsplit(self.mysql_dsn)
            args = [
                "-q", "MySQL",
                "--mysql-host", parts.hostname or "127.0.0.1",
                "--mysql-port", str(parts.port or 3306),
                "--mysql-user", unquote(parts.username or "root"),
                "--mysql-db", self.name,
                "--mysql-table", table,
            ]  # fmt: skip
            if parts.password:
                args += ["--mysql-password", unquote(parts.password)]
            return args
        raise ValueError(store)


def _mysql_connect(dsn: str, database: bool = True) -> Any:
    import mysql.connector

    parts = urlsplit(dsn)
    args: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "autocommit": True,
        "connection_timeout": 5,
    }
    if database and parts.path.strip("/"):
        args["database"] = unquote(parts.path.strip("/"))
    return mysql.connector.connect(**args)


@contextmanager
def databases(
    tmpdir: Path, stores: Sequence[str], pg_dsn: str, mysql_dsn: str
) -> Iterator[Databases]:
    """Create ``gearsql_bench_<pid>_<hex>`` on each database server the run needs; drop it
    (and only it) at the end."""
    dbs = Databases(tmpdir, f"gearsql_bench_{os.getpid()}_{secrets.token_hex(3)}")
    try:
        if "postgresql" in stores:
            import psycopg

            dbs.pg_admin = psycopg.connect(pg_dsn, autocommit=True, connect_timeout=5)
            dbs.pg_admin.execute(f'CREATE DATABASE "{dbs.name}"')
            dbs.pg_dsn = _with_database(pg_dsn, dbs.name)
        if "mysql" in stores:
            dbs.mysql_admin = _mysql_connect(mysql_dsn, database=False)
            dbs.mysql_admin.cursor().execute(f"CREATE DATABASE `{dbs.name}`")
            dbs.mysql_dsn = _with_database(mysql_dsn, dbs.name)
        yield dbs
    finally:
        if dbs.pg_admin is not None:
            if dbs.pg_dsn:
                dbs.pg_admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (dbs.name,),
                )
                dbs.pg_admin.execute(f'DROP DATABASE IF EXISTS "{dbs.name}"')
            dbs.pg_admin.close()
        if dbs.mysql_admin is not None:
            if dbs.mysql_dsn:
                dbs.mysql_admin.cursor().execute(f"DROP DATABASE IF EXISTS `{dbs.name}`")
            dbs.mysql_admin.close()


# ---------------------------------------------------------------------------------------------
# Scenarios, built from loadgen's phases so that the database server's CPU is taken per phase


def _timed_phase(
    dbs: Databases, store: str, run: Callable[[], loadgen.PhaseResult]
) -> tuple[loadgen.PhaseResult, float | None]:
    before = dbs.db_cpu(store)
    phase = run()
    after = dbs.db_cpu(store)
    if not after:
        return phase, None
    return phase, sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def scenario_submit(
    dbs: Databases, store: str, server_kind: str, table: str, port: int, pid: int, cfg: LoadConfig
) -> dict[str, Any]:
    phase, db_cpu = _timed_phase(
        dbs,
        store,
        lambda: loadgen._fill("127.0.0.1", port, cfg, b"bench_bg", cfg.jobs, "s", pid),
    )
    rows = dbs.count_rows(store, server_kind, table)
    return {
        "metrics": {
            "jobs_per_s": phase.count / phase.wall,
            "cpu_per_100k": loadgen._per_100k(phase.server_cpu, phase.count),
            "db_cpu_per_100k": loadgen._per_100k(db_cpu, phase.count),
            "jobs": phase.count,
            "rows_after": rows,
        },
        "phases": {"submit": phase.summary()},
    }


def scenario_drain(
    dbs: Databases, store: str, server_kind: str, table: str, port: int, pid: int, cfg: LoadConfig
) -> dict[str, Any]:
    function = b"bench_drain"
    fill = loadgen._fill("127.0.0.1", port, cfg, function, cfg.jobs, "d", None)
    workers = loadgen._workers("127.0.0.1", port, cfg, function, cfg.procs, target=cfg.jobs)
    phase, db_cpu = _timed_phase(dbs, store, lambda: loadgen.run_phase(workers, pid, cfg.timeout))
    t_workers_done = time.monotonic()
    loadgen._check_drained("127.0.0.1", port, function)
    rows = dbs.count_rows(store, server_kind, table)
    # The server may delete finished jobs' rows after answering (gearsql commits deletions in
    # the background); the queue is only empty on disk once the table is.
    empty_after = None
    if rows is not None:
        deadline = time.monotonic() + cfg.timeout
        left = rows
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = dbs.count_rows(store, server_kind, table)
        if left:
            raise ScenarioError(f"{left} rows still in the table {cfg.timeout:.0f} s after drain")
        empty_after = max(0.0, time.monotonic() - t_workers_done) if rows else 0.0
    return {
        "metrics": {
            "jobs_per_s": cfg.jobs / phase.wall,
            "cpu_per_100k": loadgen._per_100k(phase.server_cpu, cfg.jobs),
            "db_cpu_per_100k": loadgen._per_100k(db_cpu, cfg.jobs),
            "jobs": cfg.jobs,
            "rows_after": rows,
            "table_empty_after_s": empty_after,
            "jobs_per_s_table_empty": (
                None if empty_after is None else cfg.jobs / (phase.wall + empty_after)
            ),
        },
        "phases": {"fill": fill.summary(), "drain": phase.summary()},
    }


SCENARIO_FUNCS = {"submit-bg": scenario_submit, "drain": scenario_drain}


def job_count(kind: str, store: str, jobs: int, slow_jobs: int) -> int:
    """C gearmand commits every durable job on its own: ``slow_jobs`` for its libsqlite3 queue
    (one fsync'd transaction per job), four times that for its Postgres and MySQL queues."""
    if kind != "gearmand" or store == "memory":
        return jobs
    return min(jobs, slow_jobs if store == "sqlite" else 4 * slow_jobs)


def measure(
    dbs: Databases, scenario: str, store: str, kind: str, cfg: LoadConfig, number: int
) -> dict[str, Any]:
    """One scenario on a fresh server with a fresh table; the table is dropped afterwards."""
    table = f"bench_{kind}_{scenario.split('-')[0]}_{number}"
    extra = dbs.gearsql_args(store, table) if kind == "gearsql" else dbs.gearmand_args(store, table)
    label = f"  {scenario:<9} {store:<10} {kind:<8} {cfg.jobs:>7} jobs"
    started = time.monotonic()
    result: dict[str, Any]
    try:
        server = start_server(kind, extra, None)
    except ScenarioError as exc:
        print(f"{label}  error: {exc}", file=sys.stderr, flush=True)
        dbs.drop_table(store, table)
        return {"error": str(exc)}
    try:
        result = SCENARIO_FUNCS[scenario](dbs, store, kind, table, server.port, server.pid, cfg)
        if server.proc.poll() is not None:
            raise ScenarioError(
                f"{kind} exited with {server.proc.returncode} during the run: "
                f"{server.stderr_tail()}"
            )
    except Exception as exc:  # ScenarioError, or a database error while counting rows
        print(f"{label}  error: {exc}", file=sys.stderr, flush=True)
        result = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        server.stop()
        try:
            dbs.drop_table(store, table)
        except Exception as exc:  # a leftover table is reported, not fatal
            print(f"  could not drop {table}: {exc}", file=sys.stderr)
    if "error" in result:
        return result
    result["command_args"] = extra
    metrics = result["metrics"]
    print(
        f"{label}  {time.monotonic() - started:5.1f} s  {metrics['jobs_per_s']:>9,.0f} jobs/s"
        + (f"  {metrics['cpu_per_100k']:.2f} CPU s/100k" if metrics["cpu_per_100k"] else "")
        + ("" if metrics["rows_after"] is None else f"  rows after {metrics['rows_after']}"),
        flush=True,
    )
    return result


# ---------------------------------------------------------------------------------------------
# The raw SQLite commit ceiling of this disk


def sqlite_ceiling(directory: Path, batch: int, seconds: float) -> dict[str, float]:
    """Rows/s a plain sqlite3 file (WAL, synchronous=FULL, gearmand's queue table) commits in
    transactions of ``batch`` 100-byte rows, over about ``seconds``."""
    path = directory / f"ceiling_{batch}.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE gearman_queue (unique_key TEXT, function_name TEXT, priority INTEGER,"
            " data BLOB, when_to_run INTEGER, PRIMARY KEY(unique_key, function_name))"
        )
        data = b"x" * loadgen.PAYLOAD_SIZE
        prefix = secrets.token_hex(12)
        rows = commits = 0
        started = time.perf_counter()
        while True:
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT OR REPLACE INTO gearman_queue VALUES (?, 'bench_bg', 1, ?, 0)",
                [(f"{prefix}-{rows + n:011d}", data) for n in range(batch)],
            )
            conn.execute("COMMIT")
            rows += batch
            commits += 1
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                break
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return {"batch": batch, "rows_per_s": rows / elapsed, "commits_per_s": commits / elapsed}


# ---------------------------------------------------------------------------------------------
# Report


FIGURES = [
    ("submit-bg", "jobs_per_s", "submit jobs/s", lambda v: f"{v:,.0f}"),
    ("submit-bg", "cpu_per_100k", "submit server CPU s/100k", lambda v: f"{v:.2f}"),
    ("drain", "jobs_per_s", "drain jobs/s", lambda v: f"{v:,.0f}"),
    ("drain", "jobs_per_s_table_empty", "drain jobs/s to empty table", lambda v: f"{v:,.0f}"),
    ("drain", "cpu_per_100k", "drain server CPU s/100k", lambda v: f"{v:.2f}"),
]


def _metric(results: dict[str, Any], scenario: str, store: str, kind: str, key: str) -> Any:
    result = results.get(scenario, {}).get(store, {}).get(kind)
    if not result or "error" in result:
        return None
    return result["metrics"].get(key)


def main_table(results: dict[str, Any], stores: Sequence[str], servers: Sequence[str]) -> str:
    rows = []
    for store in stores:
        for scenario, key, label, fmt in FIGURES:
            if scenario not in results or (store == "memory" and key.endswith("table_empty")):
                continue
            cells = []
            values = {}
            for kind in SERVERS:
                result = results[scenario].get(store, {}).get(kind)
                if kind not in servers or result is None:
                    cells.append("-")
                elif "error" in result:
                    cells.append("error")
                else:
                    value = result["metrics"].get(key)
                    values[kind] = value
                    cells.append("n/a" if value is None else fmt(value))
            ratio = "-"
            if values.get("gearmand") and values.get("gearsql") is not None:
                ratio = f"{values['gearsql'] / values['gearmand']:.2f}"
            rows.append([store, label, *cells, ratio])
    return format_table(["store", "figure", "gearmand", "gearsql", "gearsql/gearmand"], rows)


def detail_table(results: dict[str, Any], stores: Sequence[str], servers: Sequence[str]) -> str:
    rows = []
    for scenario in SCENARIOS:
        for store in stores:
            for kind in servers:
                result = results.get(scenario, {}).get(store, {}).get(kind)
                if not result or "error" in result:
                    continue
                metrics = result["metrics"]
                phase = result["phases"]["submit" if scenario == "submit-bg" else "drain"]
                wall = phase["wall"]
                db_cpu = metrics.get("db_cpu_per_100k")
                empty = metrics.get("table_empty_after_s")
                rows.append(
                    [
                        scenario,
                        f"{store} {kind}",
                        f"{metrics['jobs']:,}",
                        f"{wall:.2f}",
                        "-" if phase["server_cpu"] is None else f"{phase['server_cpu'] / wall:.2f}",
                        f"{phase['gen_cpu'] / wall:.2f}",
                        "-" if db_cpu is None else f"{db_cpu:.2f}",
                        "-" if metrics["rows_after"] is None else f"{metrics['rows_after']:,}",
                        "-" if empty is None else f"{empty:.2f}",
                    ]
                )
    return format_table(
        [
            "scenario",
            "store server",
            "jobs",
            "wall s",
            "server cores",
            "gen cores",
            "db server CPU s/100k",
            "rows in table at end",
            "table empty +s",
        ],
        rows,
    )


def check_targets(results: dict[str, Any]) -> list[str]:
    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "NOT met")

    lines = []
    sqlite_rate = _metric(results, "submit-bg", "sqlite", "gearsql", "jobs_per_s")
    jobs = _metric(results, "submit-bg", "sqlite", "gearsql", "jobs")
    rows = _metric(results, "submit-bg", "sqlite", "gearsql", "rows_after")
    committed = None if jobs is None or rows is None else rows >= jobs
    ok = None if sqlite_rate is None else sqlite_rate >= SQLITE_TARGET and bool(committed)
    detail = ""
    if sqlite_rate is not None:
        detail = f" ({sqlite_rate:,.0f} jobs/s; {rows:,} of {jobs:,} acknowledged jobs in the table"
        gearmand = _metric(results, "submit-bg", "sqlite", "gearmand", "jobs_per_s")
        if gearmand:
            detail += f"; {sqlite_rate / gearmand:.0f}x gearmand libsqlite3"
        detail += ")"
    lines.append(
        f"gearsql default SQLite store >= {SQLITE_TARGET:,} background jobs/s, every "
        f"acknowledged job committed (synchronous=FULL): {verdict(ok)}{detail}"
    )
    memory_rate = _metric(results, "submit-bg", "memory", "gearsql", "jobs_per_s")
    fraction = None if sqlite_rate is None or not memory_rate else sqlite_rate / memory_rate
    lines.append(
        f"durable (SQLite) submit >= {100 * MEMORY_FRACTION_TARGET:.0f}% of gearsql's in-memory "
        f"rate: {verdict(None if fraction is None else fraction >= MEMORY_FRACTION_TARGET)}"
        + (
            ""
            if fraction is None
            else f" ({100 * fraction:.0f}%: {sqlite_rate:,.0f} vs {memory_rate:,.0f} jobs/s)"
        )
    )
    for store in ("postgresql", "mysql"):
        rate = _metric(results, "submit-bg", store, "gearsql", "jobs_per_s")
        if rate is not None and memory_rate:
            lines.append(
                f"  (for context: gearsql {store} submit is {100 * rate / memory_rate:.0f}% "
                "of in-memory)"
            )
    return lines


# ---------------------------------------------------------------------------------------------


def _device_of(path: str) -> str:
    """The mount point and device ``path`` lives on, from /proc/self/mounts."""
    try:
        real = os.path.realpath(path)
        best = ("", "?")
        with open("/proc/self/mounts") as handle:
            for line in handle:
                device, mount = line.split()[:2]
                if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(
                    mount
                ) >= len(best[0]):
                    best = (mount, device)
        return f"{best[1]} mounted on {best[0]}"
    except OSError:
        return "?"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Durable background jobs: gearsql's stores against C gearmand's queues."
    )
    parser.add_argument(
        "--stores",
        default=",".join(STORES),
        help="comma-separated, from: " + ", ".join(STORES) + " (default: all)",
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated, from: " + ", ".join(SERVERS) + " (default: both)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated, from: " + ", ".join(SCENARIOS) + " (default: both)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help=f"jobs per scenario (default {DEFAULT_JOBS:,}, or {QUICK_JOBS:,} with --quick)",
    )
    parser.add_argument(
        "--slow-jobs",
        type=int,
        default=None,
        help="jobs per scenario for C gearmand's libsqlite3 queue, which commits every job on "
        f"its own (default {DEFAULT_SLOW_JOBS:,}, or {QUICK_SLOW_JOBS} with --quick); its "
        "Postgres and MySQL queues get four times as many",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small counts: a smoke run, not a measurement"
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each measurement N times, alternating, and report the best run",
    )
    parser.add_argument(
        "--tmpdir",
        default=None,
        help="where the SQLite files go (default: a fresh directory under /tmp, removed after)",
    )
    parser.add_argument(
        "--pg-dsn",
        default=os.environ.get("GEARSQL_TEST_PG_DSN") or DEFAULT_PG_DSN,
        help="PostgreSQL server to create the benchmark's database on "
        "(default $GEARSQL_TEST_PG_DSN or %(default)s)",
    )
    parser.add_argument(
        "--mysql-dsn",
        default=os.environ.get("GEARSQL_TEST_MYSQL_DSN") or DEFAULT_MYSQL_DSN,
        help="MySQL/MariaDB server to create the benchmark's database on "
        "(default $GEARSQL_TEST_MYSQL_DSN or %(default)s)",
    )
    args = parser.parse_args(argv)
    for option, choices in (
        ("stores", STORES),
        ("servers", SERVERS),
        ("scenarios", SCENARIOS),
    ):
        names = [name.strip() for name in getattr(args, option).split(",") if name.strip()]
        for name in names:
            if name not in choices:
                parser.error(f"unknown {option[:-1]} {name!r}; choose from {', '.join(choices)}")
        setattr(args, option, [name for name in choices if name in names])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    jobs = args.jobs or (QUICK_JOBS if args.quick else DEFAULT_JOBS)
    slow_jobs = args.slow_jobs or (QUICK_SLOW_JOBS if args.quick else DEFAULT_SLOW_JOBS)
    cfg = LoadConfig(jobs=jobs, timeout=60.0 if args.quick else 300.0)
    own_tmpdir = args.tmpdir is None
    tmpdir = Path(tempfile.mkdtemp(prefix="gearsql-durable-", dir=args.tmpdir or "/tmp"))
    meta = compare.machine_info()
    print(
        f"durable queues: stores {', '.join(args.stores)}; servers {', '.join(args.servers)}; "
        f"{jobs:,} jobs (gearmand libsqlite3 {job_count('gearmand', 'sqlite', jobs, slow_jobs):,}, "
        f"Postgres/MySQL {job_count('gearmand', 'mysql', jobs, slow_jobs):,}); "
        f"{meta['cpus']} CPUs; load average {meta['loadavg_at_start'][0]:.2f}",
        flush=True,
    )
    print(f"SQLite files in {tmpdir} ({_device_of(str(tmpdir))})", flush=True)

    results: dict[str, dict[str, dict[str, Any]]] = {}
    seconds = 0.3 if args.quick else 2.0
    ceiling: list[dict[str, Any]] = []
    failures = 0
    try:
        # The disk is shared: its commit rate is taken before and after the runs.
        ceiling.append({"when": "before", **sqlite_ceiling(tmpdir, 64, seconds)})
        with databases(tmpdir, args.stores, args.pg_dsn, args.mysql_dsn) as dbs:
            if dbs.pg_admin is not None:
                where = dbs.pg_admin.execute("SHOW data_directory").fetchone()[0]
                print(f"PostgreSQL database {dbs.name}, data in {where} ({_device_of(where)})")
            if dbs.mysql_admin is not None:
                cursor = dbs.mysql_admin.cursor()
                cursor.execute("SELECT @@datadir")
                where = cursor.fetchone()[0]
                print(f"MariaDB/MySQL database {dbs.name}, data in {where} ({_device_of(where)})")
            number = 0
            for scenario in args.scenarios:
                for store in args.stores:
                    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in args.servers}
                    for _ in range(args.repeat):
                        for kind in args.servers:
                            run_cfg = replace(cfg, jobs=job_count(kind, store, jobs, slow_jobs))
                            number += 1
                            result = measure(dbs, scenario, store, kind, run_cfg, number)
                            failures += "error" in result
                            runs[kind].append(result)
                    for kind, kind_runs in runs.items():
                        results.setdefault(scenario, {}).setdefault(store, {})[kind] = (
                            compare.representative(scenario, kind_runs)
                        )
        ceiling.append({"when": "after", **sqlite_ceiling(tmpdir, 64, seconds)})
        ceiling.append({"when": "after", **sqlite_ceiling(tmpdir, 1, seconds / 2)})
    finally:
        if own_tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)

    meta["loadavg_at_end"] = os.getloadavg()
    print()
    print(main_table(results, args.stores, args.servers))
    print(
        f"memory = gearmand's builtin queue. Jobs per run: gearmand libsqlite3 "
        f"{job_count('gearmand', 'sqlite', jobs, slow_jobs):,}, gearmand Postgres/MySQL "
        f"{job_count('gearmand', 'mysql', jobs, slow_jobs):,}, everything else {jobs:,}.\n"
        "Server CPU is the job server's process only (see db server CPU below)."
    )
    print()
    print("Per run (cores = CPU s / wall s; db server = PostgreSQL backends of the benchmark's")
    print("database, or the whole mariadbd process, over the timed phase; rows in table at end:")
    print("after the last JOB_CREATED, or after the drain's last WORK_COMPLETE; table empty +s:")
    print("how much longer the server took to commit the deletions of the drained jobs):")
    print(detail_table(results, args.stores, args.servers))
    print()
    print("Raw SQLite commit ceiling on the same disk (plain sqlite3, WAL, synchronous=FULL):")
    for figure in ceiling:
        print(
            f"  {figure['when']:<6} the runs, batches of {figure['batch']:>2}: "
            f"{figure['rows_per_s']:>9,.0f} rows/s "
            f"({figure['commits_per_s']:,.0f} commits/s)"
        )
    print()
    print(
        "Targets:"
        + (" (--quick: too few jobs for these verdicts to mean anything)" if args.quick else "")
    )
    for line in check_targets(results):
        print("  " + line)
    print()
    print(f"load average at end {meta['loadavg_at_end'][0]:.2f}")

    if args.json:
        document = {
            "meta": meta,
            "args": {
                "stores": args.stores,
                "servers": args.servers,
                "scenarios": args.scenarios,
                "repeat": args.repeat,
                "slow_jobs": slow_jobs,
                "tmpdir": str(tmpdir),
            },
            "config": asdict(cfg),
            "sqlite_ceiling": ceiling,
            "results": results,
        }
        with open(args.json, "w") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
