"""The job server's Prometheus metrics, written in the text exposition format (version 0.0.4).

Served at ``GET /metrics`` on the HTTP port (``--http-port``). Everything is read from counters
the core and the server keep anyway, at scrape time: serving metrics adds no work per job. The
format is written here rather than with ``prometheus_client``, which would need its own
registry mirrored from these counters on every scrape, and a runtime dependency.

Per function (label ``function``; bytes that are not UTF-8 are shown as ``\\xNN``): jobs queued
per priority, running, workers, event counters and the job wait and run time histograms. A
function's series go when the server forgets the function (no worker, no job, no ``maxqueue``).
Per server: connections per protocol, bytes received and sent, the store's commit time and the
jobs waiting for a commit. Per relay inside the server (``--relay``): the outbox's backlog, its
lag (the oldest row's age) and its dead letters, as last read by
:class:`gearsql.relay.watch.RelayWatch` (every few seconds, in a thread: a scrape never waits
on a database).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from gearsql._corestate import TIME_BUCKETS, Function, Histogram
from gearsql.protocol import Priority

if TYPE_CHECKING:
    from gearsql._serverview import ServerView
    from gearsql.relay.watch import RelayWatch

__all__ = ["CONTENT_TYPE", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: (name, help, attribute of Function) of the per-function counters.
_FUNCTION_COUNTERS = (
    (
        "gearsql_jobs_submitted_total",
        "Jobs created: submitted, or read back from the store.",
        "submitted",
    ),
    ("gearsql_jobs_completed_total", "Jobs a worker completed (WORK_COMPLETE).", "completed"),
    ("gearsql_jobs_failed_total", "Runs a worker failed (WORK_FAIL).", "failed"),
    ("gearsql_jobs_exceptions_total", "Runs that raised (WORK_EXCEPTION).", "exceptions"),
    ("gearsql_jobs_retried_total", "Failed runs scheduled to run again (retry policy).", "retried"),
    ("gearsql_jobs_dead_total", "Jobs kept as dead letters after their last failed run.", "dead"),
)


def _label(value: bytes) -> str:
    text = value.decode("utf-8", "backslashreplace")
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def _histogram(lines: list[str], name: str, labels: str, histogram: Histogram) -> None:
    """The ``_bucket`` (cumulative), ``_sum`` and ``_count`` lines of one histogram."""
    prefix = labels + "," if labels else ""
    total = 0
    counts = histogram.counts
    for bound, count in zip(TIME_BUCKETS, counts[:-1], strict=True):
        total += count
        lines.append(f'{name}_bucket{{{prefix}le="{bound}"}} {total}')
    total += counts[-1]
    lines.append(f'{name}_bucket{{{prefix}le="+Inf"}} {total}')
    braces = "{" + labels + "}" if labels else ""
    lines.append(f"{name}_sum{braces} {_number(histogram.sum)}")
    lines.append(f"{name}_count{braces} {total}")


def _family(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")


def render_metrics(server: ServerView) -> bytes:
    """The server's metrics now, in the text exposition format."""
    functions: Iterable[Function] = sorted(server.core.functions.values(), key=lambda f: f.name)
    named = [(f'function="{_label(fn.name)}"', fn) for fn in functions]
    lines: list[str] = []

    _family(
        lines,
        "gearsql_jobs_queued",
        "gauge",
        "Jobs waiting to run (queued, due later, retrying or being stored), per priority.",
    )
    for labels, fn in named:
        for priority in Priority:
            lines.append(
                f'gearsql_jobs_queued{{{labels},priority="{priority.word}"}} {fn.waiting[priority]}'
            )
    _family(lines, "gearsql_jobs_running", "gauge", "Jobs a worker is running.")
    lines += [f"gearsql_jobs_running{{{labels}}} {fn.running}" for labels, fn in named]
    _family(lines, "gearsql_workers", "gauge", "Worker connections that registered the function.")
    lines += [f"gearsql_workers{{{labels}}} {len(fn.workers)}" for labels, fn in named]
    for name, help_text, attribute in _FUNCTION_COUNTERS:
        _family(lines, name, "counter", help_text)
        lines += [f"{name}{{{labels}}} {getattr(fn, attribute)}" for labels, fn in named]
    _family(
        lines,
        "gearsql_job_wait_seconds",
        "histogram",
        "Seconds a job was runnable before a worker took it.",
    )
    for labels, fn in named:
        _histogram(lines, "gearsql_job_wait_seconds", labels, fn.wait_time)
    _family(
        lines,
        "gearsql_job_run_seconds",
        "histogram",
        "Seconds from a worker taking a job to its end (complete, fail, or worker lost).",
    )
    for labels, fn in named:
        _histogram(lines, "gearsql_job_run_seconds", labels, fn.run_time)

    _family(lines, "gearsql_connections", "gauge", "Open connections, per protocol.")
    lines.append(f'gearsql_connections{{protocol="gearman"}} {len(server.connections)}')
    lines.append(f'gearsql_connections{{protocol="http"}} {len(server.http_connections)}')
    _family(lines, "gearsql_received_bytes_total", "counter", "Bytes read from connections.")
    lines.append(f"gearsql_received_bytes_total {server.bytes_in}")
    _family(lines, "gearsql_sent_bytes_total", "counter", "Bytes written to connections.")
    lines.append(f"gearsql_sent_bytes_total {server.bytes_out}")
    _family(
        lines,
        "gearsql_store_commit_seconds",
        "histogram",
        "Seconds one group commit of the durable store took.",
    )
    _histogram(lines, "gearsql_store_commit_seconds", "", server.commit_time)
    _family(
        lines,
        "gearsql_store_pending_jobs",
        "gauge",
        "Background jobs waiting for the store's next commit.",
    )
    lines.append(f"gearsql_store_pending_jobs {len(server.core.to_store)}")
    if server.relay_watch is not None:
        _relays(lines, server.relay_watch)
    return ("\n".join(lines) + "\n").encode("utf-8")


