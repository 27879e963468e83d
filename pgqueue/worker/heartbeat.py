"""Heartbeats: the worker's row in ``pgqueue.workers`` and its running tasks' ``heartbeat_at``.

The answer also tells the worker which tasks it lost (reaped while it was unreachable: stop
them, their outcome would be refused anyway) and which have a cancel requested (the polling
fallback for a missed NOTIFY).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import msgspec
from psycopg_pool import AsyncConnectionPool

from pgqueue.db import heartbeats
from pgqueue.db.heartbeats import WorkerInfo
from pgqueue.tasks import Task, TaskId

log = logging.getLogger(__name__)

__all__ = ["HeartbeatAnswer", "WorkerInfo", "beat", "register", "unregister"]


class HeartbeatAnswer(msgspec.Struct, frozen=True):
    lost: set[TaskId]
    cancel_requested: set[TaskId]


async def register(pool: AsyncConnectionPool, info: WorkerInfo) -> None:
    async with pool.connection() as conn:
        await heartbeats.register(conn, info)


async def beat(
    pool: AsyncConnectionPool, info: WorkerInfo, running: Collection[Task]
) -> HeartbeatAnswer:
    """One heartbeat for the worker and all its running tasks, in one transaction."""
    if not running:
        # An idle worker's beat is one statement, not BEGIN/UPDATE/COMMIT: three of an idle
        # worker's 0.8 statements a second were this transaction.
        async with pool.connection() as conn:
            await heartbeats.beat_worker(conn, _row(info, 0))
        return HeartbeatAnswer(lost=set(), cancel_requested=set())
    async with pool.connection() as conn, conn.transaction():
        await heartbeats.beat_worker(conn, _row(info, len(running)))
        held = await heartbeats.beat_tasks(conn, info.id, running)
    return HeartbeatAnswer(
        lost={t.id for t in running} - set(held),
        cancel_requested={task_id for task_id, cancel in held.items() if cancel},
    )


def _row(info: WorkerInfo, running: int) -> dict[str, Any]:
    return {**msgspec.structs.asdict(info), "running": running}


async def unregister(pool: AsyncConnectionPool, worker_id: str) -> None:
    async with pool.connection() as conn:
        await heartbeats.remove(conn, worker_id)
