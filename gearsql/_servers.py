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


def _parse_one(text: str) -> ServerAddress:
    text = text.strip()
    if not text:
        raise InvalidArgument("empty server address in the server list")
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:  # a bare host name, IPv4 address, or IPv6 address without a port
        host, port_text = text, ""
    if not port_text:
        return host, DEFAULT_PORT
    try:
        port = int(port_text)
    except ValueError:
        raise InvalidArgument(f"bad port in server address {text!r}") from None
    if not 0 < port < 65536:
        raise InvalidArgument(f"port out of range in server address {text!r}")
    return host, port


def parse_servers(servers: ServersArg) -> list[ServerAddress]:
    """Turn a ``servers`` argument into a list of (host, port), without duplicates.

    None reads ``GEARMAN_SERVERS`` (as libgearman does) and falls back to ``127.0.0.1:4730``.
    Raises :class:`InvalidArgument` for an empty list or a bad address.
    """
    if servers is None:
        servers = os.environ.get("GEARMAN_SERVERS") or DEFAULT_SERVERS
    items: list[str | ServerAddress]
    items = list(servers.split(",")) if isinstance(servers, str) else list(servers)
    result: list[ServerAddress] = []
    for item in items:
        if isinstance(item, str):
            address = _parse_one(item)
        else:
            host, port = item
            address = (str(host), int(port))
        if address not in result:
            result.append(address)
    if not result:
        raise InvalidArgument("the server list is empty")
    return result


def format_address(address: ServerAddress) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def function_bytes(function: str | bytes) -> bytes:
    """A function name as sent (``str`` is encoded UTF-8); InvalidArgument when it cannot be."""
    if isinstance(function, str):
        name = function.encode("utf-8")
    elif isinstance(function, (bytes, bytearray, memoryview)):
        name = bytes(function)
    else:
        raise InvalidPayload(f"function name must be str or bytes, not {type(function).__name__}")
    problem = check_function_name(name)
    if problem is not None:
        raise InvalidArgument(f"{problem}: {function!r}")
    return name


def unique_bytes(unique: str | bytes | None) -> bytes:
    """A unique id as sent (``str`` is encoded UTF-8, None is empty); InvalidArgument when it is
    longer than 64 bytes or holds a NUL byte."""
    if unique is None:
        return b""
    if isinstance(unique, str):
        value = unique.encode("utf-8")
    elif isinstance(unique, (bytes, bytearray, memoryview)):
        value = bytes(unique)
    else:
        raise InvalidPayload(f"unique must be str or bytes, not {type(unique).__name__}")
    problem = check_unique(value)
    if problem is not None:
        raise InvalidArgument(f"{problem} (at most 64 bytes, no NUL): {unique!r}")
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
