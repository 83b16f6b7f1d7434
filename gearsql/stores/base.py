"""The store interface every durable queue implements, and the row it stores."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple, TypeVar

from gearsql._sqlcommon import IDENTIFIER
from gearsql._sqlcommon import check_identifier as _check_sql_name

__all__ = [
    "DEAD",
    "IDENTIFIER",
    "JOB_COLUMNS",
    "POLICIES",
    "REMEMBERED",
    "SCHEDULES",
    "SIDE_TABLES",
    "WINDOWS",
    "Changes",
    "DeadLetter",
    "RememberedUnique",
    "SideTable",
    "Store",
    "StoreError",
    "StoredJob",
    "StoredPolicy",
    "StoredSchedule",
    "StoredWindow",
    "as_bytes",
    "check_identifier",
    "from_row",
    "job_from_row",
    "side_sql",
    "side_writes",
]


def check_identifier(name: str) -> str:
    """Return ``name`` if it is a plain SQL identifier (:data:`gearsql._sqlcommon.IDENTIFIER`,
    the rule of every SQL name gearsql takes from configuration); raise ValueError otherwise."""
    return _check_sql_name(name, "table name")


class StoreError(Exception):
    """The store could not do what was asked (connection lost, disk full, bad schema)."""


class StoredJob(NamedTuple):
    """One durable job, keyed as gearmand's queue tables key it: (unique, function).

    ``retries`` counts its failed runs so far and ``error`` says why the last one failed; a job
    with failures and a ``when`` still to come is waiting for its retry (gearsql's own columns:
    gearmand neither writes nor reads them).
    """

    unique: bytes
    function: bytes
    priority: int
    data: bytes
    when: int
    retries: int = 0
    error: bytes = b""


class DeadLetter(NamedTuple):
    """A background job that used all its attempts, kept until an operator retries or purges
    it. ``id`` is the server's number for it (unique per queue table), ``died`` epoch seconds."""

    id: int
    function: bytes
    unique: bytes
    priority: int
    data: bytes
    retries: int
    error: bytes
    died: float


class StoredPolicy(NamedTuple):
    """A function's own retry policy (``retries`` admin command): ``attempts`` runs in all,
    backoff from ``base`` seconds doubling up to ``limit``."""

    function: bytes
    attempts: int
    base: float
    limit: float


class RememberedUnique(NamedTuple):
    """A background job with this (function, unique) completed; until ``expires`` (epoch
    seconds) a new submission of it is acknowledged and not run. ``result`` is its
    WORK_COMPLETE data when the server keeps results (``--keep-results``), else empty."""

    function: bytes
    unique: bytes
    expires: float
    result: bytes


class StoredWindow(NamedTuple):
    """A function's own unique window (``uniquewindow`` admin command), in seconds."""

    function: bytes
    seconds: float


class StoredSchedule(NamedTuple):
    """A recurring schedule (``schedule add``): a background job of ``function`` with ``data``
    at each time the cron expression ``spec`` matches; ``due`` is its next tick (epoch
    seconds), rewritten in the commit that holds the job of the tick before it."""

    name: bytes
    function: bytes
    spec: str
    data: bytes
    due: int


@dataclass(frozen=True)
class Changes:
    """Everything one commit writes, in this order: store ``add`` (replacing a row with the
    same unique and function) and delete ``remove`` (by unique and function; missing rows are
    no error); add the dead letters ``dead_add`` and delete those numbered ``dead_remove``; set
    the retry policies ``policies`` (replacing a function's earlier one) and delete those of
    the functions ``policies_removed``; delete every remembered unique that expires at or
    before ``remembered_expired`` (when not 0), then remember the uniques ``remembered``
    (replacing an earlier row of the same function and unique); set the unique windows
    ``windows`` and delete those of the functions ``windows_removed``; set the schedules
    ``schedules`` (replacing one of the same name) and delete those named
    ``schedules_removed``."""

    add: Sequence[StoredJob] = ()
    remove: Sequence[StoredJob] = ()
    dead_add: Sequence[DeadLetter] = ()
    dead_remove: Sequence[int] = ()
    policies: Sequence[StoredPolicy] = ()
    policies_removed: Sequence[bytes] = ()
    remembered: Sequence[RememberedUnique] = ()
    remembered_expired: float = 0.0
    windows: Sequence[StoredWindow] = ()
    windows_removed: Sequence[bytes] = ()
    schedules: Sequence[StoredSchedule] = ()
    schedules_removed: Sequence[bytes] = ()

    def __bool__(self) -> bool:
        """Whether there is anything to write."""
        return any(getattr(self, field.name) for field in fields(self))

    def only_jobs(self) -> bool:
        """Whether nothing but queue rows (``add``, ``remove``) is written: the common case,
        which some stores commit in a single statement."""
        return not any(getattr(self, name) for name in _SIDE_FIELDS)


