"""A raw view of a job server for interop tests: binary packets and admin lines over a socket.

Written against the protocol text, not against gearsql's codec, so these tests judge gearsql
and C gearmand by the same independent yardstick.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from enum import IntEnum

TIMEOUT = 10.0
HEADER = struct.Struct(">4sII")


class PacketType(IntEnum):
    """The packet types these tests send or expect (docs/protocol.md §1)."""

    CAN_DO = 1
    NOOP = 6
    SUBMIT_JOB = 7
    JOB_CREATED = 8
    GRAB_JOB = 9
    NO_JOB = 10
    JOB_ASSIGN = 11
    WORK_COMPLETE = 13
    ECHO_REQ = 16
    ECHO_RES = 17
    SUBMIT_JOB_BG = 18
    ERROR = 19
    SUBMIT_JOB_HIGH_BG = 32
    SUBMIT_JOB_LOW_BG = 34
    SET_CLIENT_ID = 22


BACKGROUND_SUBMIT = {
    "high": PacketType.SUBMIT_JOB_HIGH_BG,
    "normal": PacketType.SUBMIT_JOB_BG,
    "low": PacketType.SUBMIT_JOB_LOW_BG,
}


class ProbeConnection:
    """One blocking TCP connection that speaks raw request packets; every read has a timeout."""

    def __init__(self, address: tuple[str, int], timeout: float = TIMEOUT):
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buffer = b""

    def __enter__(self) -> ProbeConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, ptype: PacketType, *args: bytes) -> None:
        data = b"\0".join(args)
        self.sock.sendall(HEADER.pack(b"\0REQ", ptype, len(data)) + data)

    def receive(self) -> tuple[int, bytes]:
        """Return the next response packet as (type, data); raise on timeout or close."""
        while True:
            if len(self.buffer) >= HEADER.size:
                magic, ptype, size = HEADER.unpack_from(self.buffer)
                assert magic == b"\0RES", f"bad magic in {self.buffer[:12]!r}"
                if len(self.buffer) >= HEADER.size + size:
                    data = self.buffer[HEADER.size : HEADER.size + size]
                    self.buffer = self.buffer[HEADER.size + size :]
                    return ptype, data
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buffer += chunk

    def expect(self, ptype: PacketType) -> bytes:
        got, data = self.receive()
        assert got == ptype, f"expected {ptype.name}, got type {got} with {data!r}"
        return data

    def sync(self) -> None:
        """Round-trip an echo, so everything sent before has been handled by the server."""
        self.send(PacketType.ECHO_REQ, b"sync")
        assert self.expect(PacketType.ECHO_RES) == b"sync"

    def submit_background(
        self, function: bytes, data: bytes, unique: bytes = b"", priority: str = "normal"
    ) -> bytes:
        """Queue a background job and return its handle."""
        self.send(BACKGROUND_SUBMIT[priority], function, unique, data)
        return self.expect(PacketType.JOB_CREATED)

    def submit_foreground(self, function: bytes, data: bytes, unique: bytes = b"") -> bytes:
        """Queue a foreground job (this connection stays its waiting client); return the handle."""
        self.send(PacketType.SUBMIT_JOB, function, unique, data)
        return self.expect(PacketType.JOB_CREATED)

    def register(self, *functions: bytes, client_id: bytes | None = None) -> None:
        """Become a worker for the functions (never sleeping, so never sent NOOP)."""
        if client_id is not None:
            self.send(PacketType.SET_CLIENT_ID, client_id)
        for function in functions:
            self.send(PacketType.CAN_DO, function)
        self.sync()

    def grab_job(self) -> tuple[int, bytes]:
        """Ask for a job once: (JOB_ASSIGN, handle\\0function\\0data) or (NO_JOB, b"")."""
        self.send(PacketType.GRAB_JOB)
        return self.receive()


def admin_lines(address: tuple[str, int], command: str, timeout: float = TIMEOUT) -> list[str]:
    """Run a list-type admin command (status, workers, show jobs, ...) and return its lines.

    The reply must end with the `.` line (docs/protocol.md §2); it is checked, not returned.
    """
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(command.encode() + b"\n")
        reply = b""
        while not (reply == b".\n" or reply.endswith(b"\n.\n")):
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"{command!r}: connection closed after {reply!r}")
            reply += chunk
    return reply.decode().split("\n")[:-2]


def wait_until(predicate: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    """Poll until predicate() is true; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def wait_for_status_line(address: tuple[str, int], line: str, timeout: float = TIMEOUT) -> None:
    """Wait until `status` lists exactly this tab-separated line."""
    seen: list[str] = []

    def listed() -> bool:
        seen[:] = admin_lines(address, "status")
        return line in seen

    try:
        wait_until(listed, f"status line {line!r}", timeout)
    except AssertionError as error:
        raise AssertionError(f"{error}; last status: {seen!r}") from None
