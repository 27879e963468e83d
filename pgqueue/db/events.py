"""Reading a task's audit trail incrementally (the whole trail: ``Queue.events``)."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from pgqueue.db.queries import QUERIES
from pgqueue.db.rows import event_row
from pgqueue.tasks import Event, TaskId


async def task_events_after(pool: AsyncConnectionPool, task_id: TaskId, after: int) -> list[Event]:
    """Events of ``task_id`` with an id above ``after``, oldest first."""
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=event_row)
        await cur.execute(QUERIES["task_events_after"], {"id": task_id, "after": after})
        return await cur.fetchall()
