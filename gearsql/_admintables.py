"""Plain-text tables of what the admin protocol reports: the admin commands' tables and the
frames of ``gearsql top``."""

from __future__ import annotations

from gearsql.adminclient import AdminClient, PriorityStatus
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


def top_rows(server: str, client: AdminClient) -> list[list[str | int]]:
    """One row per function: queued (in all and per priority), running, workers."""
    by_priority: dict[bytes, PriorityStatus] = {}
    try:
        by_priority = {row.name: row for row in client.priority_status()}
    except AdminError as exc:
        if exc.code != "UNKNOWN_COMMAND":  # gearmand before 1.1.15
            raise
    rows: list[list[str | int]] = []
    for fn in sorted(client.status(), key=lambda fn: fn.name):
        ranked = by_priority.get(fn.name)
        rows.append(
            [
                server,
                display_name(fn.name),
                fn.queued,
                *((ranked.high, ranked.normal, ranked.low) if ranked else ("-", "-", "-")),
                fn.running,
                fn.workers,
            ]
        )
    return rows


def top_frame(clients: list[AdminClient], many: bool) -> list[str]:
    """The lines of one frame of `gearsql top`; raises GearmanError."""
    rows = [row for client in clients for row in top_rows(client.server, client)]
    headers = ["SERVER", "FUNCTION", "QUEUED", "HIGH", "NORMAL", "LOW", "RUNNING", "WORKERS"]
    if not many:
        headers, rows = headers[1:], [row[1:] for row in rows]
    return table_lines(headers, rows)
