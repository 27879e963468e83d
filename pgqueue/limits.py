"""Limits, fairness and budgets (SPEC §12): the shapes callers see.

The rules themselves are SQL (``sql/functions/limits.sql``): the claim enforces them and
``pgqueue.why()`` explains a task with the same functions. ``pgqueue.db.limits`` runs their
queries for the HTTP API, the CLI and ``Queue``; ``Client`` decodes the same shapes from HTTP,
so this module imports no driver.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import msgspec

from pgqueue.tasks import TaskId

UserName = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
Money = Annotated[float, msgspec.Meta(ge=0, le=1e12)]
Cap = Annotated[int, msgspec.Meta(ge=0, le=100_000)]
Positive = Annotated[int, msgspec.Meta(ge=1, le=100_000)]
Window = Annotated[float, msgspec.Meta(gt=0, le=86_400)]


class RateLimit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """At most ``tasks`` starts in any ``per_s``-second window, across all workers."""

    tasks: Positive
    per_s: Window


class CircuitBreaker(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """After ``failures`` failed attempts in a row of one kind, that kind rests ``cool_down_s``."""

    failures: Positive
    cool_down_s: Window


class QueueSettings(msgspec.Struct, frozen=True):
    """A queue's settings row, ``pgqueue.queues``; every limit holds across all workers."""

    name: str
    concurrency_limit: int | None
    paused: bool
    updated_at: datetime
    rate_limit: RateLimit | None = None
    per_user_concurrency: int | None = None
    fair: bool = False
    circuit_breaker: CircuitBreaker | None = None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> QueueSettings:
        """From the columns every ``queue_*`` query of ``queue_admin.sql`` returns."""
        name, limit, paused, updated_at, rate_n, rate_s, per_user, fair, b_fail, b_cool = row
        return cls(
            name=name,
            concurrency_limit=limit,
            paused=paused,
            updated_at=updated_at,
            rate_limit=RateLimit(rate_n, rate_s) if rate_n is not None else None,
            per_user_concurrency=per_user,
            fair=bool(fair),
            circuit_breaker=CircuitBreaker(b_fail, b_cool) if b_fail is not None else None,
        )


class UserLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A user's budgets (UTC calendar periods) and cap; null or absent: no such limit."""

    cost_per_day: Money | None = None
    cost_per_month: Money | None = None
    max_running: Cap | None = None


class UserLimitsOut(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    cost_per_day: float | None
    cost_per_month: float | None
    max_running: int | None
    updated_at: datetime | None


class DaySpend(msgspec.Struct, frozen=True):
    day: date
    input_tokens: float
    output_tokens: float
    cost: float


class UserSpend(msgspec.Struct, frozen=True, kw_only=True):
    """What a user spent today and this month, what runs, and which budget is used up."""

    user_id: str
    cost_today: float
    cost_this_month: float
    running: int
    budget_exhausted: str | None
    days: list[DaySpend]


class Reason(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One reason a task does not run: ``code`` (SPEC §12) and a ``detail`` for people."""

    code: str
    detail: str
    run_at: datetime | None = None
    dependencies: list[TaskId] | None = None
    signal: str | None = None
    until: datetime | None = None
    limit: int | str | None = None
    frees_at: datetime | None = None
    running: int | None = None
    ahead: int | None = None


class Why(msgspec.Struct, frozen=True):
    status: str
    reasons: list[Reason]
