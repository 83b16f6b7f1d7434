"""gearmand's HTTP protocol (gearsql.http): the sans-IO request parser, then real servers, side
by side with C gearmand ``-r http``, through http.client and curl, against real workers."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ServerProcess, free_port, need_tool
from wire import Peer

from gearsql.http import MAX_HEAD, HttpError, Request, RequestParser
from gearsql.protocol import PacketType as P

# ------------------------------------------------------------------ the parser

PIPELINE = (
    b"POST /rev HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Gearman-Unique: u1\r\n\r\nhello"
    b"GET /f%20g HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
)


def _feed_all(parser: RequestParser, pieces: list[bytes]) -> list[Request | HttpError]:
    events: list[Request | HttpError] = []
    for piece in pieces:
        events += parser.feed(piece)
    return events


def test_parser_gives_the_same_requests_at_every_split_point() -> None:
    whole = _feed_all(RequestParser(1024), [PIPELINE])
    assert [type(e) for e in whole] == [Request, Request]
    first, second = whole
    assert isinstance(first, Request) and isinstance(second, Request)
    assert (first.method, first.target, first.body) == (b"POST", b"/rev", b"hello")
    assert first.headers[b"x-gearman-unique"] == b"u1" and first.keep_alive
    assert (second.method, second.version, second.body) == (b"GET", b"HTTP/1.0", b"")
    assert second.keep_alive
    for cut in range(1, len(PIPELINE)):
        assert _feed_all(RequestParser(1024), [PIPELINE[:cut], PIPELINE[cut:]]) == whole
    assert _feed_all(RequestParser(1024), [bytes([b]) for b in PIPELINE]) == whole


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"POST /f HTTP/1.1\r\nContent-Length: 2000\r\n\r\n", 413),
        (b"POST /f HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        (b"POST /f HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST /f HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /f HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"POST /f\r\n\r\n", 400),
        (b"POST /f HTTP/2.0\r\n\r\n", 505),
        (b"GET /" + b"x" * MAX_HEAD, 431),
    ],
)
def test_parser_refuses_what_it_does_not_serve(data: bytes, status: int) -> None:
    parser = RequestParser(1024)
    events = parser.feed(data)
    assert len(events) == 1 and isinstance(events[0], HttpError)
    assert events[0].status == status
    # Broken: nothing more is parsed.
    assert parser.feed(b"GET /f HTTP/1.1\r\n\r\n") == []


def test_a_refused_body_says_how_much_is_left_to_drop() -> None:
    events = RequestParser(10).feed(b"PUT /f HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789")
    assert events == [HttpError(413, "the body is larger than --max-packet-size (10 bytes)", 90)]


# ------------------------------------------------------------------ real servers


def _wait_listening(port: int, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


class HttpServer:
    def __init__(self, server: ServerProcess, http_port: int):
        self.server = server
        self.http_port = http_port

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()


def _start(kind: str, tmp_path: Path, extra: list[str]) -> HttpServer:
    port = free_port()
    # gearsql takes gearmand's spelling too.
    args = ["-r", "http", "--http-port", str(port), *extra]
    if kind == "gearmand":
        need_tool("gearmand")
    server = ServerProcess(kind, tmp_path / f"{kind}.log", args).start()
    _wait_listening(port)
    return HttpServer(server, port)


@pytest.fixture(params=["gearsql", "gearmand"])
def http_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HttpServer]:
    extra = ["--store", "memory"] if request.param == "gearsql" else []
    served = _start(request.param, tmp_path, extra)
    try:
        yield served
    finally:
        served.server.stop()


@pytest.fixture
def gearsql_http(tmp_path: Path) -> Iterator[HttpServer]:
    served = _start("gearsql", tmp_path, ["--store", "memory", "--max-packet-size", "2000"])
    try:
        yield served
    finally:
        served.server.stop()


def _workers(server: ServerProcess, *commands: tuple[str, str]) -> list[subprocess.Popen[bytes]]:
    """``gearman -w`` workers (gearman-tools) running ``command`` for ``function``."""
    gearman = need_tool("gearman")
    return [
        subprocess.Popen(
            [
                gearman,
                "-h",
                server.host,
                "-p",
                str(server.port),
                "-w",
                "-f",
                function,
                "--",
                command,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for function, command in commands
    ]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def test_answers_match_c_gearmand_where_it_defines_them(http_server: HttpServer) -> None:
    workers = _workers(http_server.server, ("rev", "rev"))
    try:
        status, headers, body = http_server.request("POST", "/rev", b"hello")
        assert (status, headers["X-Gearman-Command"], body) == (200, "WORK_COMPLETE", b"olleh")
        assert headers["X-Gearman-Job-Handle"].startswith("H:")
        assert headers["Content-Length"] == "5"

        status, headers, body = http_server.request("GET", "/rev")
        assert (status, headers["X-Gearman-Command"], body) == (200, "WORK_COMPLETE", b"")

        status, headers, body = http_server.request(
            "PUT", "/rev", b"abc", {"X-Gearman-Unique": "u1"}
        )
        assert (status, headers["X-Gearman-Command"], body) == (200, "WORK_COMPLETE", b"cba")

        status, headers, body = http_server.request(
            "POST", "/nobody", b"later", {"X-Gearman-Background": "true"}
        )
        assert (status, headers["X-Gearman-Command"], body) == (200, "JOB_CREATED", b"")
        handle = headers["X-Gearman-Job-Handle"]
        with Peer(http_server.server.address) as admin:
            assert b"nobody\t1\t0\t0\n" in admin.admin("status")
        assert handle.startswith("H:")

        status, _, _ = http_server.request("POST", "/")
        assert status == 404
    finally:
        _stop(workers)


def test_background_priority_and_unique_reach_the_worker(gearsql_http: HttpServer) -> None:
    for priority, data in (("low", b"l"), ("normal", b"n"), ("high", b"h")):
        status, headers, _ = gearsql_http.request(
            "POST",
            "/job",
            data,
            {
                "X-Gearman-Background": "true",
                "X-Gearman-Priority": priority,
                "X-Gearman-Unique": f"u-{priority}",
            },
        )
        assert (status, headers["X-Gearman-Command"]) == (200, "JOB_CREATED")
    with Peer(gearsql_http.server.address) as worker:
        worker.send(P.CAN_DO, b"job")
        taken = []
        for _ in range(3):
            worker.send(P.GRAB_JOB_UNIQ)
            assigned = worker.expect(P.JOB_ASSIGN_UNIQ)
            taken.append((assigned.args[2], assigned.args[3]))
            worker.send(P.WORK_COMPLETE, assigned.args[0], b"")
    assert taken == [(b"u-high", b"h"), (b"u-normal", b"n"), (b"u-low", b"l")]
    status, _, body = gearsql_http.request("POST", "/job", b"", {"X-Gearman-Priority": "urgent"})
    assert status == 400 and b"high, normal or low" in body


def test_work_fail_and_exception_are_500_with_the_reason(gearsql_http: HttpServer) -> None:
    workers = _workers(gearsql_http.server, ("fail", "false"))
    try:
        status, headers, _ = gearsql_http.request("POST", "/fail", b"x")
        assert (status, headers["X-Gearman-Command"]) == (500, "WORK_FAIL")
    finally:
        _stop(workers)
    with Peer(gearsql_http.server.address) as worker:
        worker.send(P.CAN_DO, b"boom")
        worker.send(P.PRE_SLEEP)
        conn = http.client.HTTPConnection("127.0.0.1", gearsql_http.http_port, timeout=10)
        try:
            conn.request("POST", "/boom", body=b"x")
            worker.expect(P.NOOP)
            worker.send(P.GRAB_JOB)
            handle = worker.expect(P.JOB_ASSIGN).args[0]
            worker.send(P.WORK_EXCEPTION, handle, b"ValueError: bad input")
            response = conn.getresponse()
            assert response.status == 500
            assert response.getheader("X-Gearman-Command") == "WORK_EXCEPTION"
            assert response.read() == b"ValueError: bad input"
        finally:
            conn.close()


def test_timeout_answers_504_and_the_job_never_runs(gearsql_http: HttpServer) -> None:
    status, headers, _ = gearsql_http.request("POST", "/idle", b"x", {"X-Gearman-Timeout": "0.2"})
    assert (status, headers["X-Gearman-Command"]) == (504, "TIMEOUT")
    assert headers["Connection"] == "close"
    with Peer(gearsql_http.server.address) as admin:
        deadline = time.monotonic() + 10
        while admin.admin("status").startswith(b"idle\t1"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    status, _, body = gearsql_http.request("POST", "/idle", b"x", {"X-Gearman-Timeout": "soon"})
    assert status == 400 and b"positive number" in body


def test_a_body_over_max_packet_size_is_413_and_read_to_the_end(gearsql_http: HttpServer) -> None:
    status, _, body = gearsql_http.request("POST", "/f", b"x" * 5000)
    assert status == 413 and b"--max-packet-size (2000 bytes)" in body
    status, _, _ = gearsql_http.request("DELETE", "/f")
    assert status == 405


def test_curl_reuses_one_kept_alive_connection(gearsql_http: HttpServer) -> None:
    curl = need_tool("curl")
    workers = _workers(gearsql_http.server, ("rev", "rev"))
    try:
        url = f"http://127.0.0.1:{gearsql_http.http_port}/rev"
        done = subprocess.run(
            [curl, "-sv", "--max-time", "20", "--data", "abc", url, "--next", "--data", "xyz", url],
            capture_output=True,
            timeout=30,
        )
    finally:
        _stop(workers)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"cbazyx"
    assert b"Re-using existing connection" in done.stderr
    assert done.stderr.count(b"X-Gearman-Command: WORK_COMPLETE") == 2


def test_the_http_port_keeps_the_loopback_rule() -> None:
    args = [
        sys.executable,
        "-m",
        "gearsql",
        "server",
        "--port",
        str(free_port()),
        "--http-port",
        str(free_port()),
        "--listen",
        "0.0.0.0",
        "--store",
        "memory",
        "--log-file",
        "stderr",
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=20)
    assert result.returncode != 0
    assert "--allow-insecure-remote" in result.stderr


def test_a_request_not_complete_within_packet_timeout_is_408(tmp_path: Path) -> None:
    served = _start("gearsql", tmp_path, ["--store", "memory", "--packet-timeout", "0.3"])
    try:
        with socket.create_connection(("127.0.0.1", served.http_port), timeout=10) as sock:
            sock.sendall(b"POST /f HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"--packet-timeout (0.3 s)" in answer
        # A kept-alive connection with nothing under way is not a slow request.
        conn = http.client.HTTPConnection("127.0.0.1", served.http_port, timeout=10)
        try:
            conn.request("POST", "/f", body=b"x", headers={"X-Gearman-Background": "true"})
            assert conn.getresponse().read() == b""
            with Peer(served.server.address) as admin:
                deadline = time.monotonic() + 0.6
                while time.monotonic() < deadline:  # longer than the packet timeout
                    assert b"f\t1\t0\t0\n" in admin.admin("status")
                    time.sleep(0.1)
            conn.request("POST", "/f", body=b"y", headers={"X-Gearman-Background": "true"})
            response = conn.getresponse()
            assert response.status == 200 and response.read() == b""
        finally:
            conn.close()
    finally:
        served.server.stop()


def _raw_answer(port: int, request: bytes, worker: Peer, chunks: list[bytes]) -> bytes:
    """Send ``request``; the worker sends ``chunks`` as WORK_DATA, then WORK_COMPLETE
    ``final``; everything read until the server closes (``Connection: close``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        worker.send(P.GRAB_JOB)
        deadline = time.monotonic() + 30
        while True:
            packet = worker.recv(30)
            if packet.type == P.JOB_ASSIGN:
                break
            assert packet.type == P.NO_JOB and time.monotonic() < deadline
            time.sleep(0.02)
            worker.send(P.GRAB_JOB)
        handle = packet.args[0]
        for chunk in chunks:
            worker.send(P.WORK_DATA, handle, chunk)
        worker.send(P.WORK_COMPLETE, handle, b"final")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_work_data_comes_before_the_result_in_the_body(http_server: HttpServer) -> None:
    """C gearmand 1.1 writes WORK_DATA over the start of its answer (no status line, and NUL
    bytes before the result); gearsql answers 200 with the chunks, then the WORK_COMPLETE data."""
    with Peer(http_server.server.address) as worker:
        worker.send(P.CAN_DO, b"chunky")
        request = b"POST /chunky HTTP/1.0\r\nContent-Length: 2\r\n\r\nin"
        answer = _raw_answer(http_server.http_port, request, worker, [b"part1-", b"part2-"])
    assert answer.endswith(b"final")
    if http_server.server.kind == "gearmand":
        assert not answer.startswith(b"HTTP/"), answer  # gearmand's garbled answer
        return
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"X-Gearman-Command: WORK_COMPLETE" in head
    assert body == b"part1-part2-final"


def test_work_data_past_max_output_ends_the_request(tmp_path: Path) -> None:
    served = _start(
        "gearsql",
        tmp_path,
        ["--store", "memory", "--max-packet-size", "1024", "--max-output", "4096"],
    )
    try:
        with Peer(served.server.address) as worker:
            worker.send(P.CAN_DO, b"chatty")
            request = b"POST /chatty HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
            answer = _raw_answer(served.http_port, request, worker, [b"x" * 1000] * 5)
        assert answer.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
        assert b"--max-output (4096 bytes)" in answer
    finally:
        served.server.stop()
