"""The relay's decisions without I/O: what to submit for each outbox row, what a batch's outcomes
mean for its rows, and when an outage starts and ends (so it is logged once, not per row).

This module imports neither asyncio nor the client: what needs them (a row's
:class:`~gearsql.client.Priority`, the wording of a submission's error) is in
:mod:`gearsql.relay.engine`."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gearsql.errors import InvalidArgument, InvalidPayload
from gearsql.protocol import MAX_UNIQUE, Priority

__all__ = [
    "MAX_PREFIX",
    "Outage",
    "OutboxRow",
    "Settlement",
    "check_unique_prefix",
    "default_unique_prefix",
    "row_from_values",
    "settle",
    "take_within",
    "unique_for",
]

#: A relay-made unique is the prefix and the decimal outbox id (at most 20 digits, a BIGINT):
#: a longer prefix could not hold every id within the protocol's 64 bytes.
MAX_PREFIX = MAX_UNIQUE - 20


@dataclass(frozen=True)
class OutboxRow:
    """One outbox row as the relay submits it; ``priority`` is the column's text (``high``,
    ``normal`` or ``low``; anything else is submitted as normal)."""

    id: int
    function: bytes
    unique: bytes | None
    workload: bytes
    #: The outbox's word for it: ``high``, ``normal`` or ``low`` (see :attr:`Priority.word`).
    priority: str

    @property
    def level(self) -> Priority:
        """The priority to submit with (NORMAL for a word the outbox's CHECK should have kept
        out)."""
        try:
            return Priority.from_word(self.priority)
        except ValueError:
            return Priority.NORMAL


def _bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def row_from_values(values: Sequence[Any]) -> OutboxRow:
    """An :class:`OutboxRow` from ``(id, function, unique_key, workload, priority)`` as a
    database driver returns them (bytes, bytearray, memoryview or str)."""
    id_, function, unique, workload, priority = values
    if isinstance(priority, (bytes, bytearray)):
        priority = priority.decode("ascii")
    return OutboxRow(
        int(id_), _bytes(function), _bytes(unique) if unique else None, _bytes(workload),
        str(priority),
    )


def take_within(sizes: Sequence[tuple[int, int]], max_bytes: int) -> list[int]:
    """The ids of the longest prefix of ``(id, workload size)`` whose workloads fit in
    ``max_bytes`` together; never empty when ``sizes`` is not (a single row larger than the
    budget still goes, alone)."""
    ids: list[int] = []
    total = 0
    for id_, size in sizes:
        total += size
        if ids and total > max_bytes:
            break
        ids.append(id_)
    return ids


def check_unique_prefix(prefix: str) -> bytes:
    """The prefix as bytes; ValueError when a relay-made unique could be cut short (longer than
    :data:`MAX_PREFIX` bytes) or hold a NUL."""
    raw = prefix.encode("utf-8")
    if len(raw) > MAX_PREFIX:
        raise ValueError(
            f"the unique prefix {prefix!r} is {len(raw)} bytes; at most {MAX_PREFIX} leave room "
            "for every outbox id within Gearman's 64-byte unique"
        )
    if b"\0" in raw:
        raise ValueError("the unique prefix must not contain a NUL byte")
    return raw


def default_unique_prefix(identity: str) -> str:
    """``outbox:<crc32 of the outbox's identity>:``: the same for every relay of one outbox (so
    a resubmission coalesces), different for outboxes that share a job server."""
    return f"outbox:{zlib.crc32(identity.encode('utf-8')):08x}:"


def unique_for(row: OutboxRow, prefix: bytes) -> bytes:
    """The unique a row is submitted with: its own, else ``prefix`` + its id."""
    if row.unique:
        return row.unique
    return prefix + str(row.id).encode("ascii")


@dataclass
class Settlement:
    """What to do with a submitted batch's rows."""

    #: Rows the job server confirmed (JOB_CREATED): delete them.
    done: list[int] = field(default_factory=list)
    #: Rows no job server will ever take (a function name or unique that breaks the protocol):
    #: delete them too, and say so at ERROR level.
    refused: list[tuple[OutboxRow, BaseException]] = field(default_factory=list)
    #: Rows not confirmed (no server, connection lost, timeout, stopped): keep them.
    failed: list[tuple[OutboxRow, BaseException]] = field(default_factory=list)

    @property
    def finished(self) -> list[int]:
        """The ids to delete."""
        return self.done + [row.id for row, _ in self.refused]


def settle(rows: Sequence[OutboxRow], outcomes: Sequence[object]) -> Settlement:
    """Sort ``rows`` by the outcome of their submission (a job handle, or the exception)."""
    settlement = Settlement()
    for row, outcome in zip(rows, outcomes, strict=True):
        if isinstance(outcome, (InvalidArgument, InvalidPayload)):
            settlement.refused.append((row, outcome))
        elif isinstance(outcome, BaseException):
            settlement.failed.append((row, outcome))
        else:
            settlement.done.append(row.id)
    return settlement


class Outage:
    """Whether something the relay needs (the job server, the database) is down, so that the
    log says when an outage starts and ends, and not once per retry or per row."""

    def __init__(self) -> None:
        self.since: float | None = None

    def failed(self, now: float) -> bool:
        """Record a failure; True when it starts an outage (log it)."""
        if self.since is not None:
            return False
        self.since = now
        return True

    def recovered(self, now: float) -> float | None:
        """Record a success; the outage's length when it ends one (log it), else None."""
        if self.since is None:
            return None
        length, self.since = now - self.since, None
        return length

    @property
    def down(self) -> bool:
        return self.since is not None
