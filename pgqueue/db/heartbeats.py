"""A worker's heartbeats (``sql/queries/task_maintain.sql``): its row in ``pgqueue.workers``,
the ``heartbeat_at`` of the tasks it runs, and their progress and checkpoints, each task
statement fenced by the lease (attempt and worker id)."""

from __future__ import annotations

import os
import socket
from collections.abc import Collection, Mapping
from typing import Any

import msgspec

from pgqueue.db.queries import QUERIES
from pgqueue.db.rows import Conn
from pgqueue.errors import StaleLease
from pgqueue.tasks import Task, TaskId


class WorkerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What the workers table shows about this process."""

    id: str
    queues: list[str]
    kinds: list[str]
    concurrency: int
    host: str = msgspec.field(default_factory=socket.gethostname)
    pid: int = msgspec.field(default_factory=os.getpid)


async def register(conn: Conn, info: WorkerInfo) -> None:
    """Create (or refresh) the worker's row at start-up."""
    await conn.execute(QUERIES["worker_register"], msgspec.structs.asdict(info))


async def beat_worker(conn: Conn, worker: Mapping[str, Any], token_id: int | None = None) -> bool:
    """Refresh a worker's row (re-created if the reaper removed it during an outage).

    ``worker`` has ``WorkerInfo``'s fields and ``running``. A remote worker's row is bound
    to the API token it claims with (local workers': none); False when another token holds
    that worker id: its leases are not this caller's."""
    cur = await conn.execute(QUERIES["worker_heartbeat"], {**worker, "token_id": token_id})
    return await cur.fetchone() is not None


async def beat_tasks(conn: Conn, worker_id: str, running: Collection[Task]) -> dict[TaskId, bool]:
    """Refresh ``heartbeat_at`` of the tasks this worker still holds, each at its attempt.

    Returns ``{held task id: cancel requested}``; a task missing from it was lost (reaped)."""
    cur = await conn.execute(
        QUERIES["task_heartbeat_many"],
        {
            "ids": [t.id for t in running],
            "attempts": [t.attempts for t in running],
            "worker_id": worker_id,
        },
    )
    return {TaskId(task_id): bool(cancel) for task_id, cancel in await cur.fetchall()}


async def remove(conn: Conn, worker_id: str) -> None:
    """A worker that shut down cleanly leaves no row behind."""
    await conn.execute(QUERIES["worker_remove"], {"id": worker_id})


async def progress(conn: Conn, task: Task, progress: str) -> bool:
    """Store a running task's progress (JSON text); returns whether a cancel is requested.

    ``StaleLease`` when the attempt is no longer this worker's."""
    return await _fenced(conn, "task_progress", task, {"progress": progress})


async def checkpoint(conn: Conn, task: Task, token: str, data: str) -> bool:
    """Store a running task's checkpoint (``data`` as JSON text); as ``progress``."""
    return await _fenced(conn, "task_checkpoint", task, {"token": token, "data": data})


async def _fenced(conn: Conn, query: str, task: Task, params: dict[str, Any]) -> bool:
    fence = {"id": task.id, "attempt": task.attempts, "worker_id": task.worker_id}
    cur = await conn.execute(QUERIES[query], {**params, **fence})
    row = await cur.fetchone()
    if row is None:
        raise StaleLease(f"task {task.id}: attempt {task.attempts} is no longer this worker's")
    return bool(row[0])
