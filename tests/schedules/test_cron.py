"""Cron arithmetic across time zones and DST (no database, no waiting)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from pgqueue.errors import InvalidInput
from pgqueue.schedules.cron import next_fire, validate

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def fires(cron: str, tz: str, start: datetime, n: int) -> list[str]:
    """The next ``n`` fire times after ``start``, as local ISO strings."""
    out: list[str] = []
    at = start
    for _ in range(n):
        at = next_fire(cron, tz, at)
        assert at.tzinfo is UTC
        out.append(at.astimezone(ZoneInfo(tz)).isoformat())
    return out


def test_fires_in_the_schedule_time_zone_not_utc() -> None:
    start = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    # 12:00 UTC is 08:00 in New York (EDT): 09:00 there is 13:00 UTC the same day.
    assert next_fire("0 9 * * *", "America/New_York", start) == datetime(
        2024, 6, 1, 13, 0, tzinfo=UTC
    )
    assert next_fire("0 9 * * *", "UTC", start) == datetime(2024, 6, 2, 9, 0, tzinfo=UTC)


def test_daily_job_keeps_local_time_across_dst_changes() -> None:
    # 09:00 New York is 14:00 UTC in winter and 13:00 UTC in summer.
    start = datetime(2024, 3, 8, 12, tzinfo=NEW_YORK)
    utc = [
        datetime.fromisoformat(s).astimezone(UTC).hour
        for s in fires("0 9 * * *", "America/New_York", start, 3)
    ]
    assert utc == [14, 13, 13]


def test_spring_forward_slot_in_the_gap_fires_once_at_the_jump() -> None:
    # 2024-03-31 Berlin: 02:00 -> 03:00. 02:30 does not exist that day.
    start = datetime(2024, 3, 30, 12, tzinfo=BERLIN)
    assert fires("30 2 * * *", "Europe/Berlin", start, 3) == [
        "2024-03-31T03:00:00+02:00",
        "2024-04-01T02:30:00+02:00",
        "2024-04-02T02:30:00+02:00",
    ]


def test_spring_forward_wildcard_hour_skips_the_missing_hour() -> None:
    start = datetime(2024, 3, 31, 1, 10, tzinfo=BERLIN)
    assert fires("*/30 * * * *", "Europe/Berlin", start, 3) == [
        "2024-03-31T01:30:00+01:00",
        "2024-03-31T03:00:00+02:00",
        "2024-03-31T03:30:00+02:00",
    ]


def test_fall_back_fixed_hour_fires_once_not_twice() -> None:
    # 2024-10-27 Berlin: 03:00 CEST -> 02:00 CET, so 02:30 happens twice.
    start = datetime(2024, 10, 26, 12, tzinfo=BERLIN)
    assert fires("30 2 * * *", "Europe/Berlin", start, 2) == [
        "2024-10-27T02:30:00+02:00",
        "2024-10-28T02:30:00+01:00",
    ]


def test_fall_back_wildcard_hour_fires_in_both_passes() -> None:
    start = datetime(2024, 10, 27, 2, 10, tzinfo=BERLIN)
    got = fires("*/30 * * * *", "Europe/Berlin", start, 4)
    assert got == [
        "2024-10-27T02:30:00+02:00",
        "2024-10-27T02:00:00+01:00",
        "2024-10-27T02:30:00+01:00",
        "2024-10-27T03:00:00+01:00",
    ]
    # Real time always moves forward by 30 minutes.
    instants = [datetime.fromisoformat(s) for s in got]
    assert all((b - a).total_seconds() == 1800 for a, b in itertools.pairwise(instants))


def test_next_fire_is_strictly_after() -> None:
    at = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
    assert next_fire("0 0 * * *", "UTC", at) == datetime(2024, 1, 2, tzinfo=UTC)
    assert next_fire("@hourly", "UTC", at) == datetime(2024, 1, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "field"),
    [("* * *", "cron"), ("61 * * * *", "cron"), ("* * * * * *", "cron"), ("nonsense", "cron")],
)
def test_invalid_expressions_name_the_field(cron: str, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate(cron)
    assert info.value.field == field


def test_unknown_time_zone_is_invalid() -> None:
    with pytest.raises(InvalidInput) as info:
        next_fire("* * * * *", "Mars/Olympus", datetime(2024, 1, 1, tzinfo=UTC))
    assert info.value.field == "timezone"


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_fire("* * * * *", "UTC", datetime(2024, 1, 1))
