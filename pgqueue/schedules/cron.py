"""Cron arithmetic: when does a schedule fire next, in its own time zone, across DST.

Parsing and calendar arithmetic come from croniter (already a pgqueue dependency): the most
widely used Python cron library (Airflow, Celery beat, RQ scheduler), maintained under
pallets-eco since 2025, with time-zone-aware iteration. Its DST behaviour was checked case by
case and is kept where it matches Debian/Vixie cron, which operators know:

- spring forward: a slot in the skipped hour (02:30 on the day clocks jump 02:00 → 03:00)
  fires at the moment of the jump (03:00), once;
- fall back: a slot in the repeated hour fires once, at its first occurrence — unless the
  hour field is a wildcard (``*/15 * * * *``), where each real quarter hour fires, both
  passes included. croniter fires fixed-hour slots twice; ``next_fire`` drops the second.

Only the five standard fields (or an ``@hourly``-style alias) are accepted: a seconds field
would make a schedule a busy loop.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from pgqueue.errors import InvalidInput

_ALIASES = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; InvalidInput (field ``timezone``) when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput("timezone", f"{name!r} is not an IANA time zone") from None


def validate(cron: str) -> str:
    """The expression, normalised; InvalidInput (field ``cron``) when croniter rejects it."""
    expr = " ".join(cron.split())
    if expr.lower() in _ALIASES:
        return expr.lower()
    if len(expr.split(" ")) != 5:
        raise InvalidInput(
            "cron", f"{cron!r} must have 5 fields (minute hour day month weekday) or be an alias"
        )
    if not croniter.is_valid(expr):
        raise InvalidInput("cron", f"{cron!r} is not a valid cron expression")
    return expr


def _fixed_hour(expr: str) -> bool:
    """Does the expression name its hours (so a repeated wall-clock hour must fire once)?"""
    if expr.startswith("@"):
        return expr != "@hourly"
    return expr.split(" ")[1] != "*" and not expr.split(" ")[1].startswith("*/")


def next_fire(cron: str, timezone: str, after: datetime) -> datetime:
    """The first fire time strictly after ``after`` (aware), as an aware UTC datetime."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    expr = validate(cron)
    tz = zone(timezone)
    fixed = _fixed_hour(expr)
    try:
        it = croniter(expr, after.astimezone(tz))
        for _ in range(1000):  # a real expression yields a fitting slot within a step or two
            slot: datetime = it.get_next(datetime)
            if fixed and slot.fold == 1 and _ambiguous(slot):
                continue  # the repeated hour's second pass: this slot already fired
            fire = slot.astimezone(UTC)
            if fire > after:
                return fire
    except (CroniterBadCronError, CroniterBadDateError) as exc:
        raise InvalidInput("cron", f"{cron!r} never fires: {exc}") from None
    raise InvalidInput("cron", f"{cron!r} yields no usable fire time after {after.isoformat()}")


def _ambiguous(local: datetime) -> bool:
    """Is this wall-clock time one that occurs twice (the hour repeated when clocks go back)?"""
    return local.replace(fold=0).utcoffset() != local.replace(fold=1).utcoffset()
