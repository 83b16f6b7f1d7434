"""Bad input over real TCP against a real ``gearsql server`` (docs/reliability.md cases 1-8, 11-13).

Every case checks what the offending connection gets (the exact ERROR packet where the protocol
has one, or a closed connection) and then, with :func:`assert_still_serving`, that the server
still answers ECHO on a new connection and that a worker which grabbed a job *before* the bad
input can still complete it for its waiting client. Cases whose behaviour C gearmand shares run
against both servers through ``any_server``.
"""

from __future__ import annotations

import re
import struct
import time
from pathlib import Path

import pytest
from conftest import ServerProcess
from wire import Peer

from gearsql import __version__
from gearsql.protocol import REQ, RES, Packet, Parser, pack
from gearsql.protocol import PacketType as P

#: Socket timeout for every read: a hang fails the test instead of blocking the suite.
TIMEOUT = 3.0
HELD_FUNCTION = b"held-fn"


def header(type_: int, size: int, magic: bytes = REQ) -> bytes:
    return struct.pack(">4sII", magic, type_, size)


def error(code: bytes, text: bytes) -> Packet:
    return Packet(P.ERROR, (code, text), False)


def read_until_closed(peer: Peer, timeout: float = TIMEOUT) -> bytes:
    """Everything the server sends until it closes the connection.

    AssertionError when the connection is still open after ``timeout``: a server that waits for
    more bytes from a broken peer fails here instead of hanging the suite.
    """
    received = b""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"connection still open after {timeout} s; got {received!r}")
        peer.sock.settimeout(remaining)
        try:
            data = peer.sock.recv(1 << 16)
        except TimeoutError as exc:
            raise AssertionError(
                f"connection still open after {timeout} s; got {received!r}"
            ) from exc
        except ConnectionResetError:
            return received
        if not data:
            return received
        received += data


def packets(data: bytes) -> list[Packet]:
    """The server's binary replies in ``data``, parsed as a client would parse them."""
    events = Parser(expect_magic=RES).feed(data)
    assert all(isinstance(event, Packet) for event in events), events
    return events  # type: ignore[return-value]


def send_ignoring_reset(peer: Peer, data: bytes) -> None:
    """Send ``data``; the server may already have closed, which is what some tests expect."""
    try:
        peer.sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


class HeldJob:
    """A foreground job grabbed by a worker before the bad input, with its client waiting.

    The bad input must not disturb either of them: :meth:`assert_undisturbed` has the worker
    complete the job and checks that the result is the first thing its client receives.
    """

    def __init__(self, server: ServerProcess, function: bytes = HELD_FUNCTION):
        self.function = function
        self.worker = Peer(server.address, TIMEOUT)
        self.client = Peer(server.address, TIMEOUT)
        self.worker.send(P.CAN_DO, function)
        self.client.send(P.SUBMIT_JOB, function, b"", b"held payload")
        self.handle = self.client.expect(P.JOB_CREATED, TIMEOUT).args[0]
        self.worker.send(P.GRAB_JOB)
        assign = self.worker.expect(P.JOB_ASSIGN, TIMEOUT)
        assert assign.args == (self.handle, function, b"held payload")

    def assert_undisturbed(self) -> None:
        self.worker.send(P.WORK_COMPLETE, self.handle, b"held result")
        reply = self.client.recv(TIMEOUT)
        assert reply == Packet(P.WORK_COMPLETE, (self.handle, b"held result"), False)

    def close(self) -> None:
        self.worker.close()
        self.client.close()

    def __enter__(self) -> HeldJob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def assert_still_serving(server: ServerProcess, held: HeldJob) -> None:
    """The server process is alive, answers ECHO on a new connection, and ``held`` completes."""
    assert server.proc is not None and server.proc.poll() is None, "the server process died"
    with Peer(server.address, TIMEOUT) as fresh:
        fresh.send(P.ECHO_REQ, b"still there?")
        assert fresh.expect(P.ECHO_RES, TIMEOUT).args == (b"still there?",)
    held.assert_undisturbed()


def assert_warning_logged(server: ServerProcess, reason: str) -> None:
    """The server logged a warning for closing a connection because of ``reason``."""
    pattern = rf"WARNING Closing connection \d+ from 127\.0\.0\.1: {re.escape(reason)}"
    assert re.search(pattern, server.log()), server.log()


