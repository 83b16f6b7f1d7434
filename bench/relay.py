"""The relay: throughput from a bulk insert and latency from commit to worker start, per database
and per way of hearing of new rows (PostgreSQL LISTEN or polling, SQLite's change counter or
polling, MariaDB's binlog or polling).

Starts its own `gearsql server` (memory store) and, per case, a `gearsql relay` process. For
each case:

* latency: ``--samples`` single-row transactions one after another (``--poll-samples`` at
  random moments when polling); from the return of COMMIT to the moment a worker (in this
  process) starts the job; p50 and p99.
* throughput: one transaction inserts ``--rows`` outbox rows; rows/s from the return of its
  COMMIT to the moment the job server holds every job (no worker, so the jobs queue; measured
  by polling the admin `status`, every 5 ms); meanwhile, the relay process's CPU per row and
  how many of the machine's CPUs were busy (the relay, the job server, the database and
  anything else that runs on the machine: a figure well below 2 on a 2-core machine means
  the relay waited for something, near 2 that the machine was full).

PostgreSQL runs when a DSN is given (--pg-dsn or $GEARSQL_TEST_PG_DSN), MariaDB likewise
(--mysql-dsn or $GEARSQL_TEST_MYSQL_DSN) in a database of its own; both with gearsql installed,
so that the relay records handles and its contact as in production. The binlog case needs
``mariadbd`` and starts a private MariaDB with the binlog on (--binlog).

    python bench/relay.py --rows 100000 --samples 100 --binlog \\
        --pg-dsn postgresql://postgres@127.0.0.1/postgres --mysql-dsn mysql://root@127.0.0.1/test

``--quick`` is a smoke run on small counts; ``--json FILE`` also writes the figures to FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ports import free_port  # noqa: E402

from gearsql import Worker, WorkerJob  # noqa: E402
from gearsql.adminclient import AdminClient  # noqa: E402


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"a child exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


# -- databases -----------------------------------------------------------------------------------


class Case:
    """One database and source. ``insert(function, workloads)`` commits one transaction."""

    name = ""
    source = ""
    dsn = ""
    options: tuple[str, ...] = ()

    def insert(self, function: str, workloads: list[str]) -> None:
        raise NotImplementedError


class SQLiteCase(Case):
    def __init__(self, path: Path, source: str) -> None:
        import sqlite3

        self.name, self.source, self.dsn = "sqlite", source, f"sqlite:///{path}"
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS gman_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), "
            "function BLOB NOT NULL, unique_key BLOB, workload BLOB NOT NULL, "
            "priority TEXT NOT NULL DEFAULT 'normal')"
        )

    def insert(self, function: str, workloads: list[str]) -> None:
        self.conn.execute("BEGIN")
        self.conn.executemany(
            "INSERT INTO gman_outbox (function, workload) VALUES (?, ?)",
            [(function.encode(), w.encode()) for w in workloads],
        )
        self.conn.execute("COMMIT")


class PostgresCase(Case):
    def __init__(self, dsn: str, schema: str, source: str) -> None:
        import psycopg

        self.name, self.source, self.dsn = "postgresql", source, dsn
        self.schema = schema
        self.options = ("--schema", schema)
        self.conn = psycopg.connect(dsn, autocommit=True)

    def insert(self, function: str, workloads: list[str]) -> None:
        # What the outbox insert of the gman_* functions does, without PL/Python in the way.
        with self.conn.transaction(), self.conn.cursor() as cursor:
            cursor.executemany(
                f'INSERT INTO "{self.schema}".gman_outbox (function, workload) VALUES (%s, %s)',
                [(function.encode(), w.encode()) for w in workloads],
            )
            cursor.execute("SELECT pg_notify('gearsql_outbox', %s)", (self.schema,))


class MySQLCase(Case):
    def __init__(self, dsn: str, source: str) -> None:
        import mysql.connector

        from gearsql.bridges.mysql import connect_config

        self.name, self.source, self.dsn = "mariadb", source, dsn
        self.conn: Any = mysql.connector.connect(**connect_config(dsn))

    def insert(self, function: str, workloads: list[str]) -> None:
        cursor = self.conn.cursor()
        cursor.execute("START TRANSACTION")
        for start in range(0, len(workloads), 5000):
            cursor.executemany(
                "INSERT INTO gman_outbox (function, workload) VALUES (%s, %s)",
                [(function, w) for w in workloads[start : start + 5000]],
            )
        cursor.execute("COMMIT")
        cursor.close()


@contextmanager
def postgres_schema(dsn: str) -> Iterator[str]:
    from gearsql.bridges.postgres import install, uninstall

    schema = f"bench_relay_{secrets.token_hex(3)}"
    install(dsn, schema)
    try:
        yield schema
    finally:
        uninstall(dsn, schema, force=True)


@contextmanager
def mysql_database(dsn: str) -> Iterator[str]:
    import mysql.connector

    from gearsql.bridges.mysql import install

    parts = urlsplit(dsn)
    name = f"bench_relay_{secrets.token_hex(3)}"
    admin: Any = mysql.connector.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        autocommit=True,
    )
    cursor = admin.cursor()
    cursor.execute(f"CREATE DATABASE `{name}`")
    dsn = urlunsplit((parts.scheme, parts.netloc, "/" + name, "", ""))
    try:
        # The real tables, so that the relay also records handles and its contact.
        install(dsn)
        yield dsn
    finally:
        cursor.execute(f"DROP DATABASE `{name}`")
        admin.close()


@contextmanager
def private_mariadb() -> Iterator[str]:
    """A MariaDB of its own with the binlog on (ROW), in a temporary directory."""
    install_db, daemon = shutil.which("mariadb-install-db"), shutil.which("mariadbd")
    daemon = daemon or ("/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None)
    if install_db is None or daemon is None:
        raise SystemExit("--binlog needs mariadbd and mariadb-install-db")
    with tempfile.TemporaryDirectory(prefix="bench-mariadb-") as tmp:
        subprocess.run(
            [
                install_db,
                "--no-defaults",
                f"--datadir={tmp}/data",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
        )
        port = free_port()
        proc = subprocess.Popen(
            [
                daemon,
                "--no-defaults",
                f"--datadir={tmp}/data",
                f"--socket={tmp}/sock",
                f"--port={port}",
                "--bind-address=127.0.0.1",
                f"--log-bin={tmp}/binlog",
                "--binlog-format=ROW",
                "--log-bin-trust-function-creators=1",
                "--server-id=1",
                "--user=root",
                f"--pid-file={tmp}/pid",
                f"--log-error={tmp}/error.log",
                "--max-allowed-packet=64M",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(port, proc)
            time.sleep(0.3)
            yield f"mysql://root@127.0.0.1:{port}/mysql"
        finally:
            proc.terminate()
            proc.wait(30)


# -- measuring -----------------------------------------------------------------------------------


class Arrivals:
    """A worker that notes when each latency job starts."""

    def __init__(self, address: str, function: str) -> None:
        self.started: dict[str, float] = {}
        self.cond = threading.Condition()
        self.worker = Worker(address, concurrency=4)
        self.worker.register(function, self.arrive)
        self.thread = threading.Thread(
            target=self.worker.run_forever, kwargs={"handle_signals": False}, daemon=True
        )
        self.thread.start()

    def arrive(self, job: WorkerJob) -> bytes:
        now = time.perf_counter()
        with self.cond:
            self.started[job.data.decode()] = now
            self.cond.notify_all()
        return b""

    def wait(self, key: str, timeout: float = 10.0) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: key in self.started, timeout):
                raise SystemExit(f"job {key} did not reach the worker within {timeout} s")
            return self.started[key]

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(10)


def queued(admin: AdminClient, function: str) -> int:
    for status in admin.status():
        if status.name == function.encode():
            return status.total
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds all CPUs spent busy (not idle, not waiting for I/O) so far."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class Result(NamedTuple):
    name: str
    source: str
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    #: The relay process's CPU per row of the bulk insert, from COMMIT to the last job.
    relay_us_per_row: float
    #: How many of the machine's CPUs were busy meanwhile (relay, job server, database and
    #: whatever else runs on the machine).
    busy_cores: float


def measure(
    case: Case, address: str, rows: int, samples: int, poll_samples: int, batch: int, log: Path
) -> Result:
    """The figures of one case."""
    tag = f"{case.name}_{case.source}_{secrets.token_hex(2)}"
    relay = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gearsql",
            "relay",
            "--dsn",
            case.dsn,
            "--servers",
            address,
            "--source",
            case.source,
            "--poll-interval",
            "0.5",
            "--batch",
            str(batch),
            "--log-file",
            str(log),
            *case.options,
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while "relaying " not in (log.read_text() if log.exists() else ""):
            if relay.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the relay did not start:\n{log.read_text()}")
            time.sleep(0.05)
        if case.source == "binlog":
            time.sleep(0.5)  # let it reach the end of the binlog
        arrivals = Arrivals(address, f"lat_{tag}")
        latencies = []
        try:
            case.insert(f"lat_{tag}", ["warm-up"])
            arrivals.wait("warm-up")
            count = samples if case.source not in ("poll",) else poll_samples
            for i in range(count):
                if case.source == "poll":  # commit at a random moment of the poll interval
                    time.sleep(random.uniform(0, 0.5))
                case.insert(f"lat_{tag}", [str(i)])
                committed = time.perf_counter()
                latencies.append((arrivals.wait(str(i)) - committed) * 1000)
                time.sleep(0.01)
        finally:
            arrivals.stop()
        function = f"bulk_{tag}"
        with AdminClient(address) as admin:
            relay_cpu = cpu_seconds(relay.pid)
            case.insert(function, [f"row {i}" for i in range(rows)])
            committed, busy = time.perf_counter(), machine_busy()
            while queued(admin, function) < rows:
                time.sleep(0.005)
            elapsed = time.perf_counter() - committed
            busy = machine_busy() - busy
            relay_cpu = cpu_seconds(relay.pid) - relay_cpu
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(30)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return Result(
        case.name,
        {"auto": "change counter"}.get(case.source, case.source),
        rows / elapsed,
        statistics.median(latencies),
        p99,
        relay_cpu / rows * 1e6,
        busy / elapsed,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the bulk insert")
    parser.add_argument("--batch", type=int, default=500, help="the relay's --batch")
    parser.add_argument("--samples", type=int, default=100, help="single-row commits timed")
    parser.add_argument(
        "--poll-samples",
        type=int,
        default=25,
        help="single-row commits timed when polling (each waits up to 0.5 s)",
    )
    parser.add_argument("--pg-dsn", default=os.environ.get("GEARSQL_TEST_PG_DSN"))
    parser.add_argument("--mysql-dsn", default=os.environ.get("GEARSQL_TEST_MYSQL_DSN"))
    parser.add_argument(
        "--binlog", action="store_true", help="also MariaDB with the binlog, in a private server"
    )
    parser.add_argument("--only", help="comma-separated database names to run")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 300 rows, 3 samples (2 when polling)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.samples, args.poll_samples = 300, 3, 2

    port = free_port()
    address = f"127.0.0.1:{port}"
    server = subprocess.Popen(
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
        ],
        stdin=subprocess.DEVNULL,
    )
    results: list[Result] = []
    wanted = set(args.only.split(",")) if args.only else None
    try:
        wait_port(port, server)
        with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
            cases: list[Callable[[], Case]] = []
            if wanted is None or "sqlite" in wanted:
                for source in ("auto", "poll"):
                    cases.append(
                        lambda s=source: SQLiteCase(  # type: ignore[misc]
                            Path(tmp) / f"app-{s}.db", s
                        )
                    )
            if args.pg_dsn and (wanted is None or "postgresql" in wanted):
                schema = stack.enter_context(postgres_schema(args.pg_dsn))
                for source in ("listen", "poll"):
                    cases.append(
                        lambda s=source: PostgresCase(  # type: ignore[misc]
                            args.pg_dsn, schema, s
                        )
                    )
            if args.mysql_dsn and (wanted is None or "mariadb" in wanted):
                dsn = stack.enter_context(mysql_database(args.mysql_dsn))
                cases.append(lambda: MySQLCase(dsn, "poll"))
            if args.binlog and (wanted is None or "mariadb" in wanted):
                dsn = stack.enter_context(mysql_database(stack.enter_context(private_mariadb())))
                cases.append(lambda: MySQLCase(dsn, "binlog"))
                cases.append(lambda: MySQLCase(dsn, "poll"))
            for number, make in enumerate(cases):
                case = make()
                result = measure(
                    case,
                    address,
                    args.rows,
                    args.samples,
                    args.poll_samples,
                    args.batch,
                    Path(tmp) / f"relay{number}.log",
                )
                case.conn.close()  # type: ignore[attr-defined]
                results.append(result)
                print(
                    f"{result.name} {result.source}: {result.rows_per_s:,.0f} rows/s, "
                    f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, relay "
                    f"{result.relay_us_per_row:.0f} us/row, {result.busy_cores:.2f} cores busy",
                    file=sys.stderr,
                )
    finally:
        server.terminate()
        server.wait(30)
    print()
    print(
        f"relay, {args.rows:,} rows in one transaction; latency over {args.samples} "
        f"single-row commits ({args.poll_samples} when polling; poll interval 0.5 s, "
        f"batch {args.batch}); load average {os.getloadavg()[0]:.2f} at the end"
    )
    header = ("database", "source", "rows/s", "p50 ms", "p99 ms", "relay us/row", "busy cores")
    print(f"{header[0]:<12}{header[1]:<16}" + "".join(f"{h:>13}" for h in header[2:]))
    print("-" * 93)
    for r in results:
        print(
            f"{r.name:<12}{r.source:<16}{r.rows_per_s:>13,.0f}{r.p50_ms:>13.1f}{r.p99_ms:>13.1f}"
            f"{r.relay_us_per_row:>13.1f}{r.busy_cores:>13.2f}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": args.rows,
                    "samples": args.samples,
                    "poll_samples": args.poll_samples,
                    "poll_interval_s": 0.5,
                    "batch": args.batch,
                    "load_average": os.getloadavg()[0],
                    "results": [
                        {
                            "database": r.name,
                            "source": r.source,
                            "rows_per_s": round(r.rows_per_s, 1),
                            "p50_ms": round(r.p50_ms, 2),
                            "p99_ms": round(r.p99_ms, 2),
                            "relay_us_per_row": round(r.relay_us_per_row, 1),
                            "busy_cores": round(r.busy_cores, 2),
                        }
                        for r in results
                    ],
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
