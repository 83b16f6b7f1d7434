"""Plain-text tables of what the admin protocol reports: the admin commands' tables and the
frames of ``gearsql top``."""

from __future__ import annotations

from gearsql.adminclient import AdminClient, FunctionCounters, FunctionStatus, PriorityStatus
from gearsql.errors import AdminError


def display_name(name: bytes) -> str:
    """A name for display: UTF-8, with other bytes as ``\\xNN``."""
    return name.decode("utf-8", "backslashreplace")


def table_lines(headers: list[str], rows: list[list[str | int]]) -> list[str]:
    """Rows under headers, columns padded; columns holding numbers are right-aligned."""
    widths = [len(header) for header in headers]
    numeric = [False] * len(headers)
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(str(cell)))
            numeric[index] = numeric[index] or isinstance(cell, int)
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        cells = [
            str(cell).rjust(width) if right else str(cell).ljust(width)
            for cell, width, right in zip(row, widths, numeric, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def dead_counts(client: AdminClient) -> dict[bytes, int] | None:
    """Dead letters per function (gearsql's ``deadstatus``), None from a server that keeps
    none (C gearmand answers UNKNOWN_COMMAND)."""
    try:
        return client.dead_status()
    except AdminError as exc:
        if exc.code != "UNKNOWN_COMMAND":
            raise
    return None


def top_rows(server: str, client: AdminClient) -> list[list[str | int]]:
    """One row per function: queued (in all and per priority), running, workers, dead letters
    (``-`` where the server has none of gearsql's ``deadstatus``). A function with dead letters
    that ``status`` no longer lists gets a row of its own."""
    by_priority: dict[bytes, PriorityStatus] = {}
    try:
        by_priority = {row.name: row for row in client.priority_status()}
    except AdminError as exc:
        if exc.code != "UNKNOWN_COMMAND":  # gearmand before 1.1.15
            raise
    dead = dead_counts(client)
    rows: list[list[str | int]] = []
    listed = client.status()
    names = {fn.name for fn in listed}
    for name in sorted(set(dead or ()) - names):
        listed.append(FunctionStatus(name, 0, 0, 0))
    for fn in sorted(listed, key=lambda fn: fn.name):
        ranked = by_priority.get(fn.name)
        rows.append(
            [
                server,
                display_name(fn.name),
                fn.queued,
                *((ranked.high, ranked.normal, ranked.low) if ranked else ("-", "-", "-")),
                fn.running,
                fn.workers,
                "-" if dead is None else dead.get(fn.name, 0),
            ]
        )
    return rows


#: What ``top`` keeps between frames to turn counters into rates: per (server, function), when
#: its counters were read and what they were.
RateMemory = dict[tuple[str, bytes], tuple[float, FunctionCounters]]

RATE_HEADERS = ["DONE/S", "FAIL/S", "WAIT_MS", "RUN_MS"]


def rate_cells(
    server: str, client: AdminClient, memory: RateMemory, now: float
) -> dict[str, list[str | int]]:
    """Per function, since the previous frame: jobs completed and failed (WORK_FAIL or
    WORK_EXCEPTION) per second, and the mean wait and run in milliseconds of the jobs that
    started or ended meanwhile, from gearsql's ``counters``; keyed by display name. A function
    seen for the first time (or whose counters restarted) has none yet; nor has any function of
    a C gearmand."""
    try:
        counters = client.counters()
    except AdminError as exc:
        if exc.code != "UNKNOWN_COMMAND":
            raise
        return {}
    cells: dict[str, list[str | int]] = {}
    for now_counts in counters:
        key = (server, now_counts.name)
        before = memory.get(key)
        memory[key] = (now, now_counts)
        if before is None or now <= before[0] or now_counts.submitted < before[1].submitted:
            continue
        seconds = now - before[0]
        old = before[1]
        done = (now_counts.completed - old.completed) / seconds
        failed = (now_counts.failed + now_counts.exceptions - old.failed - old.exceptions) / seconds
        waits = now_counts.waits - old.waits
        runs = now_counts.runs - old.runs
        cells[display_name(now_counts.name)] = [
            f"{done:.1f}",
            f"{failed:.1f}",
            f"{(now_counts.wait_seconds - old.wait_seconds) * 1000 / waits:.1f}" if waits else "-",
            f"{(now_counts.run_seconds - old.run_seconds) * 1000 / runs:.1f}" if runs else "-",
        ]
    return cells


def top_frame(
    clients: list[AdminClient],
    many: bool,
    memory: RateMemory | None = None,
    now: float = 0.0,
) -> list[str]:
    """The lines of one frame of `gearsql top`; raises GearmanError. With ``memory`` (kept by
    the caller from frame to frame, read at monotonic time ``now``), the rate columns too."""
    rows = []
    for client in clients:
        server_rows = top_rows(client.server, client)
        if memory is not None:
            cells = rate_cells(client.server, client, memory, now)
            none: list[str | int] = ["-"] * len(RATE_HEADERS)
            for row in server_rows:
                row += cells.get(str(row[1]), none)
        rows += server_rows
    headers = [
        "SERVER",
        "FUNCTION",
        "QUEUED",
        "HIGH",
        "NORMAL",
        "LOW",
        "RUNNING",
        "WORKERS",
        "DEAD",
    ]
    if memory is not None:
        headers += RATE_HEADERS
    if not many:
        headers, rows = headers[1:], [row[1:] for row in rows]
    return table_lines(headers, rows)
