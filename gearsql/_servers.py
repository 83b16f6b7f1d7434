"""Shared by client and worker: server lists, argument checks and reconnect backoff."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from typing import Union

from gearsql.errors import InvalidArgument, InvalidPayload
from gearsql.protocol import check_function_name, check_unique

__all__ = [
    "DEFAULT_PORT",
    "Backoff",
    "ServerAddress",
    "ServersArg",
    "encode_payload",
    "format_address",
    "function_bytes",
    "parse_server",
    "parse_servers",
    "unique_bytes",
]

DEFAULT_PORT = 4730
DEFAULT_SERVERS = "127.0.0.1:4730"

ServerAddress = tuple[str, int]
#: What the ``servers`` argument accepts: ``"host[:port],host[:port]"``, or a sequence of
#: ``"host[:port]"`` strings and ``(host, port)`` tuples; None means ``$GEARMAN_SERVERS`` or
#: ``127.0.0.1:4730``.
ServersArg = Union[str, Iterable[Union[str, ServerAddress]], None]  # noqa: UP007


def parse_server(text: str, default_port: int = DEFAULT_PORT) -> ServerAddress:
    """``(host, port)`` from ``host``, ``host:port``, ``[v6]:port``, ``[v6]`` or a bare IPv6
    address; ``default_port`` when the text names none.

    Raises :class:`InvalidArgument` (a ValueError) for an empty host, a missing ``]`` or a port
    that is not a number in 1..65535.
    """
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):  # [IPv6] or [IPv6]:port
        end = text.find("]")
        if end < 0:
            raise InvalidArgument(f"bad server address {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise InvalidArgument(f"bad server address {text!r}")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    # Otherwise a bare host name, IPv4 address, or IPv6 address without a port.
    if not host:
        raise InvalidArgument(f"bad server address {text!r}: no host")
    if not port_text:
        return host, default_port
    return host, _port(port_text, text)


def _port(value: object, address: object) -> int:
    text = str(value)
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidArgument(f"bad server address {address!r}: port must be a number in 1..65535")
    return int(text)


def parse_servers(servers: ServersArg, default_port: int = DEFAULT_PORT) -> list[ServerAddress]:
    """Turn a server list into ``(host, port)`` pairs, in order, without duplicates.

    ``servers`` is a ``GEARMAN_SERVERS``-style string (``host[:port],host[:port],...``; empty
    entries are skipped), or a sequence of ``"host[:port]"`` strings and ``(host, port)``
    tuples. None reads ``$GEARMAN_SERVERS`` (as libgearman does) and falls back to
    ``127.0.0.1:4730``. Used by the client, the worker, the admin client and the CLI alike.
    Raises :class:`InvalidArgument` (a ValueError) for a bad address or an empty list.
    """
    if servers is None:
        servers = os.environ.get("GEARMAN_SERVERS") or DEFAULT_SERVERS
    items: list[str | ServerAddress]
    items = list(servers.split(",")) if isinstance(servers, str) else list(servers)
    result: list[ServerAddress] = []
    for item in items:
        if isinstance(item, str):
            if not item.strip():
                continue
            address = parse_server(item, default_port)
        else:
            host, port = item
            if not host:
                raise InvalidArgument(f"bad server address {item!r}: no host")
            address = (str(host), _port(port, item))
        if address not in result:
            result.append(address)
    if not result:
        raise InvalidArgument("the server list is empty")
    return result


def format_address(address: ServerAddress) -> str:
    """``host:port``, with brackets around an IPv6 host."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _text_bytes(value: object, what: str) -> bytes:
    """A name sent as bytes: ``str`` encoded UTF-8, bytes-like as is; InvalidPayload else."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InvalidPayload(f"{what} must be str or bytes, not {type(value).__name__}")


def function_bytes(function: str | bytes) -> bytes:
    """A function name as sent (``str`` is encoded UTF-8); InvalidArgument when it cannot be."""
    name = _text_bytes(function, "function name")
    problem = check_function_name(name)
    if problem is not None:
        raise InvalidArgument(f"{problem.text}: {function!r}")
    return name


def unique_bytes(unique: str | bytes | None) -> bytes:
    """A unique id as sent (``str`` is encoded UTF-8, None is empty); InvalidArgument when it is
    longer than 64 bytes or holds a NUL byte."""
    if unique is None:
        return b""
    value = _text_bytes(unique, "unique")
    problem = check_unique(value)
    if problem is not None:
        raise InvalidArgument(f"{problem.text} (at most 64 bytes, no NUL): {unique!r}")
    return value


def encode_payload(data: object, encoding: str | None) -> bytes:
    """Bytes to send for ``data``: bytes-like as is, ``str`` with ``encoding``.

    Raises :class:`InvalidPayload` for ``str`` when ``encoding`` is None and for anything else.
    """
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):
        if encoding is None:
            raise InvalidPayload("payload is str but no encoding was given; pass bytes")
        return data.encode(encoding)
    raise InvalidPayload(
        f"payload must be bytes (or str with an encoding), not {type(data).__name__}"
    )


class Backoff:
    """Exponential reconnect delays with jitter: ``initial``, doubled per failure, up to
    ``maximum``; :meth:`reset` after a success."""

    def __init__(self, initial: float = 0.1, maximum: float = 10.0) -> None:
        if initial <= 0 or maximum < initial:
            raise InvalidArgument("backoff needs 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.initial * (2**self.failures), self.maximum)
        self.failures += 1
        # Jitter keeps many clients that lost the same server from reconnecting in lockstep.
        return float(delay * random.uniform(0.8, 1.0))

    def reset(self) -> None:
        self.failures = 0
