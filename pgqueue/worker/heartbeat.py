"""Heartbeats: the worker's row in ``pgqueue.workers`` and its running tasks' ``heartbeat_at``.

The answer also tells the worker which tasks it lost (reaped while it was unreachable: stop
them, their outcome would be refused anyway) and which have a cancel requested (the polling
fallback for a missed NOTIFY).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Collection

import msgspec
from psycopg_pool import AsyncConnectionPool

from pgqueue.db.queries import QUERIES
from pgqueue.tasks import Task, TaskId

log = logging.getLogger(__name__)


class WorkerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What the workers table shows about this process."""

    id: str
    queues: list[str]
    kinds: list[str]
    concurrency: int
    host: str = msgspec.field(default_factory=socket.gethostname)
    pid: int = msgspec.field(default_factory=os.getpid)


class HeartbeatAnswer(msgspec.Struct, frozen=True):
    lost: set[TaskId]
    cancel_requested: set[TaskId]


async def register(pool: AsyncConnectionPool, info: WorkerInfo) -> None:
    async with pool.connection() as conn:
        await conn.execute(QUERIES["worker_register"], msgspec.structs.asdict(info))


async def beat(
    pool: AsyncConnectionPool, info: WorkerInfo, running: Collection[Task]
) -> HeartbeatAnswer:
    """One heartbeat for the worker and all its running tasks, in one transaction."""
    ids = [t.id for t in running]
    # token_id: only remote workers' rows are bound to an API token
    worker = {**msgspec.structs.asdict(info), "running": len(ids), "token_id": None}
    if not ids:
        # An idle worker's beat is one statement, not BEGIN/UPDATE/COMMIT: three of an idle
        # worker's 0.8 statements a second were this transaction.
        async with pool.connection() as conn:
            await conn.execute(QUERIES["worker_heartbeat"], worker)
        return HeartbeatAnswer(lost=set(), cancel_requested=set())
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(QUERIES["worker_heartbeat"], worker)
        cur = await conn.execute(
            QUERIES["task_heartbeat_many"],
            {"ids": ids, "attempts": [t.attempts for t in running], "worker_id": info.id},
        )
        rows = await cur.fetchall()
    held = {TaskId(row[0]) for row in rows}
    return HeartbeatAnswer(
        lost=set(ids) - held, cancel_requested={TaskId(row[0]) for row in rows if row[1]}
    )


async def unregister(pool: AsyncConnectionPool, worker_id: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(QUERIES["worker_remove"], {"id": worker_id})
