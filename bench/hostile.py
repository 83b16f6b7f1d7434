"""What hostile or careless clients cost a ``gearsql server``: RSS and outcomes, one table.

Each scenario starts a fresh server (memory store, on a free loopback port), measures its RSS
before, at the peak of the scenario and after it, and says how the server answered:

- ``partial``: connections each sending most of a declared 64 MiB packet (``--max-buffer``);
- ``slowloris``: connections sending one byte of a packet every second (``--packet-timeout``);
- ``functions``: distinct function names registered with CAN_DO by one worker that then leaves;
- ``abandoned``: foreground jobs whose clients leave before any worker comes;
- ``oversize``: one packet over ``--max-packet-size``, sent whole: does the client read the ERROR?
- ``unread``: a client sending ECHO_REQ without ever reading the answers.

    python bench/hostile.py                      # every scenario at the sizes of issue 14
    python bench/hostile.py --quick              # small sizes (a smoke run, not a measurement)
    python bench/hostile.py --scenarios partial,functions

``tests/test_hostile.py`` checks the same bounds at small sizes in the suite.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fuzz import rss_kib, started_server

from gearsql.protocol import REQ, RES, Packet, PacketType, Parser, pack_request

MiB = 1024 * 1024
Row = tuple[str, str, str]


def settled(pid: int, seconds: float = 5.0) -> int:
    """RSS once two readings 0.2 s apart differ by less than 256 KiB (or after ``seconds``)."""
    deadline = time.monotonic() + seconds
    last = rss_kib(pid)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = rss_kib(pid)
        if abs(now - last) < 256:
            return now
        last = now
    return last


def admin_count(address: tuple[str, int], command: bytes) -> int:
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(command + b"\n")
        reply = b""
        while not (reply == b".\n" or reply.endswith(b"\n.\n")):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            reply += chunk
    return len(reply.splitlines()) - 1


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def partial(address: tuple[str, int], pid: int, quick: bool) -> list[Row]:
    count, sent_each = (4, 6 * MiB) if quick else (10, 60 * MiB)
    before = settled(pid)
    socks: list[socket.socket] = []
    with contextlib.ExitStack() as stack:
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection(address, timeout=10))
            sock.setblocking(False)
            socks.append(sock)
        prefix = struct.pack(">4sII", REQ, PacketType.SUBMIT_JOB_BG, 64 * MiB) + b"f\0\0"
        filler = b"x" * MiB
        offsets = {sock: 0 for sock in socks}
        pending = set(socks)
        stalled = 0
        while pending and stalled < 100:
            moved = False
            for sock in list(pending):
                offset = offsets[sock]
                data = prefix[offset:] + filler if offset < len(prefix) else filler
                try:
                    sent = sock.send(data[: sent_each - offset])
                except BlockingIOError:
                    continue
                moved = True
                offsets[sock] = offset + sent
                if offsets[sock] >= sent_each:
                    pending.discard(sock)
            stalled = 0 if moved else stalled + 1
            if not moved:
                time.sleep(0.02)
        peak = settled(pid)
        pushed_back = len(pending)
    return [
        (
            "partial",
            f"{count} x {sent_each // MiB} MiB of 64 MiB packets: RSS MiB before/peak",
            f"{mib(before)} / {mib(peak)}",
        ),
        ("partial", "connections pushed back (not read)", str(pushed_back)),
    ]


def slowloris(address: tuple[str, int], pid: int, quick: bool) -> list[Row]:
    count = 50 if quick else 500
    packet = pack_request(PacketType.ECHO_REQ, b"s" * 100)
    with contextlib.ExitStack() as stack:
        socks = [
            stack.enter_context(socket.create_connection(address, timeout=10)) for _ in range(count)
        ]
        started = time.monotonic()
        open_ = set(socks)
        sent = 0
        # One byte a second each, for up to 3 timeouts' worth.
        while open_ and time.monotonic() - started < 3 * SLOW_TIMEOUT + 5:
            for sock in list(open_):
                try:
                    sock.send(packet[sent : sent + 1])
                except OSError:
                    open_.discard(sock)
            sent += 1
            time.sleep(1.0)
        took = time.monotonic() - started
    return [
        (
            "slowloris",
            f"{count} conns, a byte/s, --packet-timeout {SLOW_TIMEOUT:g}: still open",
            str(len(open_)),
        ),
        ("slowloris", "seconds until all were closed", f"{took:.0f}"),
    ]


def functions(address: tuple[str, int], pid: int, quick: bool) -> list[Row]:
    count = 10_000 if quick else 100_000
    before = settled(pid)
    with socket.create_connection(address, timeout=60) as worker:
        worker.sendall(
            b"".join(pack_request(PacketType.CAN_DO, b"fn-%d" % n) for n in range(count))
        )
        worker.sendall(pack_request(PacketType.ECHO_REQ, b"done"))
        parser, events = Parser(expect_magic=RES), []
        while not events:
            events = parser.feed(worker.recv(1 << 16))
        registered = settled(pid)
        listed = admin_count(address, b"status")
    deadline = time.monotonic() + 30
    while admin_count(address, b"status") and time.monotonic() < deadline:
        time.sleep(0.1)
    after = settled(pid)
    return [
        (
            "functions",
            f"{count} CAN_DO names: RSS MiB before/registered/after the worker left",
            f"{mib(before)} / {mib(registered)} / {mib(after)}",
        ),
        ("functions", "KiB per registered name", f"{(registered - before) / count:.2f}"),
        (
            "functions",
            "functions listed while registered / after",
            f"{listed} / {admin_count(address, b'status')}",
        ),
    ]


def abandoned(address: tuple[str, int], pid: int, quick: bool) -> list[Row]:
    count = 5_000 if quick else 50_000
    before = settled(pid)
    per_client = 1000
    for _ in range(count // per_client):
        with socket.create_connection(address, timeout=60) as client:
            client.sendall(
                b"".join(
                    pack_request(PacketType.SUBMIT_JOB, b"nobody", b"", b"p" * 100)
                    for _ in range(per_client)
                )
            )
            parser, got = Parser(expect_magic=RES), 0
            while got < per_client:
                got += len(parser.feed(client.recv(1 << 16)))
    deadline = time.monotonic() + 30
    while admin_count(address, b"show jobs") and time.monotonic() < deadline:
        time.sleep(0.1)
    after = settled(pid)
    return [
        (
            "abandoned",
            f"{count} foreground jobs, clients gone: RSS MiB before/after",
            f"{mib(before)} / {mib(after)}",
        ),
        (
            "abandoned",
            "jobs listed by show jobs afterwards",
            str(admin_count(address, b"show jobs")),
        ),
    ]


def oversize(address: tuple[str, int], pid: int, quick: bool) -> list[Row]:
    size = 70 * 1000 * 1000
    body = b"big\0\0" + b"x" * (size - 5)
    outcome = "no reply"
    with socket.create_connection(address, timeout=30) as sock:
        try:
            sock.sendall(struct.pack(">4sII", REQ, PacketType.SUBMIT_JOB, size) + body)
            received = b""
            while chunk := sock.recv(1 << 16):
                received += chunk
            events = Parser(expect_magic=RES).feed(received)
            if events and isinstance(events[0], Packet):
                outcome = " ".join(arg.decode() for arg in events[0].args)
        except ConnectionResetError:
            outcome = "connection reset"
    return [("oversize", "client sending a 70 MB job reads", outcome)]


def unread(address: tuple[str, int], pid: int, quick: bool) -> list[Row]:
    limit = (64 if quick else 512) * MiB
    before = settled(pid)
    echo = pack_request(PacketType.ECHO_REQ, b"e" * MiB)
    with socket.create_connection(address, timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        sent, stalled = 0, 0
        while sent < limit and stalled < 100:
            try:
                sent += sock.send(echo[sent % len(echo) :])
                stalled = 0
            except BlockingIOError:
                stalled += 1
                time.sleep(0.02)
        peak = settled(pid)
    return [
        (
            "unread",
            f"client never reading: MiB of ECHO_REQ it got in (of {limit // MiB}); "
            "RSS MiB before/peak",
            f"{sent // MiB}; {mib(before)} / {mib(peak)}",
        )
    ]


SLOW_TIMEOUT = 5.0
SCENARIOS: dict[str, tuple[Callable[[tuple[str, int], int, bool], list[Row]], list[str]]] = {
    "partial": (partial, []),
    "slowloris": (slowloris, ["--packet-timeout", str(SLOW_TIMEOUT)]),
    "functions": (functions, ["--max-functions", "200000"]),
    "abandoned": (abandoned, []),
    "oversize": (oversize, []),
    "unread": (unread, []),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated, from: " + ", ".join(SCENARIOS),
    )
    args = parser.parse_args(argv)
    rows: list[Row] = []
    for name in args.scenarios.split(","):
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}")
        run, extra = SCENARIOS[name]
        with (
            tempfile.TemporaryDirectory() as tmp,
            started_server(Path(tmp) / "gearsql.log", extra) as (address, pid),
        ):
            rows.extend(run(address, pid, args.quick))
    width = max(len(row[1]) for row in rows)
    print(f"{'scenario':<10}  {'figure':<{width}}  gearsql")
    print(f"{'-' * 10}  {'-' * width}  -------")
    for scenario, figure, value in rows:
        print(f"{scenario:<10}  {figure:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
