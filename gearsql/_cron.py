"""Cron expressions (minute hour day-of-month month weekday) and the next time one matches.

The five fields of classic cron, in UTC: ``*``, numbers, ranges ``a-b``, steps ``*/n`` and
``a-b/n``, and lists of those separated by commas. Weekday 0 and 7 are both Sunday. As in cron,
when both day of month and weekday are restricted (neither is ``*``), a day matching either one
matches.

A schedule's spec is its cron expression, optionally followed by ``catch-up=MODE``: what a
schedule does with ticks missed while the server was down (:data:`CATCH_UP_MODES`). The
option is part of the spec's text, so every store keeps it in the column that holds the
expression.
"""

from __future__ import annotations

import datetime
from typing import NamedTuple

__all__ = [
    "CATCH_UP_LIMIT",
    "CATCH_UP_MODES",
    "MAX_SCHEDULE_NAME",
    "CronError",
    "CronSpec",
    "fields_spec",
    "next_tick",
    "parse_cron",
    "parse_schedule",
]

#: Longest schedule name: its ticks' uniques (``NAME@EPOCH``) must fit Gearman's 64 bytes.
MAX_SCHEDULE_NAME = 40

#: What a schedule does with the ticks it missed (the server was down, or the clock jumped
#: forward): ``one`` (the default) submits the tick that was due and skips the rest, ``none``
#: skips every tick more than :data:`LATE` seconds late, ``all`` submits each missed tick (at
#: most :data:`CATCH_UP_LIMIT`, the earliest ones).
CATCH_UP_MODES = ("one", "none", "all")
#: The most ticks ``catch-up=all`` submits at once after downtime.
CATCH_UP_LIMIT = 100
#: Seconds after its time a tick still counts as on time (not missed) for ``catch-up=none``:
#: a server that restarts within a minute of a tick still submits it.
LATE = 60

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
    #: The spec as it is stored: the five fields, then ``catch-up=MODE`` unless it is ``one``.
    text: str
    catch_up: str = "one"


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
    """Read ``minute hour day-of-month month weekday [catch-up=MODE]``. Raises
    :class:`CronError`."""
    words = text.split()
    catch_up = "one"
    if words and words[-1].startswith("catch-up="):
        catch_up = words.pop()[len("catch-up=") :]
        if catch_up not in CATCH_UP_MODES:
            raise CronError(f"catch-up {catch_up!r}: want one of {', '.join(CATCH_UP_MODES)}")
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
        " ".join(words) + ("" if catch_up == "one" else f" catch-up={catch_up}"),
        catch_up,
    )


def fields_spec(minute: bytes, hour: bytes, day: bytes, month: bytes, weekday: bytes) -> CronSpec:
    """The spec of SUBMIT_JOB_SCHED's five fields, where an empty field means any (``*``).
    Raises :class:`CronError`."""
    words = []
    for name, raw in zip(
        ("minute", "hour", "day of month", "month", "weekday"),
        (minute, hour, day, month, weekday),
        strict=True,
    ):
        try:
            word = raw.decode("ascii").strip() or "*"
        except UnicodeDecodeError:
            raise CronError(f"{name} field is not ASCII") from None
        if len(word.split()) != 1:
            raise CronError(f"{name} field {word!r}: one field, without spaces")
        words.append(word)
    return parse_cron(" ".join(words))


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
                    return int(moment.timestamp())
        day += datetime.timedelta(days=1)
    return None


def parse_schedule(line: str) -> tuple[bytes, bytes, CronSpec, bytes]:
    """Read a schedule of the config file (``--schedule``): ``NAME M H DOM MON DOW
    [catch-up=MODE] FUNCTION [DATA...]`` (the data's words joined by single spaces, as the
    admin command has them). Returns (name, function, spec, data). Raises :class:`CronError`
    for a name of more than 40 bytes or with ``@``, a function name of more than 512 bytes,
    or a spec that never matches."""
    from gearsql.protocol import MAX_FUNCTION_NAME

    words = line.split()
    options = 1 if len(words) > 6 and words[6].startswith("catch-up=") else 0
    if len(words) < 7 + options:
        raise CronError(
            f"schedule {line!r}: want NAME M H DOM MON DOW [catch-up=MODE] FUNCTION [DATA]"
        )
    name, function = words[0].encode(), words[6 + options].encode()
    if not 0 < len(name) <= MAX_SCHEDULE_NAME or b"@" in name:
        raise CronError(f"schedule name {words[0]!r}: 1 to {MAX_SCHEDULE_NAME} bytes, no @")
    if len(function) > MAX_FUNCTION_NAME:
        raise CronError(f"schedule {words[0]!r}: function name over {MAX_FUNCTION_NAME} bytes")
    spec = parse_cron(" ".join(words[1 : 6 + options]))
    if next_tick(spec, 0) is None:
        raise CronError(f"schedule {words[0]!r}: cron expression {spec.text!r} never matches")
    return name, function, spec, " ".join(words[7 + options :]).encode()
