"""gearsql: a Gearman job server, client library and SQL bridge."""

from gearsql.protocol import (
    AdminLine,
    LocalProtocolError,
    Packet,
    PacketType,
    Parser,
    Violation,
    pack,
)

__version__ = "0.1.0"

__all__ = [
    "AdminLine",
    "LocalProtocolError",
    "Packet",
    "PacketType",
    "Parser",
    "Violation",
    "__version__",
    "pack",
]
