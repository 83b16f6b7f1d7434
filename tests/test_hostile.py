"""Bounds a hostile client cannot push past, against a real ``gearsql server`` over real TCP
(docs/reliability.md cases 9, 41-46).

Each test drives a server process with raw sockets on 127.0.0.1, in loops bounded by a count or
a deadline, and checks what the offender gets (a refusal, a closed connection), that the server
still answers a well-behaved client, and, where memory is the point, how far the server's RSS
moved (printed, and bounded generously: RSS is the kernel's figure, not an exact count).
``bench/hostile.py`` takes the same measurements at a larger scale and prints them as a table.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ServerProcess
from wire import Peer

from gearsql.protocol import REQ, RES, Packet, Parser, pack_request
from gearsql.protocol import PacketType as P

TIMEOUT = 5.0
MiB = 1024 * 1024


def rss_kib(server: ServerProcess) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")  # pragma: no cover


def settled_rss_kib(server: ServerProcess, seconds: float = 5.0) -> int:
    """RSS once the server has stopped growing (two readings 0.2 s apart within 256 KiB), or
    after ``seconds``: what it read from kernel buffers is then in its memory."""
    deadline = time.monotonic() + seconds
    last = rss_kib(server)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = rss_kib(server)
        if abs(now - last) < 256:
            return now
        last = now
    return last


@contextlib.contextmanager
def running(tmp_path: Path, *args: str) -> Iterator[ServerProcess]:
    server = ServerProcess(
        "gearsql", tmp_path / "gearsql.log", ["--store", "memory", *args]
    ).start()
    try:
        yield server
    finally:
        server.stop()


def header(type_: int, size: int) -> bytes:
    return struct.pack(">4sII", REQ, type_, size)


def assert_serving(server: ServerProcess) -> None:
    """The process is alive and a new, well-behaved connection gets its ECHO back."""
    assert server.proc is not None and server.proc.poll() is None, "the server died"
    with Peer(server.address, TIMEOUT) as fresh:
        fresh.send(P.ECHO_REQ, b"still serving?")
        assert fresh.expect(P.ECHO_RES, TIMEOUT).args == (b"still serving?",)


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (what it sent is dropped)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(1 << 16):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def wait_for_log(server: ServerProcess, pattern: str, within: float = 15.0) -> str:
    deadline = time.monotonic() + within
    while True:
        log = server.log()
        if re.search(pattern, log):
            return log
        assert time.monotonic() < deadline, f"{pattern!r} not logged:\n{log[-3000:]}"
        time.sleep(0.05)


def send_partial_packets(
    address: tuple[str, int], count: int, declared: int, sent: int, stack: contextlib.ExitStack
) -> list[socket.socket]:
    """``count`` connections, each sending ``sent`` bytes of a SUBMIT_JOB_BG that declares
    ``declared``. Non-blocking: a connection the server stopped reading stops sending once the
    kernel's buffers are full. Returns the sockets (left open)."""
    socks = []
    for _ in range(count):
        sock = stack.enter_context(socket.create_connection(address, timeout=TIMEOUT))
        sock.setblocking(False)
        socks.append(sock)
    body = b"fn\0\0" + b"x" * (sent - 4)
    pending = {sock: header(P.SUBMIT_JOB_BG, declared) + body for sock in socks}
    stalled = 0
    # Bounded: stop when everything is sent or when nothing moved for 1 s.
    while pending and stalled < 50:
        moved = False
        for sock, data in list(pending.items()):
            try:
                n = sock.send(data[: 1 << 20])
            except BlockingIOError:
                continue
            moved = True
            if n == len(data):
                del pending[sock]
            else:
                pending[sock] = data[n:]
        stalled = 0 if moved else stalled + 1
        if not moved:
            time.sleep(0.02)
    for sock in socks:
        sock.setblocking(True)
    return socks


# ----------------------------------------------------------- case 41: budget for partial packets


def test_partial_packets_share_a_global_budget_and_the_server_keeps_serving(
    tmp_path: Path,
) -> None:
    # Ten connections each send 6 MiB of a declared 8 MiB packet: 60 MiB without a budget.
    with (
        running(
            tmp_path,
            "--max-packet-size",
            str(8 * MiB),
            "--max-buffer",
            str(16 * MiB),
            "--packet-timeout",
            "0",
        ) as server,
        contextlib.ExitStack() as stack,
    ):
        before = settled_rss_kib(server)
        send_partial_packets(server.address, 10, 8 * MiB, 6 * MiB, stack)
        during = settled_rss_kib(server)
        growth = during - before
        print(
            f"\nRSS before {before} KiB, with 10 x 6 MiB partial packets {during} KiB "
            f"(+{growth} KiB; budget 16 MiB)"
        )
        wait_for_log(server, r"over --max-buffer \(16777216\)")
        # A well-behaved client is still served: its packets complete in one read.
        assert_serving(server)
        # The budget plus one read per paused connection, with room for the allocator.
        assert growth < 40 * 1024, f"RSS grew by {growth} KiB"


