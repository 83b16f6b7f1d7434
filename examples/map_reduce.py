"""Map/reduce over an access log: the log service.

With a job server running (``gearsql server``), one command analyses a log in the common or
combined format with two worker threads started in this process::

    python examples/map_reduce.py run /var/log/nginx/access.log

The client cuts the log into chunks and scatters one map job per chunk and operation
(``count_status``: requests per HTTP status, ``bytes_by_path``: bytes sent per path); each
returns a partial result as JSON. A reduce job (``sum_counts``) then adds the partials up. Any
worker may serve any operation, or only some: run workers per operation elsewhere with::

    python examples/map_reduce.py worker count_status &
    python examples/map_reduce.py worker bytes_by_path sum_counts &
    python examples/map_reduce.py run --workers 0 access.log --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from gearsql import Client, Worker, WorkerJob

# host ident user [time] "METHOD PATH PROTOCOL" status bytes ...
LINE = re.compile(
    r'^\S+ \S+ \S+ \[[^\]]*\] "\S+ (?P<path>\S+)[^"]*" (?P<status>\d{3}) (?P<size>\d+|-)'
)


def parsed(chunk: bytes) -> Iterator[re.Match[str]]:
    for line in chunk.decode("utf-8", "replace").splitlines():
        match = LINE.match(line)
        if match:  # a log has junk lines; a map step skips them rather than fail the job
            yield match


# -- the map and reduce functions: JSON objects of counts out ---------------------------------


def count_status(job: WorkerJob) -> str:
    return json.dumps(Counter(m["status"] for m in parsed(job.data)))


def bytes_by_path(job: WorkerJob) -> str:
    sizes: Counter[str] = Counter()
    for m in parsed(job.data):
        sizes[m["path"]] += 0 if m["size"] == "-" else int(m["size"])
    return json.dumps(sizes)


def sum_counts(job: WorkerJob) -> str:
    """Reduce: a JSON list of partial counts in, their sum out."""
    total: Counter[str] = Counter()
    for partial in json.loads(job.data):
        total.update(partial)
    return json.dumps(total)


FUNCTIONS: dict[str, Callable[[WorkerJob], str]] = {
    "count_status": count_status,
    "bytes_by_path": bytes_by_path,
    "sum_counts": sum_counts,
}
MAP_OPERATIONS = ("count_status", "bytes_by_path")


def make_worker(servers: str, functions: list[str]) -> Worker:
    worker = Worker(servers)
    for name in functions or FUNCTIONS:
        worker.register(name, FUNCTIONS[name])
    return worker


@contextlib.contextmanager
def worker_threads(servers: str, count: int) -> Iterator[None]:
    """Run ``count`` workers in this process, so the recipe needs no other terminal."""
    workers = [make_worker(servers, []) for _ in range(count)]
    threads = [threading.Thread(target=w.run_forever, daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(timeout=10)


# -- the client --------------------------------------------------------------------------------


Counts = dict[str, int]  # what each operation reports: a count per status or path


def chunks(log: bytes, lines_per_chunk: int) -> list[bytes]:
    lines = log.splitlines(keepends=True)
    return [b"".join(lines[i : i + lines_per_chunk]) for i in range(0, len(lines), lines_per_chunk)]


def analyse(servers: str, log: bytes, lines_per_chunk: int, timeout: float) -> dict[str, Counts]:
    parts = chunks(log, lines_per_chunk)
    with Client(servers) as client:
        # Map: every (operation, chunk) job is in flight at once; workers take them as they free up.
        mapped = {op: [client.submit_task(op, part) for part in parts] for op in MAP_OPERATIONS}
        report: dict[str, Counts] = {}
        for op, tasks in mapped.items():
            partials = [json.loads(result) for result in client.gather(tasks, timeout=timeout)]
            # Reduce: one more job, so the aggregation runs where the workers are too.
            total = client.submit("sum_counts", json.dumps(partials), timeout=timeout)
            report[op] = json.loads(total)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Analyse an access log with map/reduce jobs.")
    parser.add_argument("--servers", default="127.0.0.1:4730", help="job servers, host:port,...")
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="serve the map and reduce functions")
    worker.add_argument(
        "functions", nargs="*", help=f"any of {', '.join(FUNCTIONS)} (default: all)"
    )
    run = commands.add_parser("run", help="analyse a log file ('-' for stdin)")
    run.add_argument("log", help="access log in common or combined format")
    run.add_argument("--chunk-lines", type=int, default=1000, help="lines per map job")
    run.add_argument("--workers", type=int, default=2, help="worker threads to start here")
    run.add_argument("--timeout", type=float, default=60.0, help="seconds per stage")
    run.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    if args.command == "worker":
        if unknown := set(args.functions) - set(FUNCTIONS):
            parser.error(f"unknown function: {', '.join(sorted(unknown))}")
        make_worker(args.servers, args.functions).run_forever()
        return 0
    log = sys.stdin.buffer.read() if args.log == "-" else Path(args.log).read_bytes()
    with worker_threads(args.servers, args.workers):
        report = analyse(args.servers, log, args.chunk_lines, args.timeout)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    print("requests by status:")
    for status, count in sorted(report["count_status"].items()):
        print(f"  {status}  {count:>10}")
    print("top paths by bytes sent:")
    for path, size in Counter(report["bytes_by_path"]).most_common(10):
        print(f"  {size:>12}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
