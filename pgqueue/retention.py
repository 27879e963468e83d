"""Retention: delete finished tasks (and their events) older than PGQUEUE_RETENTION_DAYS.

Deletes go in small batches (``task_purge_batch``), each its own short transaction, oldest
first through ``tasks_finished_idx``: no long lock, no WAL burst, and concurrent purgers
skip each other's rows (SKIP LOCKED). Pending and running tasks have no ``completed_at``
and are never touched. Every process may run ``run_retention``; ``pgqueue purge`` runs
``purge_finished`` once.
"""

from __future__ import annotations

import asyncio
import logging

from psycopg_pool import AsyncConnectionPool

from pgqueue.db import maintenance
from pgqueue.services.supervisor import supervise
from pgqueue.settings import Settings

log = logging.getLogger(__name__)

BATCH = 1000  # tasks per transaction: a short one, gone unnoticed beside the workers
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
        deleted = await maintenance.purge_batch(pool, older_than_s, batch)
        total += deleted
        if deleted < batch:
            break
        await asyncio.sleep(0)  # let the process breathe between batches
    return total


async def purge_expired(pool: AsyncConnectionPool, settings: Settings) -> None:
    """One retention pass: delete what PGQUEUE_RETENTION_DAYS says has expired."""
    deleted = await purge_finished(pool, settings.retention_days * 86400)
    if deleted:
        log.info(
            "retention: deleted %d finished tasks older than %s days",
            deleted,
            settings.retention_days,
        )


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

    async def step() -> None:
        await purge_expired(pool, settings)

    await supervise("retention", step, every_s=every_s, stop=stop)
