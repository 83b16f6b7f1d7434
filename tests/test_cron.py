"""Cron expressions: parsing and the next matching minute (UTC)."""

from __future__ import annotations

import calendar

import pytest

from gearsql._cron import CronError, next_tick, parse_cron


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return calendar.timegm((year, month, day, hour, minute, 0))


def test_every_minute_is_the_next_whole_minute_strictly_after() -> None:
    spec = parse_cron("* * * * *")
    assert next_tick(spec, utc(2026, 1, 1, 10, 0)) == utc(2026, 1, 1, 10, 1)
    assert next_tick(spec, utc(2026, 1, 1, 10, 0) + 59.9) == utc(2026, 1, 1, 10, 1)


def test_steps_ranges_and_lists() -> None:
    spec = parse_cron("*/15 2,14 * * 1-5")  # weekdays at 02:00, 02:15... and 14:00...
    # 2026-01-03 is a Saturday: the next match is Monday the 5th at 02:00.
    assert next_tick(spec, utc(2026, 1, 2, 14, 50)) == utc(2026, 1, 5, 2, 0)
    assert next_tick(spec, utc(2026, 1, 5, 2, 0)) == utc(2026, 1, 5, 2, 15)
    assert next_tick(parse_cron("5-20/5 * * * *"), utc(2026, 1, 1, 0, 20)) == utc(2026, 1, 1, 1, 5)


def test_day_of_month_or_weekday_when_both_are_restricted_and_sunday_is_0_or_7() -> None:
    spec = parse_cron("0 12 13 * 5")  # the 13th, or any Friday
    assert next_tick(spec, utc(2026, 2, 1)) == utc(2026, 2, 6, 12)  # Friday the 6th
    assert next_tick(parse_cron("0 0 * * 7"), utc(2026, 1, 1)) == utc(2026, 1, 4)  # Sunday
    assert next_tick(parse_cron("0 0 * * 0"), utc(2026, 1, 1)) == utc(2026, 1, 4)


def test_a_leap_day_and_an_impossible_date() -> None:
    assert next_tick(parse_cron("0 0 29 2 *"), utc(2026, 3, 1)) == utc(2028, 2, 29)
    assert next_tick(parse_cron("0 0 30 2 *"), utc(2026, 1, 1)) is None


@pytest.mark.parametrize(
    "text",
    [
        "* * * *",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * * 13 *",
        "*/0 * * * *",
        "a * * * *",
        "5-1 * * * *",
        "* * * * 8",
    ],
)
def test_bad_expressions_are_refused(text: str) -> None:
    with pytest.raises(CronError):
        parse_cron(text)
