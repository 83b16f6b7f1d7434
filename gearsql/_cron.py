"""Cron expressions (minute hour day-of-month month weekday) and the next time one matches.

The five fields of classic cron, in UTC: ``*``, numbers, ranges ``a-b``, steps ``*/n`` and
``a-b/n``, and lists of those separated by commas. Weekday 0 and 7 are both Sunday. As in cron,
when both day of month and weekday are restricted (neither is ``*``), a day matching either one
matches.
"""

from __future__ import annotations

import calendar
import datetime
from typing import NamedTuple

__all__ = ["CronError", "CronSpec", "next_tick", "parse_cron"]

_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("weekday", 0, 7),
)


class CronError(ValueError):
    """A cron expression that cannot be read."""


class CronSpec(NamedTuple):
    """The values each field allows, and whether day of month and weekday were ``*``."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 Sunday .. 6 Saturday
    any_day: bool
    any_weekday: bool
    text: str


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, slash, step_text = part.partition("/")
        try:
            step = int(step_text) if slash else 1
            if body == "*":
                start, end = low, high
            elif "-" in body:
                first, _, last = body.partition("-")
                start, end = int(first), int(last)
            else:
                start = end = int(body)
                if slash:
                    end = high
        except ValueError:
            raise CronError(
                f"{name} field {text!r}: want *, N, A-B, */N or lists of them"
            ) from None
        if step < 1 or not (low <= start <= end <= high):
            raise CronError(f"{name} field {text!r}: values run from {low} to {high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse_cron(text: str) -> CronSpec:
    """Read ``minute hour day-of-month month weekday``. Raises :class:`CronError`."""
    words = text.split()
    if len(words) != 5:
        raise CronError(
            f"cron expression {text!r}: want 5 fields (minute hour day-of-month month weekday)"
        )
    fields = [_field(word, *spec) for word, spec in zip(words, _FIELDS, strict=True)]
    weekdays = frozenset(day % 7 for day in fields[4])
    return CronSpec(
        fields[0],
        fields[1],
        fields[2],
        fields[3],
        weekdays,
        words[2] == "*",
        words[4] == "*",
        " ".join(words),
    )


def _day_matches(spec: CronSpec, day: datetime.date) -> bool:
    in_month = day.day in spec.days
    on_weekday = (day.weekday() + 1) % 7 in spec.weekdays
    if spec.any_day or spec.any_weekday:
        return in_month and on_weekday
    return in_month or on_weekday


def next_tick(spec: CronSpec, after: float) -> int | None:
    """The first whole minute (epoch seconds, UTC) strictly after ``after`` that ``spec``
    matches; None if none within eight years (such as February 30)."""
    start = datetime.datetime.fromtimestamp(int(after) // 60 * 60 + 60, datetime.timezone.utc)
    day = start.date()
    for _ in range(8 * 366):
        if day.month in spec.months and _day_matches(spec, day):
            first_hour = start.hour if day == start.date() else 0
            for hour in sorted(h for h in spec.hours if h >= first_hour):
                first_minute = start.minute if (day, hour) == (start.date(), start.hour) else 0
                minutes = [m for m in sorted(spec.minutes) if m >= first_minute]
                if minutes:
                    moment = datetime.datetime(
                        day.year,
                        day.month,
                        day.day,
                        hour,
                        minutes[0],
                        tzinfo=datetime.timezone.utc,
                    )
                    return calendar.timegm(moment.timetuple())
        day += datetime.timedelta(days=1)
    return None
