"""The least a Python job server can spend on a plain background submission: a lower bound.

This is not a job server. It is the smallest asyncio program (uvloop when installed) that
accepts background jobs the way a job server must: it reads pipelined SUBMIT_JOB_BG packets,
packet boundaries falling anywhere in a read, splits each into function, unique and payload,
queues the payload with its handle number and the time in a queue per function, and answers
JOB_CREATED with the job's handle, every reply of a read in one write. It also answers ECHO_REQ
and the admin ``status`` command, which the load generator uses. It checks nothing and refuses
nothing; no worker can take its background jobs. For foreground jobs it does the least that
matching does: SUBMIT_JOB is queued and answered with JOB_CREATED and wakes one sleeping worker
with NOOP; GRAB_JOB_UNIQ takes the oldest job of the worker's functions (JOB_ASSIGN_UNIQ) or
gets NO_JOB; PRE_SLEEP puts the worker to sleep; WORK_COMPLETE goes to the job's client.

Its CPU per job is what any pure-Python server pays at the least, on this interpreter and
machine, for what gearmand does in C. With ``--parser`` it reads its packets through gearsql's
own sans-IO ``Parser`` instead (events, then one handler call per packet, as gearsql's
connections do), which splits the gap between the floor and gearsql into what the event split
costs and what the job server's rules cost. ``compare.py`` runs the two as the server kinds
``python-floor`` and ``python-floor-parser`` beside gearmand and gearsql::

    python bench/compare.py --scenarios submit-bg-no-unique \
        --servers gearmand,gearsql,python-floor,python-floor-parser --repeat 3

Run it alone with ``python bench/floor.py --port 4730 [--parser]``.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import time
from collections import deque
from typing import Any

from gearsql.protocol import Packet, PacketType, Parser

HEADER = struct.Struct(">4sII")
PACKED = struct.Struct(">Qd")
RES = b"\0RES"
SUBMIT_JOB_BG = 18
ECHO_REQ = 16
JOB_CREATED = 8
ECHO_RES = 17
CAN_DO = 1
PRE_SLEEP = 4
NOOP = 6
SUBMIT_JOB = 7
NO_JOB = 10
WORK_COMPLETE = 13
GRAB_JOB_UNIQ = 30
JOB_ASSIGN_UNIQ = 31


class Floor:
    """The queues, and the handle counter, of the whole server."""

    def __init__(self) -> None:
        self.queues: dict[bytes, deque[bytes]] = {}
        self.counter = 0
        # Foreground jobs: waiting (handle, client, payload) per function, the client of each
        # running one, and the sleeping workers of each function.
        self.waiting: dict[bytes, deque[tuple[bytes, FloorConnection, bytes]]] = {}
        self.running: dict[bytes, FloorConnection] = {}
        self.sleepers: dict[bytes, set[FloorConnection]] = {}

    def status(self) -> bytes:
        lines = [b"%s\t%d\t0\t0\n" % (name, len(queue)) for name, queue in self.queues.items()]
        return b"".join(lines) + b".\n"


class FloorConnection(asyncio.Protocol):
    def __init__(self, floor: Floor) -> None:
        self.floor = floor
        self.rest = b""
        self.transport: Any = None
        self.abilities: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        buf = self.rest + data if self.rest else data
        floor = self.floor
        queues = floor.queues
        number = floor.counter
        unpack = HEADER.unpack_from
        pack_header = HEADER.pack
        pack_entry = PACKED.pack
        now = time.monotonic
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while pos < end:
            if buf[pos] != 0:  # an admin line
                newline = buf.find(b"\n", pos)
                if newline < 0:
                    break
                line = buf[pos:newline].strip()
                pos = newline + 1
                out.append(floor.status() if line == b"status" else b"ERR UNKNOWN_COMMAND\n")
                continue
            if end - pos < HEADER.size:
                break
            _magic, kind, size = unpack(buf, pos)
            start = pos + HEADER.size
            stop = start + size
            if stop > end:
                break
            pos = stop
            if kind == SUBMIT_JOB_BG:
                name, _unique, payload = buf[start:stop].split(b"\0", 2)
                queue = queues.get(name)
                if queue is None:
                    queue = queues[name] = deque()
                number += 1
                queue.append(pack_entry(number, now()) + payload)
                handle = b"H:floor:%d" % number
                out.append(pack_header(RES, JOB_CREATED, len(handle)) + handle)
            elif kind == ECHO_REQ:
                out.append(pack_header(RES, ECHO_RES, size) + buf[start:stop])
            else:
                floor.counter = number
                self.foreground(kind, buf[start:stop], out)
                number = floor.counter
        floor.counter = number
        self.rest = buf[pos:]
        if out:
            self.transport.write(b"".join(out))

    def foreground(self, kind: int, body: bytes, out: list[bytes]) -> None:
        """What foreground jobs need: SUBMIT_JOB, and a worker's CAN_DO, GRAB_JOB_UNIQ,
        PRE_SLEEP and WORK_COMPLETE. A reply to this connection goes in ``out``; one to another
        connection is written to it at once. One worker is woken per job."""
        floor = self.floor
        if kind == SUBMIT_JOB:
            name, _unique, payload = body.split(b"\0", 2)
            floor.counter += 1
            handle = b"H:floor:%d" % floor.counter
            out.append(_packet(JOB_CREATED, handle))
            floor.waiting.setdefault(name, deque()).append((handle, self, payload))
            sleepers = floor.sleepers.get(name)
            if sleepers:
                woken = sleepers.pop()
                woken.wake_up()
                woken.transport.write(_packet(NOOP, b""))
        elif kind == GRAB_JOB_UNIQ:
            self.wake_up()
            for name in self.abilities:
                queue = floor.waiting.get(name)
                if queue:
                    handle, client, payload = queue.popleft()
                    floor.running[handle] = client
                    out.append(_packet(JOB_ASSIGN_UNIQ, b"\0".join((handle, name, b"", payload))))
                    return
            out.append(_packet(NO_JOB, b""))
        elif kind == PRE_SLEEP:
            if any(floor.waiting.get(name) for name in self.abilities):
                out.append(_packet(NOOP, b""))
            else:
                for name in self.abilities:
                    floor.sleepers.setdefault(name, set()).add(self)
        elif kind == WORK_COMPLETE:
            handle = body.split(b"\0", 1)[0]
            client = floor.running.pop(handle, None)
            if client is not None:
                client.transport.write(_packet(WORK_COMPLETE, body))
        elif kind == CAN_DO:
            self.abilities.append(body)

    def wake_up(self) -> None:
        """No longer asleep for any function."""
        for name in self.abilities:
            self.floor.sleepers.get(name, set()).discard(self)


def _packet(kind: int, body: bytes) -> bytes:
    return HEADER.pack(RES, kind, len(body)) + body


class ParsedConnection(FloorConnection):
    """The same work, framed by gearsql's ``Parser``: a list of ``Packet`` events per read,
    then a handler per packet from a table by type."""

    def __init__(self, floor: Floor) -> None:
        super().__init__(floor)
        self.parser = Parser()
        self.handlers = {PacketType.SUBMIT_JOB_BG: self.submit, PacketType.ECHO_REQ: self.echo}
        self.out: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        handlers = self.handlers
        for event in self.parser.feed(data):
            if type(event) is Packet:
                handlers[event.type](event)  # type: ignore[union-attr]
            else:
                self.out.append(self.floor.status())
        if self.out:
            self.transport.write(b"".join(self.out))
            self.out = []

    def submit(self, packet: Any) -> None:
        name, _unique, payload = packet.args
        floor = self.floor
        queue = floor.queues.get(name)
        if queue is None:
            queue = floor.queues[name] = deque()
        floor.counter = number = floor.counter + 1
        queue.append(PACKED.pack(number, time.monotonic()) + payload)
        handle = b"H:floor:%d" % number
        self.out.append(HEADER.pack(RES, JOB_CREATED, len(handle)) + handle)

    def echo(self, packet: Any) -> None:
        (body,) = packet.args
        self.out.append(HEADER.pack(RES, ECHO_RES, len(body)) + body)


async def serve(host: str, port: int, parsed: bool = False) -> None:
    floor = Floor()
    loop = asyncio.get_running_loop()
    kind = ParsedConnection if parsed else FloorConnection
    server = await loop.create_server(lambda: kind(floor), host, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4730)
    parser.add_argument(
        "--parser", action="store_true", help="frame packets with gearsql's sans-IO Parser"
    )
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is the optional 'fast' extra
        asyncio.run(serve(args.host, args.port, args.parser))
    else:
        uvloop.run(serve(args.host, args.port, args.parser))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
