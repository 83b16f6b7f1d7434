"""A tiny blocking Gearman peer for tests: raw packets over a real TCP socket, nothing hidden."""

from __future__ import annotations

import socket
import threading
import time

from gearsql.protocol import RES, AdminLine, Packet, PacketType, Parser, Violation, pack_request


class Peer:
    """One real TCP connection to a job server, speaking raw packets."""

    def __init__(self, address: tuple[str, int], timeout: float = 5.0):
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.parser = Parser(expect_magic=RES)
        self.pending: list[Packet] = []
        self.text = b""

    def send(self, type_: PacketType, *args: bytes) -> None:
        self.sock.sendall(pack_request(type_, *args))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read(self) -> bool:
        data = self.sock.recv(1 << 20)
        if not data:
            return False
        if data[:1] != b"\0" and not self.pending and self.parser.buffered == 0:
            self.text += data
            return True
        for event in self.parser.feed(data):
            if isinstance(event, Packet):
                self.pending.append(event)
            elif isinstance(event, (AdminLine, Violation)):
                raise AssertionError(f"unexpected {event!r} from the server")
        return True

    def recv(self, timeout: float = 5.0) -> Packet:
        """The next packet; AssertionError when none arrives within ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("no packet from the server in time")
            self.sock.settimeout(remaining)
            try:
                if not self._read():
                    raise AssertionError("the server closed the connection")
            except TimeoutError as exc:
                raise AssertionError("no packet from the server in time") from exc
        return self.pending.pop(0)

    def expect(self, type_: PacketType, timeout: float = 5.0) -> Packet:
        packet = self.recv(timeout)
        assert packet.type == type_, f"expected {type_.name}, got {packet!r}"
        return packet

    def nothing_within(self, seconds: float) -> bool:
        """True when no packet arrives within ``seconds``."""
        if self.pending:
            return False
        self.sock.settimeout(seconds)
        try:
            if not self._read():
                return True
        except TimeoutError:
            return True
        return not self.pending

    def admin(self, line: str, list_reply: bool = True) -> bytes:
        """Send an admin line; return the reply (up to the closing ``.\\n`` for lists)."""
        self.text = b""
        self.sock.sendall(line.encode() + b"\r\n")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = self.text
            if list_reply and (text == b".\n" or text.endswith(b"\n.\n")):
                break
            if text.startswith((b"OK", b"ERR")) and text.endswith(b"\n"):
                break
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            if not self._read():
                break
        reply, self.text = self.text, b""
        return reply

    def closed_within(self, seconds: float) -> bool:
        """True when the server closes the connection within ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not self.sock.recv(1 << 16):
                    return True
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(address: tuple[str, int], stop: threading.Event) -> Peer | None:
    """A connection to the server, retried while it restarts; None once ``stop`` is set."""
    while not stop.is_set():
        try:
            peer = Peer(address, timeout=5)
        except OSError:
            time.sleep(0.02)
            continue
        # A worker writes WORK_COMPLETE, then GRAB_JOB: without this, Nagle's algorithm holds
        # the GRAB back until the server's delayed ACK, some 40 ms per job.
        peer.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return peer
    return None
