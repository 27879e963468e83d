"""Retention: delete finished tasks (and their events) older than PGQUEUE_RETENTION_DAYS.

Deletes go in small batches (``task_purge_batch``), each its own short transaction, oldest
first through ``tasks_finished_idx``: no long lock, no WAL burst, and concurrent purgers
skip each other's rows (SKIP LOCKED). Pending and running tasks have no ``completed_at``
and are never touched. Every process may run ``run_retention``; ``pgqueue purge`` runs
``purge_finished`` once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg
from psycopg_pool import AsyncConnectionPool

from pgqueue.db.queries import QUERIES
from pgqueue.settings import Settings

log = logging.getLogger(__name__)

BATCH = 1000  # tasks per transaction: ~10 ms each on a laptop, short enough to go unnoticed
EVERY_S = 300.0  # how often each process looks for expired tasks


async def purge_finished(
    pool: AsyncConnectionPool,
    older_than_s: float,
    *,
    batch: int = BATCH,
    stop: asyncio.Event | None = None,
) -> int:
    """Delete finished tasks older than ``older_than_s`` seconds; returns how many went."""
    total = 0
    while stop is None or not stop.is_set():
        async with pool.connection() as conn:
            cur = await conn.execute(
                QUERIES["task_purge_batch"], {"older_than_s": older_than_s, "limit": batch}
            )
            row = await cur.fetchone()
        deleted = int(row[0]) if row else 0
        total += deleted
        if deleted < batch:
            break
        await asyncio.sleep(0)  # let the process breathe between batches
    return total


async def run_retention(
    pool: AsyncConnectionPool,
    settings: Settings,
    stop: asyncio.Event,
    *,
    every_s: float = EVERY_S,
) -> None:
    """Purge expired tasks every ``every_s`` until ``stop``; retention_days = 0 disables."""
    if settings.retention_days <= 0:
        log.info("retention disabled (PGQUEUE_RETENTION_DAYS=0): finished tasks are kept")
        return
    older_than_s = settings.retention_days * 86400
    while not stop.is_set():
        try:
            deleted = await purge_finished(pool, older_than_s, stop=stop)
            if deleted:
                log.info(
                    "retention: deleted %d finished tasks older than %s days",
                    deleted,
                    settings.retention_days,
                )
        except (psycopg.Error, OSError) as exc:  # the database is away: try next round
            log.warning("retention pass failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)
