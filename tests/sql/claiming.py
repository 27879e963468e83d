"""What the SQL tests do as a worker: claim through the worker's own statement
(``task_claim``) and complete through ``finish_many``."""

from __future__ import annotations

from typing import Any

import psycopg

from pgqueue.db.queries import QUERIES
from pgqueue.db.rows import task_row
from pgqueue.db.transitions import finish, finish_many
from pgqueue.outcomes import Completed
from pgqueue.queue import Queue
from pgqueue.tasks import Task


async def claim(
    conn: psycopg.AsyncConnection[Any],
    limit: int = 10,
    *,
    worker: str = "w1",
    queues: list[str] | None = None,
    kinds: list[str] | None = None,
) -> list[Task]:
    cur = conn.cursor(row_factory=task_row)
    await cur.execute(
        QUERIES["task_claim"],
        {
            "worker_id": worker,
            "queues": queues or ["default"],
            "kinds": kinds or ["k"],
            "limit": limit,
        },
    )
    return await cur.fetchall()


async def complete(queue: Queue, task: Task, worker: str = "w1") -> list[Any]:
    row = finish(task.id, task.attempts, worker, Completed(result={"ok": 1}))
    return list(await finish_many(queue.pool, [row]))