def test_a_paused_connection_is_read_again_once_the_budget_frees(tmp_path: Path) -> None:
    with (
        running(
            tmp_path,
            "--max-packet-size",
            str(4 * MiB),
            "--max-buffer",
            str(5 * MiB),
            "--packet-timeout",
            "0",
        ) as server,
        contextlib.ExitStack() as stack,
    ):
        (hog,) = send_partial_packets(server.address, 1, 4 * MiB, 3 * MiB, stack)
        with Peer(server.address, TIMEOUT) as late:
            body = b"late\0\0" + b"y" * (3 * MiB)
            late.sock.setblocking(False)
            data = pack_request(P.SUBMIT_JOB_BG, b"late", b"", b"y" * (3 * MiB))
            assert len(data) > len(body)
            sent = 0
            with contextlib.suppress(BlockingIOError):
                while sent < len(data):
                    sent += late.sock.send(data[sent:])
            wait_for_log(server, r"over --max-buffer")
            hog.close()  # frees the budget: the late sender is read again and gets its answer
            late.sock.setblocking(True)
            late.sock.settimeout(TIMEOUT)
            late.sock.sendall(data[sent:])
            assert late.expect(P.JOB_CREATED, 15).args[0]
        assert_serving(server)


def test_two_packets_larger_together_than_the_budget_both_get_through(tmp_path: Path) -> None:
    # Each alone fits the budget, both together do not: the one that started first is always
    # read, completes, and gives its share back to the other. No deadline to unstick them.
    with (
        running(
            tmp_path,
            "--max-packet-size",
            str(3 * MiB),
            "--max-buffer",
            str(4 * MiB),
            "--packet-timeout",
            "0",
        ) as server,
        Peer(server.address, 30) as first,
        Peer(server.address, 30) as second,
    ):
        streams = {
            peer: pack_request(P.SUBMIT_JOB_BG, name, b"", b"v" * (3 * MiB - 64))
            for peer, name in ((first, b"first"), (second, b"second"))
        }
        for peer in streams:
            peer.sock.setblocking(False)
        sent = dict.fromkeys(streams, 0)
        stalled = 0
        while any(sent[p] < len(d) for p, d in streams.items()) and stalled < 500:
            moved = False
            for peer, data in streams.items():
                if sent[peer] < len(data):
                    with contextlib.suppress(BlockingIOError):
                        sent[peer] += peer.sock.send(data[sent[peer] : sent[peer] + 256 * 1024])
                        moved = True
            stalled = 0 if moved else stalled + 1
            if not moved:
                time.sleep(0.02)
        assert all(sent[p] == len(d) for p, d in streams.items()), "the server stopped reading"
        for peer in streams:
            peer.sock.setblocking(True)
            peer.sock.settimeout(30)
            assert peer.expect(P.JOB_CREATED, 30).args[0]
        assert_serving(server)


# ----------------------------------------------------------- case 9: slowloris


def test_a_packet_sent_a_byte_at_a_time_is_dropped_at_the_packet_deadline(tmp_path: Path) -> None:
    with running(tmp_path, "--packet-timeout", "1") as server:
        with socket.create_connection(server.address, timeout=TIMEOUT) as slow:
            packet = pack_request(P.ECHO_REQ, b"x" * 1000)
            closed = False
            # A byte every 0.2 s: the packet would take 200 s; the deadline is 1 s.
            for byte in range(len(packet)):
                try:
                    slow.sendall(packet[byte : byte + 1])
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                if closed_by_server(slow, 0.2):
                    closed = True
                    break
                assert byte < 200, "still open after 200 bytes (40 s)"
            assert closed
        wait_for_log(
            server,
            r"Closing connection \d+ from 127\.0\.0\.1: a packet was not "
            r"complete within --packet-timeout \(1 s\)",
        )
        with socket.create_connection(server.address, timeout=TIMEOUT) as admin_line:
            admin_line.sendall(b"stat")  # ... and never the newline
            assert closed_by_server(admin_line, 30)
        assert_serving(server)


def test_a_pipelining_client_is_not_mistaken_for_a_slow_one(tmp_path: Path) -> None:
    with running(tmp_path, "--packet-timeout", "1") as server, Peer(server.address) as client:
        # Packets complete one after another, each write ending inside the next one, so the
        # server never holds nothing for 1.8 s; every completed packet restarts the deadline.
        packet = pack_request(P.ECHO_REQ, b"z" * 100)
        client.send_raw(packet[:50])
        for _ in range(11):
            time.sleep(0.15)
            client.send_raw(packet[50:] + packet[:50])
        client.send_raw(packet[50:])
        for _ in range(12):
            assert client.expect(P.ECHO_RES, TIMEOUT).args == (b"z" * 100,)
        assert_serving(server)