def admin_status(peer: Peer) -> dict[bytes, tuple[int, ...]]:
    """``status`` parsed: function name (escaped) -> (total, running, workers)."""
    reply = peer.admin("status")
    assert reply.endswith(b".\n"), reply
    rows = {}
    for line in reply.splitlines()[:-1]:
        name, *counts = line.split(b"\t")
        rows[name] = tuple(int(count) for count in counts)
    return rows


def admin_job_handles(peer: Peer) -> set[bytes]:
    reply = peer.admin("show jobs")
    assert reply.endswith(b".\n"), reply
    return {line.split(b"\t")[0] for line in reply.splitlines()[:-1]}


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")  # pragma: no cover


# --------------------------------------------------------------------------- 1. bad magic


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(
            b"\0XYZ" + struct.pack(">II", P.ECHO_REQ, 4) + b"ping", "bad magic", id="nul-xyz"
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "HTTP request on the Gearman port",
            id="http-get",
        ),
    ],
)
def test_bad_magic_closes_only_that_connection_with_a_warning(
    gearsql_server: ServerProcess, data: bytes, reason: str
) -> None:
    with HeldJob(gearsql_server) as held:
        with Peer(gearsql_server.address, TIMEOUT) as bad:
            bad.send_raw(data)
            assert read_until_closed(bad) == b""
        assert_warning_logged(gearsql_server, reason)
        assert_still_serving(gearsql_server, held)


# --------------------------------------------------------------------------- 2. wrong direction


def test_response_magic_on_a_request_gets_error_and_keeps_the_connection(
    any_server: ServerProcess,
) -> None:
    with HeldJob(any_server) as held, Peer(any_server.address, TIMEOUT) as peer:
        peer.send_raw(pack(P.ECHO_REQ, [b"wrong magic"], RES))
        assert peer.recv(TIMEOUT) == error(b"INVALID_MAGIC", b"Request magic expected")
        peer.send(P.ECHO_REQ, b"same connection")
        assert peer.expect(P.ECHO_RES, TIMEOUT).args == (b"same connection",)
        assert_still_serving(any_server, held)


def test_worker_sending_job_assign_gets_command_not_expected_and_keeps_the_connection(
    any_server: ServerProcess,
) -> None:
    with HeldJob(any_server) as held, Peer(any_server.address, TIMEOUT) as worker:
        worker.send(P.CAN_DO, HELD_FUNCTION)
        worker.send(P.JOB_ASSIGN, held.handle, HELD_FUNCTION, b"stolen")
        assert worker.recv(TIMEOUT) == error(b"INVALID_COMMAND", b"Command not expected")
        worker.send(P.ECHO_REQ, b"same connection")
        assert worker.expect(P.ECHO_RES, TIMEOUT).args == (b"same connection",)
        assert_still_serving(any_server, held)


# --------------------------------------------------------------------------- 3. unknown type


@pytest.mark.parametrize("type_", [0, 43, 9999, 0xFFFFFFFF])
def test_unknown_packet_type_closes_the_connection(
    gearsql_server: ServerProcess, type_: int
) -> None:
    # Not run against C gearmand: 1.1.20 crashes on type 0xFFFFFFFF (it indexes a table with it).
    with HeldJob(gearsql_server) as held:
        with Peer(gearsql_server.address, TIMEOUT) as bad:
            bad.send_raw(header(type_, 4) + b"data")
            assert read_until_closed(bad) == b""
        assert_warning_logged(gearsql_server, f"unknown packet type {type_}")
        assert_still_serving(gearsql_server, held)


# --------------------------------------------------------------------------- 4. huge length


def test_length_0xffffffff_is_refused_on_the_header_without_buffering(
    gearsql_server: ServerProcess,
) -> None:
    assert gearsql_server.proc is not None
    pid = gearsql_server.proc.pid
    with HeldJob(gearsql_server) as held:
        before = vm_rss_kib(pid)
        for _ in range(5):
            with Peer(gearsql_server.address, TIMEOUT) as bad:
                bad.send_raw(header(P.SUBMIT_JOB, 0xFFFFFFFF))  # ... then silence
                replies = packets(read_until_closed(bad))
                assert replies == [
                    error(b"ARGUMENT_TOO_LARGE", b"packet too large (limit 67108864 bytes)")
                ]
        growth = vm_rss_kib(pid) - before
        assert growth < 1024, f"RSS grew by {growth} KiB"
        assert_still_serving(gearsql_server, held)