class SideTable(NamedTuple):
    """One of gearsql's own tables beside the queue table, keyed by ``queue_table`` and then
    by the first ``key`` of ``columns``: the fields of ``row_type`` in order, with ``types``
    saying how each is read back (see :func:`from_row`). A commit upserts the rows of the
    :class:`Changes` field ``rows`` and deletes those whose key is in the field ``keys``;
    ``replace`` says whether an upsert overwrites an existing row (dead letters are only ever
    added: the first one stays). Loading returns the rows ordered by ``order`` (a column, or
    no order). The column names are SQLite's and MySQL's; the PostgreSQL store renames its
    binary ones."""

    name: str
    row_type: Callable[..., Any]
    columns: tuple[str, ...]
    types: str
    key: int
    rows: str
    keys: str | None
    order: str = ""
    replace: bool = True

    @property
    def key_columns(self) -> tuple[str, ...]:
        return self.columns[: self.key]

    @property
    def value_columns(self) -> tuple[str, ...]:
        return self.columns[self.key :]

    def load(self, rows: Iterable[Sequence[Any]]) -> list[Any]:
        """The rows a SELECT of :attr:`columns` returned, as :attr:`row_type` values."""
        return [from_row(self.row_type, self.types, row) for row in rows]


DEAD = SideTable(
    "gearsql_dead",
    DeadLetter,
    ("id", "function_name", "unique_key", "priority", "data", "retries", "error", "died"),
    "ibbibibf",
    1,
    "dead_add",
    "dead_remove",
    order="id",
    replace=False,
)
POLICIES = SideTable(
    "gearsql_retry_policy",
    StoredPolicy,
    ("function_name", "attempts", "base", "max_delay"),
    "biff",
    1,
    "policies",
    "policies_removed",
)
#: Remembered uniques have no deletion by key: their rows go when they expire
#: (``Changes.remembered_expired``), deleted before the new ones are written.
REMEMBERED = SideTable(
    "gearsql_unique",
    RememberedUnique,
    ("function_name", "unique_key", "expires", "result"),
    "bbfb",
    2,
    "remembered",
    None,
)
WINDOWS = SideTable(
    "gearsql_unique_window",
    StoredWindow,
    ("function_name", "seconds"),
    "bf",
    1,
    "windows",
    "windows_removed",
)
SCHEDULES = SideTable(
    "gearsql_schedule",
    StoredSchedule,
    ("name", "function_name", "spec", "data", "due"),
    "bbtbi",
    1,
    "schedules",
    "schedules_removed",
    order="name",
)

#: The side tables in the order a commit writes them.
SIDE_TABLES = (DEAD, POLICIES, REMEMBERED, WINDOWS, SCHEDULES)

#: The queue table's columns, as :class:`StoredJob` has them (the queue table's layout is
#: gearmand's, with gearsql's ``gearsql_retries`` and ``gearsql_error``).
JOB_COLUMNS = (
    "unique_key",
    "function_name",
    "priority",
    "data",
    "when_to_run",
    "gearsql_retries",
    "gearsql_error",
)
JOB_TYPES = "bbibiib"

_SIDE_FIELDS = (
    "remembered_expired",
    *(name for table in SIDE_TABLES for name in (table.rows, table.keys) if name),
)


def side_writes(
    changes: Changes, queue_table: str
) -> Iterator[tuple[SideTable, str, list[tuple[Any, ...]]]]:
    """The side tables' part of ``changes``, in commit order: ``(table, action, parameters)``
    with ``action`` one of ``"expire"`` (one row of parameters: the queue table and the time),
    ``"upsert"`` (a row per ``(queue_table, *row)``) and ``"delete"`` (``(queue_table,
    key)``). Each store turns a table and action into its own dialect's statement."""
    for table in SIDE_TABLES:
        if table is REMEMBERED and changes.remembered_expired:
            yield table, "expire", [(queue_table, changes.remembered_expired)]
        rows = getattr(changes, table.rows)
        if rows:
            yield table, "upsert", [(queue_table, *row) for row in rows]
        keys = getattr(changes, table.keys) if table.keys else ()
        if keys:
            yield table, "delete", [(queue_table, key) for key in keys]