def test_idle_timeout_closes_a_connection_doing_nothing_but_not_a_worker(tmp_path: Path) -> None:
    with running(tmp_path, "--idle-timeout", "1") as server:
        with Peer(server.address) as worker, Peer(server.address) as idle:
            worker.send(P.CAN_DO, b"f")
            assert closed_by_server(idle.sock, 30)
            wait_for_log(server, r"idle for --idle-timeout \(1 s\)")
            worker.send(P.ECHO_REQ, b"worker")
            assert worker.expect(P.ECHO_RES, TIMEOUT).args == (b"worker",)


# ----------------------------------------------------------- case 42: function names


def admin_lines(server: ServerProcess, command: str) -> list[bytes]:
    with Peer(server.address, TIMEOUT) as admin:
        reply = admin.admin(command)
    assert reply.endswith(b".\n"), reply
    return reply.splitlines()[:-1]


@pytest.mark.slow
def test_function_names_are_forgotten_when_unused_and_capped(tmp_path: Path) -> None:
    count = 20_000
    with running(tmp_path, "--max-functions", str(count)) as server:
        before = settled_rss_kib(server)
        for round_ in range(2):
            with Peer(server.address, 30) as worker:
                worker.send_raw(
                    b"".join(pack_request(P.CAN_DO, b"fn-%d" % n) for n in range(count))
                )
                worker.send(P.ECHO_REQ, b"done")
                assert worker.expect(P.ECHO_RES, 30).args == (b"done",)
                assert len(admin_lines(server, "status")) == count
                registered = settled_rss_kib(server)
            deadline = time.monotonic() + 15
            while admin_lines(server, "status"):
                assert time.monotonic() < deadline, "functions still listed after the worker left"
                time.sleep(0.05)
            after = settled_rss_kib(server)
            print(
                f"\nround {round_}: {count} functions: RSS {before} -> {registered} KiB "
                f"registered -> {after} KiB after the worker left"
            )
        # One more than the cap is refused with an ERROR and a log line.
        with Peer(server.address, 30) as worker, Peer(server.address, 30) as client:
            worker.send_raw(
                b"".join(pack_request(P.CAN_DO, b"fn-%d" % n) for n in range(count + 1))
            )
            refusal = worker.expect(P.ERROR, 30)
            assert refusal.args == (b"TOO_MANY_FUNCTIONS", b"Too many functions (limit %d)" % count)
            client.send(P.SUBMIT_JOB_BG, b"another", b"", b"x")
            assert client.expect(P.ERROR, 30).args == refusal.args
            client.send(P.SUBMIT_JOB_BG, b"fn-1", b"", b"x")  # a known function still works
            client.expect(P.JOB_CREATED, 30)
        wait_for_log(server, r"the limit of 20000 functions is reached")
        assert_serving(server)


# ----------------------------------------------------------- case 43: abandoned foreground jobs


def test_abandoned_foreground_jobs_are_freed_when_their_clients_leave(tmp_path: Path) -> None:
    with running(tmp_path) as server:
        before = settled_rss_kib(server)
        for _ in range(10):
            with Peer(server.address, 30) as client:
                client.send_raw(
                    b"".join(
                        pack_request(P.SUBMIT_JOB, b"nobody-works-on-this", b"", b"p" * 1000)
                        for _ in range(2000)
                    )
                )
                for _ in range(2000):
                    client.expect(P.JOB_CREATED, 30)
        peak = rss_kib(server)
        deadline = time.monotonic() + 15
        while admin_lines(server, "show jobs") or admin_lines(server, "status"):
            assert time.monotonic() < deadline, "abandoned jobs still listed"
            time.sleep(0.05)
        after = settled_rss_kib(server)
        print(
            f"\n20000 abandoned foreground jobs of 1000 bytes: RSS {before} KiB before, "
            f"{peak} KiB at the end, {after} KiB once freed"
        )
        assert_serving(server)


# ----------------------------------------------------------- case 44: over-size packets


def test_an_over_size_packet_gets_an_error_naming_the_limit_not_a_reset(tmp_path: Path) -> None:
    limit = 65536
    with running(tmp_path, "--max-packet-size", str(limit)) as server:
        for size in (limit + 1, 8 * MiB):
            with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
                body = b"big\0\0" + b"x" * (size - 5)
                # The whole packet goes out: the server reads and drops what it refused...
                sock.sendall(header(P.SUBMIT_JOB, size) + body)
                # ... so the ERROR arrives, then an orderly end of stream, not a reset.
                received = b""
                while chunk := sock.recv(1 << 16):
                    received += chunk
            assert Parser(expect_magic=RES).feed(received) == [
                Packet(
                    P.ERROR,
                    (b"ARGUMENT_TOO_LARGE", b"packet too large (limit %d bytes)" % limit),
                    False,
                )
            ]
        assert_serving(server)