# --------------------------------------------------------------------------- 5. max + 1


def test_packet_one_byte_over_max_packet_size_gets_error_then_close(tmp_path: Path) -> None:
    limit = 65536
    server = ServerProcess(
        "gearsql",
        tmp_path / "gearsql.log",
        ["--store", "memory", "--max-packet-size", str(limit)],
    ).start()
    try:
        with HeldJob(server) as held:
            prefix = b"big-fn\0\0"
            with Peer(server.address, TIMEOUT) as peer:
                # Exactly the maximum is still accepted...
                peer.send(P.SUBMIT_JOB_BG, b"big-fn", b"", b"x" * (limit - len(prefix)))
                peer.expect(P.JOB_CREATED, TIMEOUT)
                # ... one byte more is refused with an error, not a hang.
                body = prefix + b"x" * (limit + 1 - len(prefix))
                send_ignoring_reset(peer, header(P.SUBMIT_JOB, len(body)) + body)
                replies = packets(read_until_closed(peer))
            assert replies == [
                error(b"ARGUMENT_TOO_LARGE", b"packet too large (limit %d bytes)" % limit)
            ]
            assert_still_serving(server, held)
    finally:
        server.stop()


# --------------------------------------------------------------------------- 6. truncated


def test_truncated_packet_then_disconnect_creates_no_job(gearsql_server: ServerProcess) -> None:
    with HeldJob(gearsql_server) as held:
        closed_before = gearsql_server.log().count(" closed")
        with Peer(gearsql_server.address, TIMEOUT) as bad:
            body = b"trunc-fn\0unique-1\0" + b"p" * 82
            assert len(body) == 100
            bad.send_raw(header(P.SUBMIT_JOB_BG, 100) + body[:40])
        # Wait until the server has seen the disconnect, so that the checks below mean something.
        deadline = time.monotonic() + TIMEOUT
        while gearsql_server.log().count(" closed") == closed_before:
            assert time.monotonic() < deadline, "the server did not notice the disconnect"
            time.sleep(0.02)
        with Peer(gearsql_server.address, TIMEOUT) as admin:
            assert b"trunc-fn" not in admin_status(admin)
            assert admin_job_handles(admin) == {held.handle}
        assert_still_serving(gearsql_server, held)


# --------------------------------------------------------------------------- 7. missing NULs


@pytest.mark.parametrize("body", [b"no separators at all", b"fn\0two-arguments"])
def test_submit_job_without_nul_separators_gets_error_and_close_promptly(
    gearsql_server: ServerProcess, body: bytes
) -> None:
    with HeldJob(gearsql_server) as held:
        with Peer(gearsql_server.address, TIMEOUT) as bad:
            bad.send_raw(header(P.SUBMIT_JOB, len(body)) + body)
            # Closed by the server on its own: well before the 30 s packet deadline would
            # close a connection that waits for more bytes (no bound tighter than that, so a
            # busy machine cannot fail it).
            replies = packets(read_until_closed(bad, timeout=15.0))
        assert replies == [error(b"INVALID_PACKET", b"SUBMIT_JOB needs 3 arguments")]
        assert_warning_logged(gearsql_server, "SUBMIT_JOB needs 3 arguments")
        with Peer(gearsql_server.address, TIMEOUT) as admin:
            assert admin_job_handles(admin) == {held.handle}
        assert_still_serving(gearsql_server, held)


# --------------------------------------------------------------------------- 8. size limits


def test_unique_of_65_bytes_is_too_large_and_creates_no_job(any_server: ServerProcess) -> None:
    with HeldJob(any_server) as held, Peer(any_server.address, TIMEOUT) as client:
        client.send(P.SUBMIT_JOB_BG, b"unique-fn", b"u" * 65, b"data")
        assert client.recv(TIMEOUT) == error(b"ARGUMENT_TOO_LARGE", b"Unique value too large")
        assert admin_status(client).get(b"unique-fn", (0,))[0] == 0
        assert admin_job_handles(client) == {held.handle}
        # The connection stays usable: 64 bytes is the limit, and is accepted.
        client.send(P.SUBMIT_JOB_BG, b"unique-fn", b"u" * 64, b"data")
        client.expect(P.JOB_CREATED, TIMEOUT)
        assert_still_serving(any_server, held)


