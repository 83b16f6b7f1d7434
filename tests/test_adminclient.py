"""gearsql.adminclient against real job servers (gearsql and C gearmand), state set up with raw
packets; plus the sans-IO reply framing fed at every split point."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from conftest import ServerProcess, free_port
from wire import Peer

import gearsql
from gearsql.adminclient import (
    AdminClient,
    FunctionStatus,
    JobInfo,
    PriorityStatus,
    WorkerInfo,
    find_reply_end,
    parse_error_line,
    parse_server,
    parse_servers,
)
from gearsql.errors import (
    AdminConnectionError,
    AdminError,
    AdminTimeoutError,
    GearmanError,
)
from gearsql.protocol import PacketType as P


def sync(peer: Peer) -> None:
    """Wait until the server has handled everything ``peer`` sent (packets without replies)."""
    peer.send(P.ECHO_REQ, b"sync")
    assert peer.expect(P.ECHO_RES).args == (b"sync",)


def submit_background(
    peer: Peer, function: bytes, unique: bytes = b"", type_: P = P.SUBMIT_JOB_BG
) -> bytes:
    peer.send(type_, function, unique, b"payload")
    return peer.expect(P.JOB_CREATED).args[0]


def register(peer: Peer, *functions: bytes, client_id: bytes | None = None) -> None:
    if client_id is not None:
        peer.send(P.SET_CLIENT_ID, client_id)
    for function in functions:
        peer.send(P.CAN_DO, function)
    sync(peer)


@pytest.fixture
def admin(any_server: ServerProcess) -> Iterator[AdminClient]:
    with AdminClient(*any_server.address, timeout=5) as client:
        yield client


# ---------------------------------------------------------------------------- listings


def test_status_is_empty_on_a_fresh_server(admin: AdminClient) -> None:
    assert admin.status() == []


def test_status_lists_total_running_and_workers_per_function(
    any_server: ServerProcess, admin: AdminClient
) -> None:
    with Peer(any_server.address) as client, Peer(any_server.address) as worker:
        submit_background(client, b"waiting")
        submit_background(client, b"waiting")
        submit_background(client, b"busy")
        register(worker, b"busy")
        worker.send(P.GRAB_JOB)
        worker.expect(P.JOB_ASSIGN)

        status = sorted(admin.status())

    assert status == [FunctionStatus(b"busy", 1, 1, 1), FunctionStatus(b"waiting", 2, 0, 0)]
    assert [fn.queued for fn in status] == [0, 2]


def test_priority_status_counts_queued_jobs_per_priority(
    any_server: ServerProcess, admin: AdminClient
) -> None:
    with Peer(any_server.address) as client, Peer(any_server.address) as worker:
        submit_background(client, b"ranked", type_=P.SUBMIT_JOB_HIGH_BG)
        submit_background(client, b"ranked", type_=P.SUBMIT_JOB_BG)
        submit_background(client, b"ranked", type_=P.SUBMIT_JOB_BG)
        for _ in range(3):
            submit_background(client, b"ranked", type_=P.SUBMIT_JOB_LOW_BG)
        register(worker, b"ranked")

        assert admin.priority_status() == [PriorityStatus(b"ranked", 1, 2, 3, 1)]


def test_workers_lists_client_id_and_functions_of_each_connection(
    any_server: ServerProcess, admin: AdminClient
) -> None:
    with Peer(any_server.address) as worker:
        register(worker, b"alpha", b"beta", client_id=b"probe-worker")

        listed = admin.workers()

    assert len(listed) == 2
    by_id = {info.client_id: info for info in listed}
    assert set(by_id) == {b"probe-worker", None}
    probe = by_id[b"probe-worker"]
    assert (probe.ip, sorted(probe.functions)) == ("127.0.0.1", [b"alpha", b"beta"])
    assert probe.fd >= 0
    # The admin connection itself: no client id, no functions.
    assert by_id[None] == WorkerInfo(by_id[None].fd, "127.0.0.1", None, ())


def test_show_jobs_lists_handles_with_retries_and_flags(
    any_server: ServerProcess, admin: AdminClient
) -> None:
    with Peer(any_server.address) as client:
        handle = submit_background(client, b"jobs")

        [job] = admin.show_jobs()
        assert job[:4] == (handle, 0, False, True)
        if any_server.kind == "gearsql":
            assert (job.attempts, job.state, job.error) == (0, "queued", None)
        else:
            assert job == JobInfo(handle, 0, False, True)


def test_show_unique_jobs_lists_the_uniques(any_server: ServerProcess, admin: AdminClient) -> None:
    with Peer(any_server.address) as client:
        submit_background(client, b"jobs", unique=b"order-17")

        assert admin.show_unique_jobs() == [b"order-17"]


# ---------------------------------------------------------------------------- commands


def test_cancel_job_cancels_a_queued_job(any_server: ServerProcess, admin: AdminClient) -> None:
    with Peer(any_server.address) as client:
        handle = submit_background(client, b"doomed")

    assert admin.cancel_job(handle) is True
    # gearmand only marks the job ignored until a worker next asks for work; gearsql lets it
    # go at once when cancelled jobs are half of its queue (here: all of it).
    if any_server.kind == "gearmand":
        [job] = admin.show_jobs()
        assert job[:4] == (handle, 0, True, False)
    else:
        assert admin.show_jobs() == []
    with Peer(any_server.address) as worker:
        register(worker, b"doomed")
        worker.send(P.GRAB_JOB)
        worker.expect(P.NO_JOB)


def test_cancel_job_of_an_unknown_handle_returns_false(admin: AdminClient) -> None:
    assert admin.cancel_job("H:nowhere:1") is False


def test_maxqueue_limits_a_function_until_reset(
    any_server: ServerProcess, admin: AdminClient
) -> None:
    admin.create_function("capped")
    admin.maxqueue("capped", 1)
    with Peer(any_server.address) as client:
        submit_background(client, b"capped")
        client.send(P.SUBMIT_JOB_BG, b"capped", b"", b"one too many")
        assert client.expect(P.ERROR).args[0] == b"QUEUE_ERROR"

        admin.maxqueue("capped")  # no limit: back to unlimited
        submit_background(client, b"capped")

    assert admin.status() == [FunctionStatus(b"capped", 2, 0, 0)]


def test_maxqueue_takes_one_limit_per_priority(
    any_server: ServerProcess, admin: AdminClient
) -> None:
    admin.create_function(b"ranked")
    admin.maxqueue(b"ranked", (0, 1, 0))
    with Peer(any_server.address) as client:
        submit_background(client, b"ranked")
        client.send(P.SUBMIT_JOB_BG, b"ranked", b"", b"one too many")
        assert client.expect(P.ERROR).args[0] == b"QUEUE_ERROR"
        submit_background(client, b"ranked", type_=P.SUBMIT_JOB_HIGH_BG)
        submit_background(client, b"ranked", type_=P.SUBMIT_JOB_LOW_BG)


def test_create_and_drop_function(admin: AdminClient) -> None:
    admin.create_function("made_by_admin")
    assert admin.status() == [FunctionStatus(b"made_by_admin", 0, 0, 0)]

    admin.drop_function("made_by_admin")
    assert admin.status() == []


def test_drop_function_of_an_unknown_function_raises_admin_error(admin: AdminClient) -> None:
    with pytest.raises(AdminError) as caught:
        admin.drop_function("never_made")

    assert (caught.value.code, caught.value.text) == ("", "function not found")
    assert caught.value.line == b"ERR function not found"
    assert str(caught.value) == "function not found"


def test_drop_function_with_a_connected_worker_raises_admin_error(
    any_server: ServerProcess, admin: AdminClient
) -> None:
    with Peer(any_server.address) as worker:
        register(worker, b"in_use")

        with pytest.raises(AdminError, match="still connected workers"):
            admin.drop_function("in_use")

        assert admin.status() == [FunctionStatus(b"in_use", 0, 0, 1)]


def test_version_getpid_and_verbose_describe_the_server(
    any_server: ServerProcess, admin: AdminClient
) -> None:
    assert any_server.proc is not None
    version = admin.version()
    if any_server.kind == "gearsql":
        assert version == gearsql.__version__
    else:
        assert version.startswith("1.1.")
    assert admin.getpid() == any_server.proc.pid
    # Both servers run with `--verbose INFO` (tests/conftest.py).
    assert admin.verbose() == "INFO"


def test_one_connection_serves_many_commands(admin: AdminClient) -> None:
    for _ in range(20):
        assert admin.status() == []
        assert admin.cancel_job("H:nowhere:2") is False
        assert admin.verbose() == "INFO"


def test_host_port_string_is_accepted(any_server: ServerProcess) -> None:
    with AdminClient(f"127.0.0.1:{any_server.port}", timeout=5) as client:
        assert client.status() == []
        assert client.server == f"127.0.0.1:{any_server.port}"


# ---------------------------------------------------------------------------- failures


def test_refused_connection_raises_a_clear_connection_error() -> None:
    port = free_port()
    client = AdminClient("127.0.0.1", port, timeout=5)

    with pytest.raises(AdminConnectionError) as caught:
        client.status()

    assert str(caught.value) == f"cannot connect to 127.0.0.1:{port}: Connection refused"
    assert caught.value.address == ("127.0.0.1", port)
    assert not isinstance(caught.value, AdminTimeoutError)


def test_server_going_away_raises_a_connection_error(any_server: ServerProcess) -> None:
    with AdminClient(*any_server.address, timeout=5) as client:
        assert client.status() == []
        any_server.stop()

        with pytest.raises(AdminConnectionError):
            client.status()


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A real TCP listener that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        stop.set()
        thread.join()
        for sock in accepted:
            sock.close()
        listener.close()


def test_a_reply_that_never_comes_raises_timeout(silent_server: tuple[str, int]) -> None:
    client = AdminClient(*silent_server, timeout=0.3)

    with pytest.raises(AdminTimeoutError, match=r"no reply from .* to 'status' within 0\.3 s"):
        client.status()

    assert isinstance(AdminTimeoutError("x", silent_server), AdminConnectionError)


def test_a_half_list_then_close_raises_a_connection_error() -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_and_hang_up() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(100)
            conn.sendall(b"f\t1\t0\t0\n")  # no terminating ".\n"

    thread = threading.Thread(target=answer_and_hang_up)
    thread.start()
    try:
        with pytest.raises(AdminConnectionError, match="closed the connection"):
            AdminClient(*listener.getsockname()[:2], timeout=5).status()
    finally:
        thread.join()
        listener.close()


@pytest.mark.parametrize("bad", ["", "two words", "line\nbreak", "nul\0byte"])
def test_bad_arguments_raise_value_error_before_anything_is_sent(bad: str) -> None:
    client = AdminClient("127.0.0.1", free_port())  # nothing listens: sending would fail
    with pytest.raises(ValueError):
        client.create_function(bad)
    with pytest.raises(ValueError):
        client.cancel_job(bad)


def test_every_admin_exception_is_a_gearman_error() -> None:
    for cls in (AdminError, AdminConnectionError, AdminTimeoutError):
        assert issubclass(cls, GearmanError)


# ---------------------------------------------------------------------------- sans-IO parts


REPLIES = [
    (b".\n", True),
    (b"f\t1\t0\t0\ng\t2\t1\t1\n.\n", True),
    (b"ERR UNKNOWN_COMMAND Unknown+server+commandprioritystatus\r\n", True),
    (b"OK\r\n", False),
    (b"OK 1.1.20+ds\n", False),
    (b"ERR UNKNOWN_JOB\r\n", False),
]


@pytest.mark.parametrize(("reply", "list_reply"), REPLIES)
def test_reply_end_is_found_only_when_the_reply_is_complete(reply: bytes, list_reply: bool) -> None:
    for split in range(len(reply)):
        assert find_reply_end(reply[:split], list_reply) is None, split
    assert find_reply_end(reply, list_reply) == len(reply)
    assert find_reply_end(reply + b"OK\r\n", list_reply) == len(reply)


def test_a_listed_name_starting_with_err_is_not_an_error() -> None:
    reply = b"ERR x\t0\t0\t0\n.\n"
    assert find_reply_end(reply, list_reply=True) == len(reply)


def test_error_lines_split_into_code_and_text() -> None:
    coded = parse_error_line(b"ERR UNKNOWN_COMMAND Unknown+server+commandbogus")
    assert (coded.code, coded.text) == ("UNKNOWN_COMMAND", "Unknown server commandbogus")
    assert str(coded) == "UNKNOWN_COMMAND Unknown server commandbogus"
    bare = parse_error_line(b"ERR there are still connected workers or executing clients")
    assert (bare.code, bare.text) == ("", "there are still connected workers or executing clients")


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("gearman.example", ("gearman.example", 4730)),
        ("gearman.example:4731", ("gearman.example", 4731)),
        ("[::1]:4732", ("::1", 4732)),
        ("[::1]", ("::1", 4730)),
        ("::1", ("::1", 4730)),
    ],
)
def test_parse_server_accepts_host_and_port_forms(text: str, address: tuple[str, int]) -> None:
    assert parse_server(text) == address


@pytest.mark.parametrize("text", ["", ":4730", "host:port", "host:0", "host:70000", "[::1"])
def test_parse_server_rejects_bad_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_server(text)


def test_parse_servers_reads_a_comma_separated_list() -> None:
    assert parse_servers("a:1, b ,c:3") == [("a", 1), ("b", 4730), ("c", 3)]
    with pytest.raises(ValueError):
        parse_servers(" , ")


def test_two_different_ports_are_refused() -> None:
    with pytest.raises(ValueError):
        AdminClient("host:1", 2)
    assert AdminClient("host:1", 1).address == ("host", 1)
