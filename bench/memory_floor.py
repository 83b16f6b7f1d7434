"""The least memory CPython objects need per queued background job: a lower bound for the server.

Not a server: a loop that keeps what a queued job must keep, as compactly as CPython objects
allow, and reads how much the process grew (``VmRSS``) per job. Each job is one bytes object
(its handle number, the time it was queued and its 100-byte payload, as gearsql packs a queued
job) in a deque; a job with a unique must also be found by it, so it adds an index entry:

- ``none``: no unique (gearsql's packed jobs are this).
- ``unique-key``: a dict from the unique's own bytes object to the entry.
- ``hash-key``: the unique inside the entry, and a dict keyed by a 30-bit hash of it (one
  small int object per job; a colliding unique would need a second look, left out here).

Uniques are 36 bytes, as libgearman sends (``compare.py``'s ``memory`` scenario)::

    python bench/memory_floor.py --jobs 200000

Compare with ``compare.py``'s "RSS growth per queued job" rows: what the server spends above
these figures is its own; what these cost, no pure-Python server can save.
"""

from __future__ import annotations

import argparse
import gc
import struct
import subprocess
import sys
import time
from collections import deque

VARIANTS = ("none", "unique-key", "hash-key")
PACKED = struct.Struct(">Qd")
PAYLOAD = b"x" * 100


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def bytes_per_job(variant: str, jobs: int) -> float:
    """Queue ``jobs`` jobs the ``variant`` way; the RSS growth per job."""
    queue: deque[bytes] = deque()
    index: dict[object, bytes] = {}
    gc.collect()
    before = rss_bytes()
    now = time.monotonic()
    for number in range(jobs):
        unique = b"%036d" % number  # a new bytes object, as a unique sliced off a read
        if variant == "none":
            entry = PACKED.pack(number, now) + PAYLOAD
        elif variant == "unique-key":
            entry = PACKED.pack(number, now) + PAYLOAD
            index[unique] = entry
        else:
            entry = PACKED.pack(number, now) + bytes([len(unique)]) + unique + PAYLOAD
            index[hash(unique) & 0x3FFFFFFF] = entry
        queue.append(entry)
    gc.collect()
    return (rss_bytes() - before) / jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--variant", choices=VARIANTS, help="measure only this one, here")
    args = parser.parse_args()
    if args.variant:
        print(f"{bytes_per_job(args.variant, args.jobs):.0f}")
        return
    print(f"{'variant':<12}  bytes per queued job ({args.jobs} jobs, 100-byte payloads)")
    for variant in VARIANTS:
        # Each in a process of its own: memory one variant freed would flatter the next.
        command = [sys.executable, __file__, "--jobs", str(args.jobs), "--variant", variant]
        figure = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        print(f"{variant:<12}  {float(figure):8.0f}")


if __name__ == "__main__":
    main()
