"""Timeouts on both sides: a client deadline, and a worker timeout that requeues a stuck job.

* A client waits at most ``timeout`` seconds: :class:`gearsql.JobTimeout` then says it gave up
  waiting (the job itself goes on; Gearman has no cancel for a job in a worker's hands).
* A worker registers its function with ``timeout`` (CAN_DO_TIMEOUT): when a job runs longer,
  the job server takes it back and gives it to another worker; the first one's late answer is
  ignored.

With a job server running (``gearsql server``), one command shows both with worker threads::

    python examples/timeouts.py demo

Or piece by piece, in separate terminals::

    python examples/timeouts.py worker --name stuck --delay 60 --timeout 2
    python examples/timeouts.py call hello --deadline 1    # gives up after 1 s
    python examples/timeouts.py call hello --deadline 30   # wait: stuck starts it, then ...
    python examples/timeouts.py worker --name healthy      # ... takes it over after 2 s
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import threading
from collections.abc import Iterator

from gearsql import Client, JobTimeout, WorkData, Worker, WorkerJob


def slow_upper(job: WorkerJob, name: str, delay: float, hurry: threading.Event) -> str:
    """The worker function: upper-cases the text after ``delay`` seconds (simulated work)."""
    job.send_data(f"{name} started")  # WORK_DATA: the waiting client sees who runs the job
    hurry.wait(delay)  # time.sleep(delay), but the demo can cut it short to exit at once
    return f"{name}: {job.text.upper()}"


def make_worker(
    servers: str, name: str, delay: float, timeout: float | None, hurry: threading.Event
) -> Worker:
    worker = Worker(servers, client_id=name)
    handler = functools.partial(slow_upper, name=name, delay=delay, hurry=hurry)
    # With a timeout the worker announces CAN_DO_TIMEOUT: the server requeues a job that this
    # worker holds longer than that. Choose it above the longest honest run.
    worker.register("slow_upper", handler, timeout=timeout)
    return worker


@contextlib.contextmanager
def worker_thread(
    servers: str, name: str, delay: float, timeout: float | None = None
) -> Iterator[None]:
    """Run a worker on a thread; on exit, cut its simulated work short and stop it."""
    hurry = threading.Event()
    worker = make_worker(servers, name, delay, timeout, hurry)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        hurry.set()
        worker.stop()  # returns once the job in hand is finished
        thread.join(timeout=10)


def call(servers: str, text: str, deadline: float) -> int:
    with Client(servers) as client:
        try:
            result = client.submit(
                "slow_upper",
                text,
                timeout=deadline,  # covers connecting, queueing and running
                on_data=lambda data: print(f"update: {data.decode()}", flush=True),
            )
        except JobTimeout as exc:
            print(f"gave up: {exc}", flush=True)
            return 1
    print(f"result: {result.decode()}")
    return 0


def demo(servers: str) -> None:
    print("1. A client deadline shorter than the work:")
    with worker_thread(servers, "slow", delay=30), Client(servers) as client:
        try:
            client.submit("slow_upper", "too late", timeout=1)
        except JobTimeout as exc:
            print(f"   JobTimeout: {exc}")

    print("2. A worker timeout: the server takes a stuck job back and hands it on:")
    with worker_thread(servers, "stuck", delay=30, timeout=1), Client(servers) as client:
        task = client.submit_task("slow_upper", "hello")
        updates = (u for u in task.updates(timeout=10) if isinstance(u, WorkData))
        print(f"   update: {next(updates).data.decode()}")  # the stuck worker has the job
        # Only now start a healthy worker, so that the job surely went to the stuck one first.
        with worker_thread(servers, "healthy", delay=0):
            for update in updates:
                print(f"   update: {update.data.decode()}")  # after the 1 s timeout
            print(f"   result: {task.result(timeout=10).decode()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Client deadlines and worker timeouts.")
    parser.add_argument("--servers", default="127.0.0.1:4730", help="job servers, host:port,...")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="show both timeouts with worker threads")
    worker = commands.add_parser("worker", help="serve slow_upper until Ctrl-C")
    worker.add_argument("--name", default="worker", help="shown in updates and results")
    worker.add_argument("--delay", type=float, default=0.0, help="seconds each job takes")
    worker.add_argument("--timeout", type=float, help="CAN_DO_TIMEOUT in seconds")
    caller = commands.add_parser("call", help="run slow_upper TEXT and print updates and result")
    caller.add_argument("text")
    caller.add_argument("--deadline", type=float, default=10.0, help="seconds to wait")
    args = parser.parse_args(argv)

    if args.command == "worker":
        hurry = threading.Event()  # never set: a worker process works at its own pace
        make_worker(args.servers, args.name, args.delay, args.timeout, hurry).run_forever()
    elif args.command == "call":
        return call(args.servers, args.text, args.deadline)
    else:
        demo(args.servers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
