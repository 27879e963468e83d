"""The reaper: every process runs ``pgqueue.reap()`` now and then (SPEC §2).

The SQL function does the work and is safe to run concurrently (SKIP LOCKED); this module
only calls it and logs what it did, so operators see requeues in the worker logs too.
"""

from __future__ import annotations

import logging

from psycopg_pool import AsyncConnectionPool

from pgqueue.db import maintenance

log = logging.getLogger(__name__)


async def reap(pool: AsyncConnectionPool, stall_s: float) -> int:
    """Requeue, fail or cancel tasks whose worker stopped heartbeating; returns how many."""
    reaped = await maintenance.reap(pool, stall_s)
    for row in reaped:
        log.warning(
            "reaped task %s of silent worker %s: now %s", row.task_id, row.worker_id, row.status
        )
    return len(reaped)
