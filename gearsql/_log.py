"""What gearsql's log lines and error messages share: the NOTICE level, and how an exception
is told on one line."""

from __future__ import annotations

import logging

__all__ = ["NOTICE", "reason"]

#: Between INFO and WARNING, as in gearmand: starts, stops, outages and their ends.
NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")


def reason(exc: BaseException | str) -> str:
    """An exception's message (or a driver's message text) on one line: libpq's and others'
    span lines. An exception without a message is told by its class's name."""
    text = " ".join(str(exc).split())
    if not text and isinstance(exc, BaseException):
        return type(exc).__name__
    return text
