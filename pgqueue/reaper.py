"""The reaper: every process runs ``pgqueue.reap()`` now and then (SPEC §2).

The SQL function does the work and is safe to run concurrently (SKIP LOCKED); this module
only calls it and logs what it did, so operators see requeues in the worker logs too.
"""

from __future__ import annotations

import logging

from psycopg_pool import AsyncConnectionPool

from pgqueue.db.queries import QUERIES

log = logging.getLogger(__name__)


async def reap(pool: AsyncConnectionPool, stall_s: float) -> int:
    """Requeue, fail or cancel tasks whose worker stopped heartbeating; returns how many."""
    async with pool.connection() as conn:
        cur = await conn.execute(QUERIES["task_reap"], {"stall_s": stall_s})
        rows = await cur.fetchall()
    for task_id, status, lost_worker in rows:
        log.warning("reaped task %s of silent worker %s: now %s", task_id, lost_worker, status)
    return len(rows)
