"""Scatter/gather: resize many images into thumbnails at once, on several workers.

With a job server running (``gearsql server``), one command makes the thumbnails with two
worker threads started in this process (needs Pillow: ``pip install 'gearsql[examples]'``)::

    python examples/scatter_gather.py run photo1.jpg photo2.png --out thumbs/

To spread the work over processes or machines, start workers anywhere and tell ``run`` to use
them instead of its own::

    python examples/scatter_gather.py worker --size 128 &
    python examples/scatter_gather.py worker --size 128 &
    python examples/scatter_gather.py run --workers 0 *.jpg

The client scatters one ``thumbnail`` job per image as a task (all on one connection, none
waiting for another) and gathers the PNG results in the order it sent the images.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import io
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from gearsql import AsyncClient, Worker, WorkerJob


def thumbnail(job: WorkerJob, size: int) -> bytes:
    """The worker function: image bytes in (any format Pillow reads), PNG bytes out."""
    with Image.open(io.BytesIO(job.data)) as image:
        image.thumbnail((size, size))  # keeps the aspect ratio and never enlarges
        out = io.BytesIO()
        image.save(out, format="PNG")
    return out.getvalue()


def make_worker(servers: str, size: int) -> Worker:
    worker = Worker(servers)
    # A plain function runs in the worker's thread pool, so a slow resize never blocks the
    # connection. An exception (say, a file that is not an image) reaches the client as
    # JobException with its text.
    worker.register("thumbnail", functools.partial(thumbnail, size=size))
    return worker


@contextlib.contextmanager
def worker_threads(servers: str, count: int, size: int) -> Iterator[None]:
    """Run ``count`` workers in this process, so the recipe needs no other terminal."""
    workers = [make_worker(servers, size) for _ in range(count)]
    threads = [threading.Thread(target=w.run_forever, daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for worker in workers:
            worker.stop()  # finishes the job in hand, then run_forever returns
        for thread in threads:
            thread.join(timeout=10)


async def make_thumbnails(servers: str, paths: list[Path], out: Path, timeout: float) -> int:
    async with AsyncClient(servers) as client:
        # Scatter: submit_task sends the job and returns a Task at once.
        tasks = [client.submit_task("thumbnail", path.read_bytes()) for path in paths]
        # Gather: results in submission order. With return_exceptions one bad image does not
        # hide the others' results; the timeout bounds the whole batch.
        results = await client.gather(tasks, timeout=timeout, return_exceptions=True)
    failures = 0
    out.mkdir(parents=True, exist_ok=True)
    for path, result in zip(paths, results, strict=True):
        if isinstance(result, Exception):
            failures += 1
            print(f"{path}: failed: {result}", file=sys.stderr)
            continue
        target = out / f"{path.stem}.thumb.png"
        target.write_bytes(result)
        print(f"{path} -> {target} ({len(result)} bytes)")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Make thumbnails on Gearman workers.")
    parser.add_argument("--servers", default="127.0.0.1:4730", help="job servers, host:port,...")
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="serve the thumbnail function until Ctrl-C")
    run = commands.add_parser("run", help="make thumbnails of the given images")
    worker.add_argument("--size", type=int, default=128, help="longest side in pixels")
    run.add_argument("--size", type=int, default=128, help="the same, for workers started here")
    run.add_argument("images", nargs="+", type=Path)
    run.add_argument("--out", type=Path, default=Path("."), help="folder for the thumbnails")
    run.add_argument("--workers", type=int, default=2, help="worker threads to start here")
    run.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole batch")
    args = parser.parse_args(argv)

    if args.command == "worker":
        make_worker(args.servers, args.size).run_forever()  # stops cleanly on SIGTERM/Ctrl-C
        return 0
    with worker_threads(args.servers, args.workers, args.size):
        return asyncio.run(make_thumbnails(args.servers, args.images, args.out, args.timeout))


if __name__ == "__main__":
    sys.exit(main())