def test_function_name_over_512_bytes_is_too_large_and_creates_no_job(
    gearsql_server: ServerProcess,
) -> None:
    # C gearmand 1.1.20 accepts any length here, so this one is gearsql's own limit.
    long_name = b"f" * 513
    with HeldJob(gearsql_server) as held, Peer(gearsql_server.address, TIMEOUT) as peer:
        peer.send(P.SUBMIT_JOB_BG, long_name, b"", b"data")
        assert peer.recv(TIMEOUT) == error(b"ARGUMENT_TOO_LARGE", b"Function name too large")
        peer.send(P.CAN_DO, long_name)
        assert peer.recv(TIMEOUT) == error(b"ARGUMENT_TOO_LARGE", b"Function name too large")
        status = admin_status(peer)
        assert long_name not in status
        assert admin_job_handles(peer) == {held.handle}
        peer.send(P.ECHO_REQ, b"same connection")
        assert peer.expect(P.ECHO_RES, TIMEOUT).args == (b"same connection",)
        assert_still_serving(gearsql_server, held)


# --------------------------------------------------------------------------- 11. admin abuse


def test_unknown_admin_command_and_shutdown_are_refused_and_the_connection_stays(
    any_server: ServerProcess,
) -> None:
    with HeldJob(any_server) as held, Peer(any_server.address, TIMEOUT) as admin:
        reply = admin.admin("bogus", list_reply=False)
        assert reply == b"ERR UNKNOWN_COMMAND Unknown+server+commandbogus\r\n"
        for line in ("shutdown", "shutdown graceful"):
            reply = admin.admin(line, list_reply=False)
            assert reply == b"ERR UNKNOWN_COMMAND Unknown+server+commandshutdown\r\n"
        assert admin.admin("version", list_reply=False).startswith(b"OK ")
        time.sleep(0.2)  # a server that did obey shutdown would be gone by now
        assert_still_serving(any_server, held)


def test_two_admin_commands_in_one_write_get_two_replies_in_order(
    gearsql_server: ServerProcess,
) -> None:
    assert gearsql_server.proc is not None
    expected = (
        b"OK %d\n" % gearsql_server.proc.pid
        + b"OK %s\n" % __version__.encode()
        + HELD_FUNCTION
        + b"\t1\t1\t1\n.\n"
    )
    with HeldJob(gearsql_server) as held, Peer(gearsql_server.address, TIMEOUT) as admin:
        admin.send_raw(b"getpid\r\nversion\nstatus\r\n")
        received = b""
        while not received.endswith(b".\n"):
            data = admin.sock.recv(1 << 16)
            assert data, f"closed after {received!r}"
            received += data
        assert received == expected
        assert_still_serving(gearsql_server, held)


@pytest.mark.parametrize(
    ("line", "reply_start"),
    [
        (b"stat\0us\r\n", b"ERR UNKNOWN_COMMAND Unknown+server+commandstat\0us"),
        (b"version\0\r\n", b"ERR UNKNOWN_COMMAND"),
        (b"status \0\r\n", HELD_FUNCTION + b"\t1\t1\t1\n"),
    ],
    ids=["inside-word", "after-word", "as-argument"],
)
def test_admin_line_with_an_embedded_nul_is_answered(
    gearsql_server: ServerProcess, line: bytes, reply_start: bytes
) -> None:
    with HeldJob(gearsql_server) as held, Peer(gearsql_server.address, TIMEOUT) as admin:
        admin.send_raw(line)
        received = b""
        while not received.endswith(b"\n"):
            data = admin.sock.recv(1 << 16)
            assert data, f"closed after {received!r}"
            received += data
        assert received.startswith(reply_start), received
        assert admin.admin("version", list_reply=False).startswith(b"OK ")
        assert_still_serving(gearsql_server, held)