# ----------------------------------------------------------- case 45: a client that never reads


def test_a_client_that_never_reads_its_echoes_cannot_grow_the_server(tmp_path: Path) -> None:
    with running(tmp_path) as server, contextlib.ExitStack() as stack:
        before = settled_rss_kib(server)
        sock = stack.enter_context(socket.create_connection(server.address, timeout=TIMEOUT))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        echo = pack_request(P.ECHO_REQ, b"e" * MiB)
        sent = 0
        stalled = 0
        # Up to 512 MiB of requests whose answers it never reads; the server stops reading
        # them once its output to this client is backed up.
        while sent < 512 * MiB and stalled < 50:
            try:
                # Whole packets, one after another, however much each send takes.
                sent += sock.send(echo[sent % len(echo) :])
                stalled = 0
            except BlockingIOError:
                stalled += 1
                time.sleep(0.02)
        during = settled_rss_kib(server)
        print(
            f"\nnever-reading client sent {sent // MiB} MiB of ECHO_REQ: RSS {before} -> "
            f"{during} KiB"
        )
        assert sent < 512 * MiB, "the server read everything: nothing pushed back"
        assert during - before < 64 * 1024
        assert_serving(server)


def test_a_client_that_never_reads_forwarded_work_data_is_closed_at_max_output(
    tmp_path: Path,
) -> None:
    with (
        running(tmp_path, "--max-packet-size", str(MiB), "--max-output", str(4 * MiB)) as server,
        Peer(server.address) as worker,
        Peer(server.address) as client,
    ):
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.send(P.SUBMIT_JOB, b"chatty", b"", b"")
        handle = client.expect(P.JOB_CREATED).args[0]
        worker.send(P.CAN_DO, b"chatty")
        worker.send(P.GRAB_JOB)
        assert worker.expect(P.JOB_ASSIGN).args[0] == handle
        chunk = b"d" * (512 * 1024)
        for sent in range(400):  # at most 200 MiB, far past the limit
            worker.send(P.WORK_DATA, handle, chunk)
            if sent % 8 == 7 and re.search(r"--max-output \(4194304 bytes\)", server.log()):
                break
        wait_for_log(server, r"it left more than --max-output \(4194304 bytes\) unread")
        worker.send(P.WORK_COMPLETE, handle, b"done")
        worker.send(P.ECHO_REQ, b"worker")
        assert worker.expect(P.ECHO_RES).args == (b"worker",)
        assert_serving(server)


# ----------------------------------------------------------- case 46: no unhandled exception


@pytest.mark.parametrize("kind", [P.GET_STATUS, P.GET_STATUS_UNIQUE])
def test_get_status_with_a_nul_byte_is_answered_and_the_connection_stays(
    gearsql_server: ServerProcess, kind: P
) -> None:
    with Peer(gearsql_server.address) as client:
        for _ in range(50):
            client.send(kind, b"H:x:1\0junk")
            reply = client.recv(TIMEOUT)
            assert reply.args[:2] == (b"H:x:1", b"0")
        client.send(P.ECHO_REQ, b"after")
        assert client.expect(P.ECHO_RES).args == (b"after",)
    log = gearsql_server.log()
    assert "Traceback" not in log and "Error" not in log, log[-3000:]


def test_a_flood_of_bad_connections_writes_a_bounded_number_of_log_lines(
    gearsql_server: ServerProcess,
) -> None:
    for _ in range(300):
        with socket.create_connection(gearsql_server.address, timeout=TIMEOUT) as bad:
            bad.sendall(b"\0XYZ" + b"\0" * 8)
            assert closed_by_server(bad, TIMEOUT)
    # The next one allowed through says how many were held back.
    for _ in range(50):
        if "similar messages suppressed" in gearsql_server.log():
            break
        time.sleep(0.2)
        with socket.create_connection(gearsql_server.address, timeout=TIMEOUT) as bad:
            bad.sendall(b"\0XYZ" + b"\0" * 8)
            assert closed_by_server(bad, TIMEOUT)
    assert_serving(gearsql_server)
    log = gearsql_server.log()
    warnings = len(re.findall(r"WARNING Closing connection \d+ from [^:]+: bad magic", log))
    accepted = log.count("Accepted connection")
    print(f"\n300+ bad connections: {warnings} warning lines, {accepted} 'Accepted' lines")
    # A burst of 5, then one a second: under 100 unless the loop above took 95 s.
    assert 1 <= warnings < 100
    assert "similar messages suppressed" in log
