"""The relay: submits the committed rows of a database's outbox as background jobs.

In the transactional mode the ``gman_do*_background`` SQL functions write a row into
``gman_outbox`` inside the caller's transaction. The relay reads only committed rows, so a
transaction that rolls back never starts a job, and a worker never runs before the row that
triggered it is visible. For each batch it

1. claims up to ``batch`` rows in a transaction that locks them (``FOR UPDATE SKIP LOCKED`` in
   PostgreSQL and MariaDB ≥ 10.6 / MySQL 8, so two relays never hold the same row; ``BEGIN
   IMMEDIATE`` in SQLite),
2. submits every row as a background job with its priority, all in flight at once, with the
   row's own unique or ``<prefix><outbox id>`` as unique,
3. deletes the rows whose JOB_CREATED arrived and commits; rows not confirmed stay.

A relay killed between 2 and 3 leaves its rows in place; the next one submits them again with the
same unique, which the job server coalesces while the first job is still queued (if it already
ran, it runs twice: handlers must be idempotent). While no job server answers, rows wait in the
outbox and the relay retries with backoff.

Sources differ only in how they hear of new rows (:meth:`Source.watch`): PostgreSQL ``LISTEN
gearsql_outbox`` (the outbox insert notifies, which is delivered at commit), MariaDB/MySQL row
events of the outbox table in the binlog (``mysql-replication``; written at commit), SQLite's
change counter. Every relay also polls every ``poll_interval`` seconds, so a missed wake-up only
delays a row: the table is the only source of truth.

Database calls are blocking (psycopg, sqlite3, mysql-connector) and run on one thread per relay;
the submissions run on the event loop through :class:`gearsql.client.AsyncClient`.

Other work for a database plugs in as a :data:`SideTask`: a coroutine function given the relay's
client and stop event, returned by :meth:`Source.side_tasks` or passed as ``Relay(...,
side_tasks=[...])``. MariaDB's foreground ``gman_do`` calls are served that way.
"""

from gearsql.relay.batch import OutboxRow, default_unique_prefix
from gearsql.relay.dsn import open_source
from gearsql.relay.engine import Relay, run_relays
from gearsql.relay.source import SOURCES, SideTask, Source

__all__ = [
    "SOURCES",
    "OutboxRow",
    "Relay",
    "SideTask",
    "Source",
    "default_unique_prefix",
    "open_source",
    "run_relays",
]
