"""Log lines a peer can provoke, under a rate limit per kind of line (docs/reliability.md).

:class:`RateLimitedLog` keeps a token bucket per kind (``key``): a flood of one kind costs a few
lines a second, one event alone is always logged, and the first line after a held-back run says
how many were held back. The job server (gearsql.server) logs through one.
"""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["RateLimitedLog"]

#: Log rate limit: lines of one kind logged in a burst, and lines a second after it.
_LOG_BURST = 5
_LOG_RATE = 1.0


class RateLimitedLog:
    """Writes to ``logger``, at most a burst and then a rate of lines of each kind."""

    __slots__ = ("_buckets", "_suppressed", "logger")

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        #: Tokens and when they were last counted, per kind of line.
        self._buckets: dict[str, tuple[float, float]] = {}
        self._suppressed: dict[str, int] = {}

    def log(
        self,
        level: int,
        key: str,
        message: str,
        *args: Any,
        exc_info: BaseException | None = None,
    ) -> None:
        """Log unless lines of this kind (``key``) come too fast; say how many were held back.

        Each kind has a bucket of ``_LOG_BURST`` lines, refilled at ``_LOG_RATE`` lines a second
        (ten times that for INFO and DEBUG lines, which only a verbose server writes).
        """
        log = self.logger
        if not log.isEnabledFor(level):
            return
        now = time.monotonic()
        rate = _LOG_RATE * (10 if level < logging.WARNING else 1)
        burst = _LOG_BURST * (10 if level < logging.WARNING else 1)
        if len(self._buckets) > 1000:  # keys are kinds, not peers; stay bounded anyway
            self._buckets.clear()
        tokens, last = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._buckets[key] = (tokens - 1.0, now)
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        log.log(level, message, *args, exc_info=exc_info)
