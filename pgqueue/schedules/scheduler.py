"""Firing schedules: every process may run this; each fire yields exactly one task.

One pass (``fire_due_schedules``) claims the due schedules with FOR UPDATE SKIP LOCKED, and
for each, in the same transaction: enqueues its task, records the fire in
``pgqueue.schedule_fires`` (one row per schedule and slot, a table only the scheduler writes)
and moves ``next_fire_at`` to the first slot after *now*. Hence the missed-fire policy: a
scheduler back after downtime fires a schedule once (for its oldest missed slot), not once
per missed slot. A racing scheduler
skips the locked row, and when the lock goes, the row is no longer due. The fires table is
the second guard, should an operator rewind ``next_fire_at``: a slot already fired makes no
second task. (It replaced a task idempotency key ``schedule:<name>:<fire time>``, which any
producer could predict and plant first, suppressing the fire; SPEC §3.)

``run_scheduler`` repeats the pass, sleeping until the earliest ``next_fire_at`` (at most
``poll_s``, so schedules made by other processes are noticed).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from pgqueue import enqueue
from pgqueue.db import schedules as db  # by module: db/schedules imports this package
from pgqueue.errors import Conflict, InvalidInput, NotFound
from pgqueue.schedules import cron
from pgqueue.services.supervisor import supervise
from pgqueue.settings import Settings
from pgqueue.tasks import TaskId

log = logging.getLogger(__name__)

BATCH = 50  # schedules fired per transaction; a pass loops until a batch comes back short
# Longest sleep when no schedule is due sooner. Cron slots are a minute apart; looking every
# poll_s (5 s) made the scheduler the largest cost of an idle worker (issue 3: <= 1 query/s).
# A schedule created by another process within 30 s of its first slot may fire that slot late.
MAX_SLEEP_S = 30.0


class _AlreadyFired(Exception):
    """This slot made its task before: roll back the one just enqueued."""


async def fire_due_schedules(
    target: AsyncConnectionPool | AsyncConnection[Any],
    settings: Settings | None = None,
    *,
    now: datetime | None = None,
) -> int:
    """Fire every schedule due at ``now`` (default: the database clock); returns the count.

    ``target`` is a pool or an autocommit connection. ``now`` exists for tests (and replay):
    it decides which schedules are due and where their clocks move to.
    """
    settings = settings or Settings()  # the defaults: payload size, idempotency TTL
    if isinstance(target, AsyncConnectionPool):
        async with target.connection() as conn:
            return await _fire_all(conn, settings, now)
    return await _fire_all(target, settings, now)


async def _fire_all(conn: AsyncConnection[Any], settings: Settings, now: datetime | None) -> int:
    fired = 0
    while True:
        count, claimed = await _fire_batch(conn, settings, now)
        fired += count
        if claimed < BATCH:
            return fired


async def _fire_batch(
    conn: AsyncConnection[Any], settings: Settings, now: datetime | None
) -> tuple[int, int]:
    fired = 0
    async with conn.transaction():
        due = await db.claim_due(conn, now, BATCH)
        for schedule in due:
            if await _fire_one(conn, settings, schedule):
                fired += 1
    return fired, len(due)


async def _fire_one(
    conn: AsyncConnection[Any], settings: Settings, schedule: db.DueSchedule
) -> bool:
    """Enqueue one schedule's task and advance it; False when the task could not be made."""
    fire_at = schedule.next_fire_at
    try:
        next_fire_at = cron.next_fire(schedule.cron, schedule.timezone, schedule.clock)
    except InvalidInput:
        # The expression or zone became unusable (an edited row, a removed tz entry):
        # pause it rather than retry it on every pass.
        log.exception("schedule %s cannot compute its next fire; pausing it", schedule.name)
        await db.disable(conn, schedule.name)
        return False
    task_id = None
    already_fired = False
    try:
        # A savepoint: a task the database refuses must not undo the other fires.
        async with conn.transaction():
            task_id = await _enqueue_fire(conn, settings, schedule)
    except _AlreadyFired:
        log.info("schedule %s: slot %s already fired", schedule.name, fire_at)
        already_fired = True
    except (InvalidInput, Conflict, NotFound):  # db/errors.py translated the refusals
        log.exception("schedule %s: its task for %s was not enqueued", schedule.name, fire_at)
    await db.fired(
        conn,
        schedule.name,
        fire_at=fire_at,
        task_id=task_id,
        already_fired=already_fired,
        next_fire_at=next_fire_at,
    )
    return task_id is not None


async def _enqueue_fire(
    conn: AsyncConnection[Any], settings: Settings, schedule: db.DueSchedule
) -> TaskId:
    """Enqueue the task of this fire and record the fire; ``_AlreadyFired`` (rolling the task
    back with the caller's savepoint) when the slot made its task before."""
    template = dict(schedule.task)
    fields: dict[str, Any] = {
        **template,
        "tags": [*template.get("tags", []), f"schedule:{schedule.name}"],
    }
    enqueued = await enqueue.submit(enqueue.new_task(fields), settings, enqueue.connect(None, conn))
    if not await db.record_fire(conn, schedule.name, schedule.next_fire_at, enqueued.task.id):
        raise _AlreadyFired
    return enqueued.task.id


async def run_scheduler(pool: AsyncConnectionPool, settings: Settings, stop: asyncio.Event) -> None:
    """Fire due schedules until ``stop`` is set. Safe to run in any number of processes.

    A supervised loop (pgqueue/services/supervisor.py): a failed pass is logged and retried
    after a back-off; nothing it raises ends the loop.
    """

    await supervise(
        "scheduler", lambda: scheduler_pass(pool, settings), every_s=MAX_SLEEP_S, stop=stop
    )


async def scheduler_pass(pool: AsyncConnectionPool, settings: Settings) -> float:
    """Fire what is due; returns the seconds until the next schedule is due (at most 30).

    It asks first when the next schedule is due, and fires only if one is: an idle pass is
    that one statement, where firing first cost four (BEGIN, the claim that found nothing,
    COMMIT, then the same question) and made the scheduler the largest cost of an idle
    process after its polls.
    """
    due_in = await _seconds_to_next(pool)
    if due_in is None or due_in > 0:
        return _sleep_s(due_in)
    fired = await fire_due_schedules(pool, settings)
    if fired:
        log.info("fired %d schedules", fired)
    return _sleep_s(await _seconds_to_next(pool))


async def _seconds_to_next(pool: AsyncConnectionPool) -> float | None:
    async with pool.connection() as conn:
        return await db.next_due_in(conn)


def _sleep_s(due_in: float | None) -> float:
    if due_in is None:
        return MAX_SLEEP_S
    return min(MAX_SLEEP_S, max(0.05, due_in))
