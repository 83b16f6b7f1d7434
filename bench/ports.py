"""Free loopback ports for the servers a benchmark starts.

Below Linux's ephemeral range (32768-60999), as in the tests (tests/conftest.py): a port the
kernel hands out with ``bind(("127.0.0.1", 0))`` comes from that range, and the load
generator's own outgoing connections draw their local ports from it too, so one of them could
take the port between the moment it is found free and the moment the server binds it.
"""

from __future__ import annotations

import random
import socket

__all__ = ["free_port"]

#: Ports handed to servers; random, so that runs beside each other rarely pick the same.
PORTS = (20000, 32000)
_RANDOM = random.SystemRandom()


def free_port() -> int:
    """A loopback port in ``PORTS`` that nothing listens on now."""
    for _ in range(200):
        port = _RANDOM.randint(*PORTS)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free loopback port in {PORTS[0]}-{PORTS[1]}")
