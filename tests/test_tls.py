"""TLS and the ACL against a real ``gearsql server --ssl`` process, with certificates the openssl
command made for the session (tests/pki.py): gearsql's client, worker, admin client and CLI,
PyPI's gear, and plaintext peers that must be refused."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerProcess, free_port, need_module
from pki import Pki

from gearsql import Client, Worker
from gearsql.adminclient import AdminClient
from gearsql.errors import AdminError, GearmanError, ServerError
from gearsql.protocol import PacketType, pack_request

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 15.0

ACL = """
# who may do what
[app-*]
submit = reverse, report.*

[worker-1]
work = reverse, report.*

[admin-1]
admin = yes
"""


def wait_until(condition: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def tls_server(
    tmp_path: Path, pki: Pki, *extra: str, verify_client: bool = True
) -> Iterator[ServerProcess]:
    server = ServerProcess(
        "gearsql",
        tmp_path / "server.log",
        ["--store", "memory", *pki.server_args(verify_client), *extra],
    ).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running_worker(
    server: ServerProcess, pki: Pki, name: str = "worker-1", also: tuple[str, ...] = ()
) -> Iterator[Worker]:
    worker = Worker([server.address], **pki.client_kwargs(name))
    for function in also:
        worker.register(function, lambda job: b"never")
    worker.register("reverse", lambda job: job.data[::-1])
    worker.register("report.daily", lambda job: b"report " + job.data)
    thread = threading.Thread(target=worker.run_forever, kwargs={"handle_signals": False})
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(TIMEOUT)


def tls_socket(server: ServerProcess, pki: Pki, name: str | None) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=pki.ca)
    if name is not None:
        context.load_cert_chain(pki.cert(name), pki.key(name))
    raw = socket.create_connection(server.address, timeout=TIMEOUT)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def read_packet(sock: socket.socket) -> tuple[int, list[bytes]]:
    header = b""
    while len(header) < 12:
        chunk = sock.recv(12 - len(header))
        assert chunk, "the server closed the connection"
        header += chunk
    _magic, type_, size = struct.unpack(">4sII", header)
    body = b""
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        assert chunk
        body += chunk
    return type_, body.split(b"\0")


# --- TLS --------------------------------------------------------------------------------------


def test_client_and_worker_round_trip_over_mutual_tls(tmp_path: Path, pki: Pki) -> None:
    with tls_server(tmp_path, pki) as server, running_worker(server, pki):
        with Client([server.address], **pki.client_kwargs("app-1")) as client:
            assert client.submit("reverse", b"stressed", timeout=TIMEOUT) == b"desserts"
        wait_until(lambda: "(app-1, app-1.example)" in server.log(), "the identity in the log")


def test_many_tls_clients_at_once(tmp_path: Path, pki: Pki) -> None:
    """Handshakes that overlap, and requests sent right after them, all get through (the first
    bytes after a handshake are not lost)."""
    import asyncio

    from gearsql import AsyncClient

    async def one(server: ServerProcess, index: int) -> None:
        async with AsyncClient([server.address], **pki.client_kwargs("app-1")) as client:
            for k in range(5):
                data = b"%d-%d" % (index, k)
                assert await client.submit("reverse", data, timeout=TIMEOUT) == data[::-1]

    async def all_of_them(server: ServerProcess) -> None:
        await asyncio.gather(*(one(server, index) for index in range(30)))

    with tls_server(tmp_path, pki) as server, running_worker(server, pki):
        asyncio.run(all_of_them(server))


def test_environment_variables_turn_tls_on(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEARSQL_SSL_CA_FILE", pki.ca)
    monkeypatch.setenv("GEARSQL_SSL_CERTIFICATE", pki.cert("app-1"))
    monkeypatch.setenv("GEARSQL_SSL_KEY", pki.key("app-1"))
    with tls_server(tmp_path, pki) as server, running_worker(server, pki):
        with Client([server.address]) as client:
            assert client.submit("reverse", b"abc", timeout=TIMEOUT) == b"cba"
        with AdminClient(*server.address) as admin:
            assert any(f.name == b"reverse" for f in admin.status())
        # ssl=False is plaintext whatever the environment says: refused.
        with Client([server.address], ssl=False, connect_timeout=5) as client:
            with pytest.raises(GearmanError):
                client.submit("reverse", b"abc", timeout=TIMEOUT)


def test_plaintext_on_a_tls_port_is_refused_and_logged(tmp_path: Path, pki: Pki) -> None:
    with tls_server(tmp_path, pki) as server:
        with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
            sock.sendall(pack_request(PacketType.ECHO_REQ, b"hello"))
            try:
                answer = sock.recv(100)
            except ConnectionResetError:
                answer = b""
            assert answer == b"" or not answer.startswith(b"\0RES")
        with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
            sock.sendall(b"status\n")
            try:
                answer = sock.recv(100)
            except ConnectionResetError:
                answer = b""
            assert b"\t" not in answer
        wait_until(lambda: "TLS handshake failed" in server.log(), "the refusal in the log")


def test_a_client_without_a_certificate_is_refused_when_verification_is_required(
    tmp_path: Path, pki: Pki
) -> None:
    with tls_server(tmp_path, pki) as server, running_worker(server, pki):
        for kwargs in (
            pki.client_kwargs(None),  # no certificate
            {
                "ssl_ca_file": pki.ca,
                "ssl_certificate": pki.cert("rogue"),
                "ssl_key": pki.key("rogue"),
            },
        ):
            with Client([server.address], connect_timeout=5, **kwargs) as client:
                with pytest.raises(GearmanError):
                    client.submit("reverse", b"abc", timeout=TIMEOUT)
        wait_until(lambda: "TLS handshake failed" in server.log(), "the refusal in the log")


def test_the_server_answers_close_notify(tmp_path: Path, pki: Pki) -> None:
    """A client's TLS close is answered with the server's, so the client's close completes at
    once instead of waiting for its shutdown timeout."""
    with tls_server(tmp_path, pki) as server:
        with tls_socket(server, pki, "app-1") as sock:
            sock.sendall(pack_request(PacketType.ECHO_REQ, b"ping"))
            assert read_packet(sock) == (PacketType.ECHO_RES, [b"ping"])
            plain = sock.unwrap()  # sends close_notify, returns once the server's arrived
            assert plain.recv(1) == b""  # then the server closed the connection
            plain.close()


def test_a_client_checks_the_server_certificate(tmp_path: Path, pki: Pki) -> None:
    with tls_server(tmp_path, pki) as server:
        # The system's CAs did not sign the test server's certificate.
        with Client([server.address], ssl=True, connect_timeout=5) as client:
            with pytest.raises(GearmanError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify"):
                client.submit_background("reverse", b"abc", timeout=TIMEOUT)


def test_without_verification_a_client_needs_no_certificate(tmp_path: Path, pki: Pki) -> None:
    with tls_server(tmp_path, pki, verify_client=False) as server:
        with running_worker(server, pki, name="worker-1"):
            with Client([server.address], ssl_ca_file=pki.ca) as client:
                assert client.submit("reverse", b"ab", timeout=TIMEOUT) == b"ba"


def test_http_port_speaks_tls(tmp_path: Path, pki: Pki) -> None:
    http_port = free_port()
    with tls_server(tmp_path, pki, "--http-port", str(http_port)) as server:
        with running_worker(server, pki):
            context = ssl.create_default_context(cafile=pki.ca)
            context.load_cert_chain(pki.cert("app-1"), pki.key("app-1"))
            request = urllib.request.Request(
                f"https://127.0.0.1:{http_port}/reverse", data=b"lager", method="POST"
            )
            with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as answer:
                assert answer.read() == b"regal"
            with pytest.raises(OSError):
                urllib.request.urlopen(
                    f"http://127.0.0.1:{http_port}/reverse", data=b"x", timeout=TIMEOUT
                )


# --- the ACL ----------------------------------------------------------------------------------


@pytest.fixture
def acl_file(tmp_path: Path) -> Path:
    path = tmp_path / "acl.ini"
    path.write_text(ACL)
    return path


def test_acl_allows_and_denies_submissions(tmp_path: Path, pki: Pki, acl_file: Path) -> None:
    with tls_server(tmp_path, pki, "--acl-file", str(acl_file)) as server:
        with running_worker(server, pki):
            with Client([server.address], **pki.client_kwargs("app-1")) as client:
                assert client.submit("reverse", b"abc", timeout=TIMEOUT) == b"cba"
                assert client.submit("report.daily", b"x", timeout=TIMEOUT) == b"report x"
                with pytest.raises(ServerError, match="PERMISSION_DENIED"):
                    client.submit_background("secret", b"abc", timeout=TIMEOUT)
            # worker-1 may work on reverse but submit nothing.
            with Client([server.address], **pki.client_kwargs("worker-1")) as client:
                with pytest.raises(ServerError, match="PERMISSION_DENIED"):
                    client.submit("reverse", b"abc", timeout=TIMEOUT)
        wait_until(
            lambda: "ACL: refused SUBMIT_JOB_BG of 'secret'" in server.log(), "the denial logged"
        )


def test_acl_denies_can_do_with_an_error(tmp_path: Path, pki: Pki, acl_file: Path) -> None:
    with tls_server(tmp_path, pki, "--acl-file", str(acl_file)) as server:
        for name, function, allowed in (
            ("worker-1", b"reverse", True),
            ("worker-1", b"secret", False),
            ("app-1", b"reverse", False),
        ):
            with tls_socket(server, pki, name) as sock:
                sock.sendall(pack_request(PacketType.CAN_DO, function))
                sock.sendall(pack_request(PacketType.ECHO_REQ, b"ping"))
                type_, args = read_packet(sock)
                if allowed:
                    assert (type_, args) == (PacketType.ECHO_RES, [b"ping"])
                else:
                    assert type_ == PacketType.ERROR
                    assert args[0] == b"PERMISSION_DENIED"
                    assert function in args[1]
                    assert read_packet(sock) == (PacketType.ECHO_RES, [b"ping"])
        with AdminClient(*server.address, **pki.client_kwargs("admin-1")) as admin:
            workers = admin.workers()
        # The refused CAN_DO registered nothing.
        assert not any(b"secret" in w.functions for w in workers)


@pytest.mark.parametrize("when", ["before connecting", "while running"])
def test_a_worker_refused_one_function_works_on_the_others(
    tmp_path: Path, pki: Pki, acl_file: Path, caplog: pytest.LogCaptureFixture, when: str
) -> None:
    """The refusal of a CAN_DO comes between the worker's CAN_DOs and its first grab's answer
    (registered before connecting), or while it sleeps (registered while running)."""
    also = ("secret",) if when == "before connecting" else ()
    with tls_server(tmp_path, pki, "--acl-file", str(acl_file)) as server:
        with running_worker(server, pki, also=also) as worker:
            if not also:
                worker.register("secret", lambda job: b"never")
            with Client([server.address], **pki.client_kwargs("app-1")) as client:
                for word in (b"one", b"two", b"three"):
                    assert client.submit("reverse", word, timeout=TIMEOUT) == word[::-1]
        wait_until(lambda: "ACL: refused CAN_DO of 'secret'" in server.log(), "the denial")
    refusals = [r.getMessage() for r in caplog.records if r.name == "gearsql.worker"]
    assert any("the ACL does not let worker-1" in m and "secret" in m for m in refusals)


def test_acl_decides_who_runs_mutating_admin_commands(
    tmp_path: Path, pki: Pki, acl_file: Path
) -> None:
    with tls_server(tmp_path, pki, "--acl-file", str(acl_file)) as server:
        # app-1 is on loopback, which is trusted without an ACL: the ACL decides here.
        with AdminClient(*server.address, **pki.client_kwargs("app-1")) as admin:
            admin.status()  # read-only commands stay open
            with pytest.raises(AdminError, match="PERMISSION_DENIED") as denied:
                admin.maxqueue("reverse", 10)
            assert "ACL" in str(denied.value)
        with AdminClient(*server.address, **pki.client_kwargs("admin-1")) as admin:
            admin.maxqueue("reverse", 10)
        wait_until(lambda: "ACL: refused admin command 'maxqueue'" in server.log(), "the log")


def _https(
    port: int, pki: Pki, name: str, method: str, path: str, body: bytes, json_body: bool = False
) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=pki.ca)
    context.load_cert_chain(pki.cert(name), pki.key(name))
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=TIMEOUT, context=context)
    try:
        headers = {"Content-Type": "application/json"} if json_body else {}
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def test_the_http_port_follows_the_acl(tmp_path: Path, pki: Pki, acl_file: Path) -> None:
    http_port = free_port()
    args = ("--acl-file", str(acl_file), "--http-port", str(http_port))
    with tls_server(tmp_path, pki, *args) as server, running_worker(server, pki):
        assert _https(http_port, pki, "app-1", "POST", "/reverse", b"lager") == (200, b"regal")
        status, text = _https(http_port, pki, "app-1", "POST", "/secret", b"x")
        assert status == 403
        assert b"PERMISSION_DENIED the ACL does not let app-1" in text and b"secret" in text
        # worker-1 may work on reverse, not submit to it.
        assert _https(http_port, pki, "worker-1", "POST", "/reverse", b"x")[0] == 403
        # Reading stays open; acting needs the ACL's admin grant, whatever the address.
        assert _https(http_port, pki, "app-1", "GET", "/api/status", b"")[0] == 200
        action = json.dumps({"action": "maxqueue", "function": b"reverse".hex(), "limits": [3] * 3})
        denied = _https(http_port, pki, "app-1", "POST", "/api/action", action.encode(), True)
        assert denied[0] == 403 and b"ACL" in denied[1]
        allowed = _https(http_port, pki, "admin-1", "POST", "/api/action", action.encode(), True)
        assert allowed[0] == 200, allowed
        wait_until(
            lambda: "ACL: refused HTTP submission of 'secret'" in server.log(), "the denial logged"
        )


def test_sighup_reloads_the_acl_and_a_bad_file_keeps_the_old_one(
    tmp_path: Path, pki: Pki, acl_file: Path
) -> None:
    with tls_server(tmp_path, pki, "--acl-file", str(acl_file)) as server:
        assert server.proc is not None
        with Client([server.address], **pki.client_kwargs("app-1")) as client:
            with pytest.raises(ServerError, match="PERMISSION_DENIED"):
                client.submit_background("secret", b"1", timeout=TIMEOUT)
            acl_file.write_text(ACL.replace("report.*\n", "report.*, secret\n", 1))
            server.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "ACL reloaded" in server.log(), "the reload")
            # The same connection is judged by the new ACL.
            client.submit_background("secret", b"2", timeout=TIMEOUT)

            acl_file.write_text("[app-*\nsubmit = \n")
            server.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "ACL not reloaded" in server.log(), "the failed reload")
            client.submit_background("secret", b"3", timeout=TIMEOUT)
            assert server.proc.poll() is None


def test_tls_and_an_acl_allow_listening_beyond_loopback(
    tmp_path: Path, pki: Pki, acl_file: Path
) -> None:
    port = free_port()
    base = [sys.executable, "-m", "gearsql", "server", "--store", "memory", "-p", str(port)]
    refused = subprocess.run(
        [*base, "-L", "0.0.0.0", *pki.server_args()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "--allow-insecure-remote" in refused.stderr
    server = ServerProcess(
        "gearsql",
        tmp_path / "remote.log",
        ["--store", "memory", *pki.server_args(), "--acl-file", str(acl_file)],
    )
    server.host = "0.0.0.0"
    try:
        server.start()
        server.host = "127.0.0.1"
        with AdminClient(*server.address, **pki.client_kwargs("admin-1")) as admin:
            assert admin.version()
    finally:
        server.stop()


# --- the CLI ----------------------------------------------------------------------------------


def gearsql_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gearsql", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def one_error_line(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gearsql: "), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def test_server_tls_mistakes_are_one_line(tmp_path: Path, pki: Pki) -> None:
    base = ["server", "--store", "memory", "-p", str(free_port())]
    missing = str(tmp_path / "missing.pem")
    one_error_line(
        gearsql_cli(*base, "--ssl", "--ssl-certificate", missing, "--ssl-key", pki.server_key),
        "--ssl-certificate: cannot read",
        missing,
    )
    one_error_line(
        gearsql_cli(
            *base, "--ssl", "--ssl-certificate", pki.server_cert, "--ssl-key", pki.key("app-1")
        ),
        "--ssl-key",
        "is not the key of the certificate",
    )
    one_error_line(gearsql_cli(*base, "--ssl-certificate", pki.server_cert), "needs --ssl")
    one_error_line(
        gearsql_cli(
            *base,
            "--ssl",
            "--ssl-certificate",
            pki.server_cert,
            "--ssl-key",
            pki.server_key,
            "--ssl-verify-client",
        ),
        "--ssl-verify-client needs --ssl-ca-file",
    )
    bad_acl = tmp_path / "bad.ini"
    bad_acl.write_text("[app]\nsubmitt = x\n")
    one_error_line(gearsql_cli(*base, "--acl-file", str(bad_acl)), "unknown key 'submitt'")
    one_error_line(
        gearsql_cli("status", "-p", "1", "--ssl-ca-file", missing), "--ssl-ca-file: cannot read"
    )


def test_server_reads_tls_options_from_its_config_file(
    tmp_path: Path, pki: Pki, acl_file: Path
) -> None:
    config = tmp_path / "gearsql.conf"
    config.write_text(
        "# TLS\n--ssl\n"
        f"--ssl-certificate {pki.server_cert}\n--ssl-key {pki.server_key}\n"
        f"--ssl-ca-file {pki.ca}\n--ssl-verify-client\n--acl-file {acl_file}\n"
    )
    server = ServerProcess(
        "gearsql", tmp_path / "conf.log", ["--store", "memory", "--config-file", str(config)]
    ).start()
    try:
        with running_worker(server, pki):
            with Client([server.address], **pki.client_kwargs("app-1")) as client:
                assert client.submit("reverse", b"xy", timeout=TIMEOUT) == b"yx"
    finally:
        server.stop()


def test_cli_commands_connect_with_tls(tmp_path: Path, pki: Pki) -> None:
    with tls_server(tmp_path, pki) as server, running_worker(server, pki):
        address = ["-h", "127.0.0.1", "-p", str(server.port)]
        env = {
            "GEARSQL_SSL_CA_FILE": pki.ca,
            "GEARSQL_SSL_CERTIFICATE": pki.cert("app-1"),
            "GEARSQL_SSL_KEY": pki.key("app-1"),
        }
        result = gearsql_cli("submit", *address, "-f", "reverse", "stressed", env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "desserts"
        options = [
            "--ssl-ca-file",
            pki.ca,
            "--ssl-certificate",
            pki.cert("admin-1"),
            "--ssl-key",
            pki.key("admin-1"),
        ]
        result = gearsql_cli("status", *address, *options)
        assert result.returncode == 0, result.stderr
        assert "reverse" in result.stdout
        refused = gearsql_cli("status", *address, "--timeout", "5")
        assert refused.returncode != 0


# --- PyPI's gear ------------------------------------------------------------------------------


# gear 0.16 calls Condition.notifyAll() and makes its TLS context with ssl.PROTOCOL_TLS, both
# deprecated; the suite turns warnings into errors, so the gear tests let these through.
def gear_notifyall(test: Callable[..., None]) -> Callable[..., None]:
    test = pytest.mark.filterwarnings(r"ignore:notifyAll\(\) is deprecated:DeprecationWarning")(
        test
    )
    test = pytest.mark.filterwarnings(r"ignore:ssl\.PROTOCOL_TLS is deprecated:DeprecationWarning")(
        test
    )
    return pytest.mark.filterwarnings(r"ignore:ssl\.OP_NO_SSL\*:DeprecationWarning")(test)


def gear_shutdown(peer: Any) -> None:
    connections = peer.active_connections + peer.inactive_connections
    peer.shutdown()
    for conn in connections:
        conn.disconnect()


@gear_notifyall
def test_gear_client_and_worker_with_mutual_tls(tmp_path: Path, pki: Pki, acl_file: Path) -> None:
    gear = need_module("gear", "PyPI's gear")
    with tls_server(tmp_path, pki, "--acl-file", str(acl_file)) as server:
        worker = gear.Worker("tls-worker")
        worker.addServer(
            "127.0.0.1",
            server.port,
            ssl_key=pki.key("worker-1"),
            ssl_cert=pki.cert("worker-1"),
            ssl_ca=pki.ca,
        )
        client = gear.Client("tls-client")
        client.addServer(
            "127.0.0.1",
            server.port,
            ssl_key=pki.key("app-1"),
            ssl_cert=pki.cert("app-1"),
            ssl_ca=pki.ca,
        )

        def serve() -> None:
            while True:
                try:
                    job = worker.getJob()
                except gear.InterruptedError:
                    return
                job.sendWorkComplete(job.arguments[::-1])

        thread = threading.Thread(target=serve, daemon=True)
        try:
            worker.waitForServer(TIMEOUT)
            worker.registerFunction("reverse")
            thread.start()
            client.waitForServer(TIMEOUT)
            job = gear.Job("reverse", b"gear over tls")
            client.submitJob(job, timeout=TIMEOUT)
            wait_until(lambda: job.complete, "the gear job")
            assert job.data == [b"slt revo raeg"]
        finally:
            gear_shutdown(client)
            gear_shutdown(worker)
            if thread.is_alive():
                thread.join(TIMEOUT)


@gear_notifyall
def test_plaintext_gear_client_is_refused(tmp_path: Path, pki: Pki) -> None:
    gear = need_module("gear", "PyPI's gear")
    with tls_server(tmp_path, pki) as server:
        before = server.log().count("TLS handshake failed")
        client = gear.Client("plaintext-client")
        client.addServer("127.0.0.1", server.port)
        try:
            job = gear.Job("reverse", b"x")
            # gear counts a TCP connection as a server; its first packet ends it.
            with pytest.raises(
                (gear.GearmanError, gear.NoConnectedServersError, gear.TimeoutError)
            ):
                client.submitJob(job, timeout=5)
            assert not job.handle
            wait_until(
                lambda: server.log().count("TLS handshake failed") > before,
                "the plaintext gear client refused in the log",
            )
        finally:
            gear_shutdown(client)