def test_admin_line_without_newline_is_closed_at_the_8_kib_limit(
    gearsql_server: ServerProcess,
) -> None:
    with HeldJob(gearsql_server) as held:
        with Peer(gearsql_server.address, TIMEOUT) as slow:
            slow.send_raw(b"a" * 8192)  # exactly the limit: still waiting for the newline
            assert slow.nothing_within(0.3)
            assert not slow.closed_within(0.1)
            slow.send_raw(b"a")  # one byte over
            assert read_until_closed(slow) == b""
        with Peer(gearsql_server.address, TIMEOUT) as flood:
            send_ignoring_reset(flood, b"s" * (1 << 20))
            assert read_until_closed(flood) == b""
        assert_warning_logged(gearsql_server, "admin line too long")
        assert_still_serving(gearsql_server, held)


# --------------------------------------------------------------------------- 12. odd names


@pytest.mark.parametrize(
    ("name", "escaped"),
    [(b"\xff\xfe", b"\\xff\\xfe"), (b"a b", b"a\\x20b")],
    ids=["not-utf8", "with-space"],
)
def test_odd_function_names_round_trip_exactly_and_are_escaped_by_admin(
    gearsql_server: ServerProcess, name: bytes, escaped: bytes
) -> None:
    with (
        HeldJob(gearsql_server) as held,
        Peer(gearsql_server.address, TIMEOUT) as worker,
        Peer(gearsql_server.address, TIMEOUT) as client,
        Peer(gearsql_server.address, TIMEOUT) as admin,
    ):
        worker.send(P.CAN_DO, name)
        client.send(P.SUBMIT_JOB, name, b"", b"odd payload \xff\0")
        handle = client.expect(P.JOB_CREATED, TIMEOUT).args[0]
        worker.send(P.GRAB_JOB)
        assert worker.recv(TIMEOUT) == Packet(
            P.JOB_ASSIGN, (handle, name, b"odd payload \xff\0"), False
        )
        assert admin_status(admin)[escaped] == (1, 1, 1)
        workers = admin.admin("workers")
        assert b" : " + escaped + b"\n" in workers, workers
        worker.send(P.WORK_COMPLETE, handle, b"odd result")
        assert client.recv(TIMEOUT) == Packet(P.WORK_COMPLETE, (handle, b"odd result"), False)
        assert admin_status(admin)[escaped] == (0, 0, 1)
        assert_still_serving(gearsql_server, held)


# --------------------------------------------------------------------------- 13. forgery


@pytest.mark.parametrize(
    ("type_", "rest"),
    [
        (P.WORK_COMPLETE, (b"forged result",)),
        (P.WORK_FAIL, ()),
        (P.WORK_STATUS, (b"1", b"2")),
    ],
    ids=["WORK_COMPLETE", "WORK_FAIL", "WORK_STATUS"],
)
def test_forged_work_result_for_another_workers_job_is_refused(
    any_server: ServerProcess, type_: P, rest: tuple[bytes, ...]
) -> None:
    with HeldJob(any_server) as held, Peer(any_server.address, TIMEOUT) as forger:
        # The forger even registers the same function: only the assigned worker may answer.
        forger.send(P.CAN_DO, HELD_FUNCTION)
        forger.send(type_, held.handle, *rest)
        assert forger.recv(TIMEOUT) == error(
            b"JOB_NOT_FOUND", b"Job given in work result not found"
        )
        # The job's state is unchanged: still known, running, with no progress recorded.
        forger.send(P.GET_STATUS, held.handle)
        assert forger.expect(P.STATUS_RES, TIMEOUT).args == (held.handle, b"1", b"1", b"0", b"0")
        # assert_undisturbed checks that the real result is the first thing the client sees.
        assert_still_serving(any_server, held)


@pytest.mark.parametrize("kind", [P.WORK_COMPLETE, P.WORK_FAIL, P.WORK_STATUS])
def test_job_handle_over_64_bytes_is_argument_too_large(
    gearsql_server: ServerProcess, kind: P
) -> None:
    with HeldJob(gearsql_server) as held:
        with Peer(gearsql_server.address) as forger:
            args = {P.WORK_COMPLETE: (b"r",), P.WORK_FAIL: (), P.WORK_STATUS: (b"1", b"2")}[kind]
            forger.send(kind, b"H:" + b"x" * 64, *args)
            error = forger.expect(P.ERROR)
            assert error.args == (b"ARGUMENT_TOO_LARGE", b"Job handle too large")
        assert_still_serving(gearsql_server, held)
