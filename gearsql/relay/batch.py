"""The relay's decisions without I/O: what to submit for each outbox row, what a batch's outcomes
mean for its rows (submitted, dead for good, or to try again), and when an outage starts and ends
(so it is logged once, not per row).

A row is *dead* when no job server will ever take it, so that it must not wait in the outbox
forever and hold up the rows behind it: the client refused it before sending (a function name
or unique that breaks the protocol), a job server refused it with an ERROR that retrying cannot
change (:data:`PERMANENT_ERRORS`, e.g. ``ARGUMENT_TOO_LARGE`` for a packet above the server's
``--max-packet-size``), or the connection broke each time the row was submitted alone
(:class:`Strikes`): a job server closes the connection after refusing a packet that is too large,
and the reset that follows can destroy the ERROR before the relay reads it.

This module imports neither asyncio nor the client: what needs them (a row's
:class:`~gearsql.client.Priority`, the wording of a submission's error) is in
:mod:`gearsql.relay.engine`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gearsql._log import reason
from gearsql.errors import ConnectionLost, InvalidArgument, InvalidPayload, ServerError
from gearsql.protocol import MAX_UNIQUE, Priority

__all__ = [
    "MAX_PREFIX",
    "PERMANENT_ERRORS",
    "Outage",
    "OutboxRow",
    "Settlement",
    "Strikes",
    "as_bytes",
    "check_unique_prefix",
    "default_unique_prefix",
    "inline_bytes",
    "row_from_values",
    "rows_from_claim",
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


def as_bytes(value: Any) -> bytes:
    """A name or payload as a database driver returns it (bytes, bytearray, memoryview or str,
    the latter in UTF-8) as bytes."""
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
        int(id_),
        as_bytes(function),
        as_bytes(unique) if unique else None,
        as_bytes(workload),
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


def inline_bytes(limit: int, max_bytes: int) -> int:
    """The largest workload a claim of ``limit`` rows reads along with its row, so that the
    workloads read inline fit in ``max_bytes`` together; a larger one is read apart (see
    :func:`rows_from_claim`), and only when its row is within the budget."""
    return max(1, max_bytes // max(1, limit))


def rows_from_claim(
    claimed: Sequence[Sequence[Any]],
    max_bytes: int,
    read_apart: Callable[[list[int]], Mapping[int, Any]],
) -> list[OutboxRow]:
    """The rows of one locking read of ``(id, function, unique_key, workload, priority,
    workload size)`` in id order, whose workload is None where it was too large to read inline
    (:func:`inline_bytes`): those of the longest prefix whose workloads fit in ``max_bytes``
    (:func:`take_within`), the missing workloads read by ``read_apart(ids)`` (id -> workload),
    called only when some are missing."""
    count = len(take_within([(int(row[0]), int(row[5])) for row in claimed], max_bytes))
    kept = claimed[:count]
    missing = [int(row[0]) for row in kept if row[3] is None]
    apart = read_apart(missing) if missing else {}
    return [
        row_from_values(row[:5] if row[3] is not None else (*row[:3], apart[int(row[0])], row[4]))
        for row in kept
    ]


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


#: Codes of a job server's ERROR reply to a submission that the same row would get again.
PERMANENT_ERRORS = frozenset({"ARGUMENT_TOO_LARGE", "INVALID_ARGUMENT"})


class RowLostConnection(Exception):
    """Why a row that broke the connection every time it went alone is dead."""


class Strikes:
    """Rows that were in flight alone when the connection to a job server broke.

    When a batch loses its connection, any of its rows may be the cause, so the relay submits
    the rows that were in flight one at a time (:attr:`isolating`) until each went through or is
    dead. A row that loses the connection ``limit`` times in a row while alone is dead: a job
    server that is merely restarting refuses the next connection instead (ServerUnavailable,
    which is no strike), or takes the row the next time.
    """

    def __init__(self, limit: int = 3) -> None:
        self.limit = limit
        #: Row id -> connections lost while it was submitted alone.
        self.counts: dict[int, int] = {}
        #: Ids of a batch that lost its connection, not yet tried one at a time.
        self.suspects: set[int] = set()

    @property
    def isolating(self) -> bool:
        """True while rows are to be claimed one at a time."""
        return bool(self.suspects)

    def claimed(self, ids: Sequence[int]) -> None:
        """Rows come in id order: a claim past every suspect means the others are gone (another
        relay took them), so isolating ends."""
        if self.suspects and ids and ids[0] > max(self.suspects):
            self.suspects.clear()

    def lost(self, row_id: int) -> int:
        """Count a lost connection of a row submitted alone; return its strikes."""
        self.counts[row_id] = self.counts.get(row_id, 0) + 1
        return self.counts[row_id]

    def settled(self, ids: Sequence[int]) -> None:
        """Forget rows that left the outbox."""
        for row_id in ids:
            self.counts.pop(row_id, None)
            self.suspects.discard(row_id)


@dataclass
class Settlement:
    """What to do with a submitted batch's rows."""

    #: Rows the job server confirmed (JOB_CREATED): delete them.
    done: list[int] = field(default_factory=list)
    #: Rows no job server will ever take: move them to the dead letters, and say so at ERROR
    #: level (once per row).
    refused: list[tuple[OutboxRow, BaseException]] = field(default_factory=list)
    #: Rows not confirmed (no server, connection lost, timeout, stopped): keep them.
    failed: list[tuple[OutboxRow, BaseException]] = field(default_factory=list)

    @property
    def finished(self) -> list[int]:
        """The ids that leave the outbox."""
        return self.done + [row.id for row, _ in self.refused]

    @property
    def dead(self) -> list[tuple[int, str]]:
        """``(id, reason)`` of the refused rows, for the dead letters."""
        return [(row.id, dead_reason(row, exc)) for row, exc in self.refused]


