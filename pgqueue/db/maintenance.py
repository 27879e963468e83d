"""Housekeeping every process runs now and then: the reaper (``pgqueue.reap()``, SPEC §2)
and retention's batched purge of finished tasks (``sql/queries/task_maintain.sql``)."""

from __future__ import annotations

import msgspec
from psycopg_pool import AsyncConnectionPool

from pgqueue.db.queries import QUERIES
from pgqueue.tasks import Status, TaskId


class Reaped(msgspec.Struct, frozen=True):
    """A task the reaper took from a silent worker, and what it is now."""

    task_id: TaskId
    status: Status
    worker_id: str | None


async def reap(pool: AsyncConnectionPool, stall_s: float) -> list[Reaped]:
    """Requeue, fail or cancel the tasks of workers silent for ``stall_s`` seconds."""
    async with pool.connection() as conn:
        cur = await conn.execute(QUERIES["task_reap"], {"stall_s": stall_s})
        rows = await cur.fetchall()
    return [Reaped(TaskId(task_id), Status(status), worker) for task_id, status, worker in rows]


async def purge_batch(pool: AsyncConnectionPool, older_than_s: float, limit: int) -> int:
    """Delete up to ``limit`` tasks finished more than ``older_than_s`` ago (oldest first,
    skipping rows another purger holds) with their events; returns how many went."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            QUERIES["task_purge_batch"], {"older_than_s": older_than_s, "limit": limit}
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0
