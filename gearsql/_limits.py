"""The job server's default limits, importable without the server (the CLI shows them in --help).

Each bounds what one peer, or all of them together, can make the server hold; see the module
docstring of :mod:`gearsql.server` for how each is enforced.
"""

from __future__ import annotations

from gearsql.protocol import DEFAULT_MAX_PACKET_SIZE

__all__ = [
    "DEFAULT_MAX_BUFFER",
    "DEFAULT_MAX_FUNCTIONS",
    "DEFAULT_MAX_OUTPUT",
    "DEFAULT_PACKET_TIMEOUT",
]

#: Bytes of incomplete messages all connections together may hold (``--max-buffer``): four
#: packets of the default maximum size.
DEFAULT_MAX_BUFFER = 4 * DEFAULT_MAX_PACKET_SIZE
#: Seconds an incomplete message may take to arrive (``--packet-timeout``).
DEFAULT_PACKET_TIMEOUT = 30.0
#: Most functions at once (``--max-functions``).
DEFAULT_MAX_FUNCTIONS = 10_000
#: Bytes of unread output after which a connection is closed (``--max-output``): two packets of
#: the default maximum size.
DEFAULT_MAX_OUTPUT = 2 * DEFAULT_MAX_PACKET_SIZE
