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

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from pgqueue.db.queries import QUERIES
from pgqueue.errors import Conflict, InvalidInput, NotFound
from pgqueue.queue import Queue
from pgqueue.schedules import cron
from pgqueue.schedules.models import Schedule
from pgqueue.services.supervisor import supervise
from pgqueue.settings import Settings
from pgqueue.tasks import TaskId

log = logging.getLogger(__name__)

BATCH = 50  # schedules fired per transaction; a pass loops until a batch comes back short
# Longest sleep when no schedule is due sooner. Cron slots are a minute apart; looking every
# poll_s (5 s) made the scheduler the largest cost of an idle worker (issue 3: <= 1 query/s).
# A schedule created by another process within 30 s of its first slot may fire that slot late.
MAX_SLEEP_S = 30.0


class _DueSchedule(Schedule, frozen=True):
    """A claimed schedule with the clock it was found due by."""

    clock: datetime


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
    settings = settings or Settings.from_env({}, dsn="unused")
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
    # The Queue only validates and inserts here, on our connection: its pool stays closed.
    queue = Queue(settings=settings, pool=_NO_POOL)
    fired = 0
    async with conn.transaction():
        cur = conn.cursor(row_factory=class_row(_DueSchedule))
        await cur.execute(QUERIES["schedule_claim_due"], {"now": now, "limit": BATCH})
        due = await cur.fetchall()
        for schedule in due:
            if await _fire_one(conn, queue, schedule):
                fired += 1
    return fired, len(due)


async def _fire_one(conn: AsyncConnection[Any], queue: Queue, schedule: _DueSchedule) -> bool:
    """Enqueue one schedule's task and advance it; False when the task could not be made."""
    fire_at = schedule.next_fire_at
    try:
        next_fire_at = cron.next_fire(schedule.cron, schedule.timezone, schedule.clock)
    except InvalidInput:
        # The expression or zone became unusable (an edited row, a removed tz entry):
        # pause it rather than retry it on every pass.
        log.exception("schedule %s cannot compute its next fire; pausing it", schedule.name)
        await conn.execute(QUERIES["schedule_disable"], {"name": schedule.name})
        return False
    task_id = None
    already_fired = False
    try:
        # A savepoint: a task the database refuses must not undo the other fires.
        async with conn.transaction():
            task_id = await _enqueue_fire(conn, queue, schedule)
    except _AlreadyFired:
        log.info("schedule %s: slot %s already fired", schedule.name, fire_at)
        already_fired = True
    except (InvalidInput, Conflict, NotFound, psycopg.errors.IntegrityError):
        log.exception("schedule %s: its task for %s was not enqueued", schedule.name, fire_at)
    await conn.execute(
        QUERIES["schedule_fired"],
        {
            "name": schedule.name,
            "fire_at": fire_at,
            "task_id": task_id,
            "already_fired": already_fired,
            "next_fire_at": next_fire_at,
        },
    )
    return task_id is not None


async def _enqueue_fire(conn: AsyncConnection[Any], queue: Queue, schedule: _DueSchedule) -> TaskId:
    """Enqueue the task of this fire and record the fire; ``_AlreadyFired`` (rolling the task
    back with the caller's savepoint) when the slot made its task before."""
    template = dict(schedule.task)
    fields: dict[str, Any] = {
        **template,
        "tags": [*template.get("tags", []), f"schedule:{schedule.name}"],
    }
    enqueued = await queue.submit(queue.new_task(fields), conn=conn)
    cur = await conn.execute(
        QUERIES["schedule_fire_record"],
        {"name": schedule.name, "fire_at": schedule.next_fire_at, "task_id": enqueued.task.id},
    )
    if await cur.fetchone() is None:
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
    """Fire what is due; returns the seconds until the next schedule is due (at most 30)."""
    fired = await fire_due_schedules(pool, settings)
    if fired:
        log.info("fired %d schedules", fired)
    return await _seconds_to_next(pool, MAX_SLEEP_S)


async def _seconds_to_next(pool: AsyncConnectionPool, cap: float) -> float:
    async with pool.connection() as conn:
        cur = await conn.execute(QUERIES["schedule_next_due_in"])
        row = await cur.fetchone()
    if row is None or row[0] is None:
        return cap
    return min(cap, max(0.05, float(row[0])))


class _NoPool:
    """Stands in for a pool the scheduler's Queue never uses (it is given a connection)."""

    def connection(self) -> Any:
        raise RuntimeError("the scheduler enqueues on its own connection only")


_NO_POOL: Any = _NoPool()
