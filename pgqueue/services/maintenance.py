"""The maintenance every pgqueue process runs (SPEC §2): the reaper, the scheduler, retention.

Each is safe when many processes run it (SKIP LOCKED; one de-duplication key per schedule
fire), so workers and API servers alike start them here, under their Supervisor.
"""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from pgqueue import reaper, retention
from pgqueue.schedules.scheduler import MAX_SLEEP_S, scheduler_pass
from pgqueue.services.supervisor import Supervisor
from pgqueue.settings import Settings


def start_maintenance(
    supervisor: Supervisor, pool: AsyncConnectionPool, settings: Settings
) -> None:
    """Start the reaper, the scheduler and (unless disabled) retention as supervised loops."""

    async def reap() -> None:
        await reaper.reap(pool, settings.stall_s)

    async def schedule() -> float:
        return await scheduler_pass(pool, settings)

    async def purge() -> None:
        await retention.purge_expired(pool, settings)

    supervisor.every("reaper", settings.reap_s, reap)
    supervisor.every("scheduler", MAX_SLEEP_S, schedule, first_after_s=0)
    if settings.retention_days > 0:
        supervisor.every("retention", retention.EVERY_S, purge, first_after_s=0)
