"""The queries of SPEC §12's settings, budgets and ``why``: one function each, used by the HTTP
API, the CLI and ``Queue`` alike (the rules are SQL, in ``sql/functions/limits.sql``)."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg

from pgqueue.db.errors import translated
from pgqueue.db.queries import QUERIES
from pgqueue.errors import InvalidInput
from pgqueue.limits import DaySpend, QueueSettings, UserLimits, UserLimitsOut, UserSpend, Why
from pgqueue.tasks import TaskId


async def set_queue(
    conn: psycopg.AsyncConnection[Any], queue: str, changes: dict[str, Any]
) -> QueueSettings:
    """Apply §12 settings to one queue, in the caller's transaction; return the settings row.

    ``changes`` maps a setting to its new value (None removes it): ``rate_limit``
    (RateLimit), ``per_user_concurrency`` (int), ``fair`` (bool), ``circuit_breaker``
    (CircuitBreaker).
    """
    row: tuple[Any, ...] | None = None
    for name, value in changes.items():
        if name == "rate_limit":
            params = {"queue": queue, "tasks": None, "per_s": None}
            if value is not None:
                params |= {"tasks": value.tasks, "per_s": value.per_s}
            cur = await conn.execute(QUERIES["queue_set_rate_limit"], params)
        elif name == "per_user_concurrency":
            cur = await conn.execute(
                QUERIES["queue_set_per_user_concurrency"], {"queue": queue, "limit": value}
            )
        elif name == "fair":
            cur = await conn.execute(QUERIES["queue_set_fair"], {"queue": queue, "fair": value})
        elif name == "circuit_breaker":
            params = {"queue": queue, "failures": None, "cool_down_s": None}
            if value is not None:
                params |= {"failures": value.failures, "cool_down_s": value.cool_down_s}
            cur = await conn.execute(QUERIES["queue_set_circuit_breaker"], params)
        else:
            raise InvalidInput(name, f"{name!r} is not a queue setting")
        row = await cur.fetchone()
    if row is None:
        raise InvalidInput("settings", "give at least one setting")
    return QueueSettings.from_row(row)


async def set_user_limits(
    conn: psycopg.AsyncConnection[Any], user_id: str, limits: UserLimits
) -> UserLimitsOut:
    cur = await conn.execute(
        QUERIES["user_limits_set"],
        {
            "user_id": user_id,
            "cost_per_day": limits.cost_per_day,
            "cost_per_month": limits.cost_per_month,
            "max_running": limits.max_running,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return _user_limits(row)


def _user_limits(row: Any) -> UserLimitsOut:
    """One ``user_limits`` row (user_id, cost_per_day, cost_per_month, max_running, updated_at)."""
    return UserLimitsOut(
        user_id=row[0],
        cost_per_day=row[1],
        cost_per_month=row[2],
        max_running=row[3],
        updated_at=row[4],
    )


async def get_user_limits(conn: psycopg.AsyncConnection[Any], user_id: str) -> UserLimitsOut:
    cur = await conn.execute(QUERIES["user_limits_get"], {"user_id": user_id})
    row = await cur.fetchone()
    assert row is not None
    return _user_limits(row)


async def list_user_limits(conn: psycopg.AsyncConnection[Any]) -> list[UserLimitsOut]:
    cur = await conn.execute(QUERIES["user_limits_list"])
    return [_user_limits(r) for r in await cur.fetchall()]


async def get_user_usage(
    conn: psycopg.AsyncConnection[Any], user_id: str, days: int = 31
) -> UserSpend:
    cur = await conn.execute(QUERIES["user_usage_get"], {"user_id": user_id, "days": days})
    row = await cur.fetchone()
    assert row is not None
    return UserSpend(
        user_id=row[0],
        cost_today=row[1],
        cost_this_month=row[2],
        running=row[3],
        budget_exhausted=row[4],
        days=msgspec.convert(row[5], list[DaySpend]),
    )


async def why(conn: psycopg.AsyncConnection[Any], task_id: TaskId) -> Why:
    """Every reason the task is not running now (none when it runs or finished)."""
    with translated(not_found=f"task {task_id} does not exist"):
        cur = await conn.execute(QUERIES["task_why"], {"id": task_id})
    row = await cur.fetchone()
    assert row is not None
    return msgspec.convert(row[0], Why, strict=False)
