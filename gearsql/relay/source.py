"""The interface between the relay and one database's outbox (:class:`Source`); the sources
themselves are ``_postgres``, ``_mysql`` and ``_sqlite``, chosen from a DSN by
:func:`gearsql.relay.dsn.open_source`."""

from __future__ import annotations

import abc
import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

from gearsql.relay.batch import OutboxRow

if TYPE_CHECKING:
    from gearsql.client import AsyncClient

__all__ = [
    "SENT_KEEP_IDS",
    "SENT_KEEP_SECONDS",
    "SOURCES",
    "SQLITE_OUTBOX_ORIGIN",
    "OutboxMissing",
    "Sent",
    "SideTask",
    "Source",
    "Wake",
    "close_quietly",
    "connect_file",
]

#: How a relay may learn of new rows; ``auto`` picks the best the database offers.
SOURCES = ("auto", "listen", "binlog", "poll")

#: How a source hears of new rows: PostgreSQL's ``listen``, MySQL's ``binlog``, SQLite's
#: ``change counter``, or nothing (``poll``: the relay only looks every ``poll_interval``).
Wake = Literal["listen", "binlog", "change counter", "poll"]

#: Another kind of work the relay does for a database beside draining its outbox, such as
#: MariaDB's foreground calls: called once with the relay's job server client and its stop
#: event, it runs until the event is set (and must handle its own database errors).
SideTask = Callable[["AsyncClient", asyncio.Event], Awaitable[None]]


#: ``gman_outbox_sent`` keeps a submitted row for this long ...
SENT_KEEP_SECONDS = 24 * 3600
#: ... and only the rows of the last this many outbox ids: the relay deletes older ones in the
#: transaction that adds a batch (two range deletes on indexes), so the table stays bounded.
SENT_KEEP_IDS = 100_000


class Sent(NamedTuple):
    """A row the job server took: kept in ``gman_outbox_sent`` so that ``gman_job_status``
    can answer ``submitted`` with the job server's handle."""

    id: int
    function: bytes
    handle: str
    server: str


class OutboxMissing(ValueError):
    """The database has no outbox: the functions were never installed there, or the DSN names
    the wrong database or file. A configuration error, which waiting will not heal (unlike a
    database that is down), so the relay stops; ``gearsql relay`` exits with status 2."""


#: Where an SQLite file's outbox comes from, for the errors that find none.
SQLITE_OUTBOX_ORIGIN = (
    "it is made by gearsql.sqlite.register() (or connect()) in the transactional background "
    "mode; is this the application's database?"
)


def connect_file(path: str) -> sqlite3.Connection:
    """A connection to the SQLite file at ``path`` (which must exist: :class:`OutboxMissing`)
    in autocommit mode (``isolation_level=None``), as the relay uses it."""
    if not os.path.exists(path):
        # A file cannot be "down": a missing one is a wrong path (sqlite:///relative.db is
        # relative to the current directory), or a relay started before its application.
        raise OutboxMissing(
            f"no SQLite database at {path}: check the path (sqlite:///relative.db, "
            "sqlite:////absolute.db), and start the relay after the application made it"
        )
    return sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)


class Source(abc.ABC):
    """One database's outbox.

    The blocking methods (:meth:`open`, :meth:`claim`, :meth:`finish`, :meth:`close`,
    :meth:`side_tasks`) are called one at a time from the relay's database thread; an exception
    from :meth:`open`, :meth:`claim` or :meth:`finish` means the connection is broken: the
    relay closes the source, waits, and opens it again. ValueError from :meth:`open` (such as
    :class:`OutboxMissing`) is a configuration error and stops the relay. :meth:`watch` runs on
    the event loop.
    """

    #: How this source hears of new rows (see :data:`Wake`).
    wake: Wake = "poll"
    #: Whether the database has the dead-letter table ``gman_outbox_dead`` (valid after
    #: :meth:`open`); without it (an install older than the table) dead rows are deleted.
    keeps_dead = False
    #: The database's ``servers`` setting, the job servers its gman_* functions may reach
    #: (valid after :meth:`open`); None where the database keeps no such setting (SQLite: its
    #: functions are given their servers by the application) or the relay may not read it.
    #: The relay submits to these unless it was given servers explicitly.
    servers_setting: str | None = None

    @abc.abstractmethod
    def open(self) -> None:
        """Connect (again)."""

    @abc.abstractmethod
    def identity(self) -> str:
        """A name of the outbox that is the same for every relay on it (valid after
        :meth:`open`): the default unique prefix is derived from it."""

    def describe(self) -> str:
        """The outbox for log lines (no password)."""
        return self.identity()

    @abc.abstractmethod
    def claim(self, limit: int, max_bytes: int, skip: Collection[bytes] = ()) -> list[OutboxRow]:
        """Lock and return the oldest rows no other relay holds: at most ``limit``, with
        workloads of at most ``max_bytes`` together (but at least one row), none of a function
        in ``skip`` (functions whose own job servers are down: their rows wait while the others
        go). The transaction stays open until :meth:`finish`; with no rows it is ended and []
        returned."""

    @abc.abstractmethod
    def finish(
        self, ids: list[int], dead: Sequence[tuple[int, str]] = (), sent: Sequence[Sent] = ()
    ) -> None:
        """Delete the rows ``ids`` (submitted), move the rows of ``dead`` (``(id, reason)``,
        never to be submitted) into ``gman_outbox_dead`` with their reason (or delete them too
        where there is no such table), record ``sent`` (the handles of the submitted rows) in
        ``gman_outbox_sent`` with one multi-row insert where the table exists, pruning it to
        :data:`SENT_KEEP_SECONDS` and :data:`SENT_KEEP_IDS`, and commit, which also lets go of
        the other claimed rows: one transaction, so a row is in exactly one of the tables."""

    def contact(self, relay: str, servers: str) -> None:
        """Record that ``relay`` (host:pid) is draining this outbox into ``servers`` now, in
        ``gman_relay_contact`` where the table exists (its own short transaction, between
        batches; the relay calls it every few seconds). The default records nothing."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Disconnect; safe to call on a broken or closed source."""

    async def watch(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` whenever rows may have been committed, until cancelled; raise when
        the way of hearing of them breaks (the relay polls meanwhile and watches again later).
        The default hears nothing: the relay polls."""
        await asyncio.Event().wait()

    def function_servers(self) -> dict[bytes, str]:
        """The functions whose jobs go to servers of their own (``gman_servers_set(servers,
        function)``, the table ``gman_function_servers``): function name -> server list. Called
        right after a :meth:`claim` that returned rows (in its transaction) and between
        batches (then ending any transaction it began). {} where there is no such table, or the
        relay may not read it. The default has none."""
        return {}

    def side_tasks(self) -> list[SideTask]:
        """More work for the relay beside the outbox (see :data:`SideTask`); asked once, after
        the first successful :meth:`open`, on the database thread."""
        return []


class Closable(Protocol):
    """A database connection, as far as :func:`close_quietly` uses it."""

    def close(self) -> None: ...


def close_quietly(conn: Closable | None) -> None:
    """Close a database connection that may be broken or None; for :meth:`Source.close`."""
    if conn is not None:
        try:
            conn.close()
        except Exception:  # already broken
            pass