def side_sql(
    table: SideTable,
    action: str,
    mark: Callable[[str], str],
    insert: str,
    conflict: str = "",
    column: Callable[[str], str] = str,
) -> str:
    """A dialect's statement for one action of :func:`side_writes`. ``mark(kind)`` is its
    placeholder for a value of that kind (a letter of :attr:`SideTable.types`; ``t`` for the
    queue table's name), ``insert`` how an upsert starts (``INSERT OR REPLACE``, ``INSERT``),
    ``conflict`` what follows its VALUES, and ``column`` the dialect's name of a column."""
    queue = mark("t")
    if action == "expire":
        return f"DELETE FROM {table.name} WHERE queue_table = {queue} AND expires <= {mark('f')}"
    if action == "delete":
        key = table.columns[0]
        return (
            f"DELETE FROM {table.name} WHERE queue_table = {queue}"
            f" AND {column(key)} = {mark(table.types[0])}"
        )
    columns = ", ".join(map(column, table.columns))
    marks = ", ".join(mark(kind) for kind in table.types)
    return (
        f"{insert} INTO {table.name} (queue_table, {columns}) VALUES ({queue}, {marks}){conflict}"
    )


def as_bytes(value: Any) -> bytes:
    """A column's value as bytes: NULL as empty, text as UTF-8."""
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


_READ: dict[str, Callable[[Any], Any]] = {
    "b": as_bytes,
    "i": lambda value: int(value or 0),
    "f": lambda value: float(value or 0),
    "t": lambda value: as_bytes(value).decode("utf-8", "replace"),
}

R = TypeVar("R")


def from_row(row_type: Callable[..., R], types: str, row: Sequence[Any]) -> R:
    """``row_type`` of a row as a driver returned it, each value read as ``types`` says:
    ``b`` bytes (NULL as empty), ``i`` an int, ``f`` a float (NULL as 0), ``t`` text. Every
    driver's values fit: text, bytes, memoryviews, and numbers as numbers or as digits."""
    return row_type(*(_READ[kind](value) for kind, value in zip(types, row, strict=True)))


def job_from_row(row: Sequence[Any]) -> StoredJob:
    """A :class:`StoredJob` of a row of :data:`JOB_COLUMNS`."""
    return from_row(StoredJob, JOB_TYPES, row)


class Store(abc.ABC):
    """Where background jobs live until they finish.

    Life cycle: :meth:`open` once (raises :class:`StoreError` when the store cannot be reached:
    the server then refuses to start), :meth:`load` to replay, then any number of :meth:`commit`
    calls, and :meth:`close`. The server never runs two commits of one store at once, and it
    acknowledges a background job (JOB_CREATED) only after the commit that holds it returned.
    """

    #: False for a store that keeps nothing (the server then skips it entirely).
    durable: bool = True

    #: Shown at start-up: where the jobs are kept.
    description: str = ""

    async def open(self) -> None:  # noqa: B027 (optional hook)
        """Connect, create or migrate the table. Raises StoreError."""

    @abc.abstractmethod
    async def load(self) -> list[StoredJob]:
        """Every stored job, oldest first, for replay at start-up. Raises StoreError."""

    async def commit(
        self, changes: Changes | Sequence[StoredJob], remove: Sequence[StoredJob] = (), **more: Any
    ) -> None:
        """Write ``changes`` (see :class:`Changes`) in one transaction; return once it is
        committed. Raises StoreError; then nothing of it is committed. Running the same commit
        twice is harmless.

        ``commit(add, remove, **more)`` is short for ``commit(Changes(add, remove, **more))``.
        """
        if not isinstance(changes, Changes):
            changes = Changes(changes, remove, **more)
        elif remove or more:
            raise TypeError("commit(changes) takes nothing besides the Changes")
        await self.write(changes)

    @abc.abstractmethod
    async def write(self, changes: Changes) -> None:
        """What :meth:`commit` does, given the :class:`Changes`: the method a store implements."""

    async def load_dead(self) -> list[DeadLetter]:
        """Every dead letter, oldest first, for replay at start-up. Raises StoreError."""
        return []

    async def load_policies(self) -> list[StoredPolicy]:
        """Every function's own retry policy. Raises StoreError."""
        return []

    async def load_remembered(self) -> list[RememberedUnique]:
        """Every remembered unique (expired ones included: the server skips them). Raises
        StoreError."""
        return []

    async def load_windows(self) -> list[StoredWindow]:
        """Every function's own unique window. Raises StoreError."""
        return []

    async def load_schedules(self) -> list[StoredSchedule]:
        """Every recurring schedule. Raises StoreError."""
        return []

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Release connections and files."""