def _relays(lines: list[str], watch: RelayWatch) -> None:
    """Per relay inside the server (label ``relay``: its DSN without the password), from the
    last reading of its outbox; a relay not read yet has only ``gearsql_relay_up``."""
    readings = sorted(watch.readings.values(), key=lambda reading: reading.relay)
    named = [(f'relay="{_label(r.relay.encode())}"', r) for r in readings]
    _family(lines, "gearsql_relay_up", "gauge", "Whether the last reading of the outbox worked.")
    lines += [
        f"gearsql_relay_up{{{labels}}} {int(r.error is None and r.at > 0)}" for labels, r in named
    ]
    read = [(labels, r.status) for labels, r in named if r.status is not None]
    _family(lines, "gearsql_relay_backlog_rows", "gauge", "Rows in the outbox, not relayed yet.")
    lines += [f"gearsql_relay_backlog_rows{{{labels}}} {s.backlog}" for labels, s in read]
    _family(
        lines,
        "gearsql_relay_lag_seconds",
        "gauge",
        "Age of the oldest row in the outbox (0 when it is empty).",
    )
    lines += [
        f"gearsql_relay_lag_seconds{{{labels}}} {_number(s.oldest_age or 0.0)}"
        for labels, s in read
    ]
    _family(
        lines,
        "gearsql_relay_dead_letters",
        "gauge",
        "Rows in gman_outbox_dead: rows no job server would take.",
    )
    lines += [f"gearsql_relay_dead_letters{{{labels}}} {s.dead}" for labels, s in read]
    _family(
        lines,
        "gearsql_relay_read_timestamp_seconds",
        "gauge",
        "When the outbox was last read (Unix time).",
    )
    lines += [
        f"gearsql_relay_read_timestamp_seconds{{{labels}}} {_number(r.at)}"
        for labels, r in named
        if r.at > 0
    ]