def dead_reason(row: OutboxRow, exc: BaseException) -> str:
    """Why a row is dead, in words for a database administrator."""
    if isinstance(exc, ServerError):
        return (
            f"the job server refused it: {exc.code} {exc.text} ({len(row.workload)} bytes "
            "of workload)"
        ).rstrip()
    return reason(exc)


def _permanent(outcome: object) -> bool:
    if isinstance(outcome, (InvalidArgument, InvalidPayload)):
        return True
    return isinstance(outcome, ServerError) and outcome.code in PERMANENT_ERRORS


def settle(
    rows: Sequence[OutboxRow], outcomes: Sequence[object], strikes: Strikes | None = None
) -> Settlement:
    """Sort ``rows`` by the outcome of their submission (a job handle, or the exception).

    With ``strikes``, a lost connection of a row submitted alone counts against it (dead after
    ``strikes.limit``), and a batch that lost its connection for no reason a refusal explains
    makes its unconfirmed rows suspects, to be tried one at a time."""
    settlement = Settlement()
    alone = len(rows) == 1
    for row, outcome in zip(rows, outcomes, strict=True):
        if _permanent(outcome):
            settlement.refused.append((row, outcome))  # type: ignore[arg-type]
        elif (
            isinstance(outcome, ConnectionLost)
            and alone
            and strikes is not None
            and (strikes.lost(row.id) >= strikes.limit)
        ):
            settlement.refused.append(
                (
                    row,
                    RowLostConnection(
                        "the job server closed the connection each of the "
                        f"{strikes.limit} times it was submitted alone "
                        f"({len(row.workload)} bytes of workload: is it larger than the server's "
                        "maximum packet size?)"
                    ),
                )
            )
        elif isinstance(outcome, BaseException):
            settlement.failed.append((row, outcome))
        else:
            settlement.done.append(row.id)
    if strikes is not None:
        strikes.settled(settlement.finished)
        lost = [row.id for row, exc in settlement.failed if isinstance(exc, ConnectionLost)]
        explained = any(isinstance(exc, ServerError) for _, exc in settlement.refused)
        if lost and not alone and not explained:
            strikes.suspects.update(lost)
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
