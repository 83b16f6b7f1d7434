"""A real TCP proxy in front of a database server, to fail the network under a store the way a
cable, a firewall or a restarting server does (the ``tcp_proxy`` fixture of conftest.py)."""

from __future__ import annotations

import select
import socket
import threading
from urllib.parse import urlsplit, urlunsplit


class TcpProxy:
    """Forwards a port of its own on 127.0.0.1 to ``target``, on one thread.

    :meth:`cut` closes every connection (both ends, as a dying server does) and makes new ones
    fail until :meth:`restore`; :meth:`freeze` stops forwarding without closing anything (a
    network partition: neither end notices). :attr:`accepted` counts the connections tried.
    """

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        #: Connections accepted so far (refused ones included).
        self.accepted = 0
        self.refusing = False
        self._peers: dict[socket.socket, socket.socket] = {}
        self._frozen: set[socket.socket] = set()
        self._request: str | None = None
        self._done = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def dsn(self, dsn: str) -> str:
        """``dsn`` (a URL) with its host and port replaced by the proxy's; the rest is kept."""
        parts = urlsplit(dsn)
        credentials = parts.netloc.rpartition("@")[0]
        address = f"127.0.0.1:{self.port}"
        return urlunsplit(
            parts._replace(netloc=f"{credentials}@{address}" if credentials else address)
        )

    def cut(self, refuse: bool = True) -> None:
        """Close every connection; with ``refuse``, new connections are accepted and closed at
        once (the client sees the server hang up before it says anything) until
        :meth:`restore`."""
        self.refusing = refuse
        self._ask("cut")

    def restore(self) -> None:
        """Forward new connections again, after :meth:`cut`."""
        self.refusing = False

    def freeze(self) -> None:
        """Stop forwarding on the open connections without closing them."""
        self._ask("freeze")

    def close(self) -> None:
        self._stopped = True
        self._thread.join(5)
        for sock in list(self._peers):
            self._close(sock)
        self.listener.close()

    # -- the proxy's thread

    def _serve(self) -> None:
        while not self._stopped:
            if self._request is not None:
                self._handle(self._request)
                self._request = None
                self._done.set()
            watched = [self.listener, *(s for s in self._peers if s not in self._frozen)]
            readable, _, _ = select.select(watched, [], [], 0.02)
            for sock in readable:
                if sock is self.listener:
                    self._accept()
                elif sock in self._peers:
                    self._pump(sock)

    def _accept(self) -> None:
        client, _ = self.listener.accept()
        self.accepted += 1
        if self.refusing:
            client.close()
            return
        upstream = socket.create_connection(self.target)
        self._peers[client], self._peers[upstream] = upstream, client

    def _pump(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(1 << 16)
            if data:
                self._peers[sock].sendall(data)
                return
        except OSError:
            pass
        self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        peer = self._peers.pop(sock, None)
        if peer is not None:
            self._peers.pop(peer, None)
        for each in (sock, peer):
            if each is not None:
                self._frozen.discard(each)
                each.close()

    def _handle(self, request: str) -> None:
        if request == "cut":
            for sock in list(self._peers):
                self._close(sock)
        elif request == "freeze":
            self._frozen.update(self._peers)

    def _ask(self, request: str) -> None:
        """Have the proxy's thread do ``request`` (it alone touches the sockets) and wait."""
        self._done.clear()
        self._request = request
        assert self._done.wait(5), "the proxy thread did not answer"
