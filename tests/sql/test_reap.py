"""The reaper, ``pgqueue.reap()`` (SPEC §2): tasks of silent workers are requeued, failed or
cancelled, once each, and the lost lease is fenced off."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from pgqueue.db.pool import connect
from pgqueue.db.queries import QUERIES
from pgqueue.queue import Queue
from pgqueue.tasks import Status
from tests.sql.claiming import claim, complete


async def test_stale_lease_is_refused_after_a_reap(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    await queue.enqueue("k", {}, max_retries=3)
    (task,) = await claim(conn, worker="presumed-dead")
    await conn.execute("UPDATE pgqueue.tasks SET heartbeat_at = now() - interval '1 hour'")
    reaped = await (await conn.execute(QUERIES["task_reap"], {"stall_s": 30})).fetchall()
    assert [(r[0], r[1]) for r in reaped] == [(task.id, "pending")]
    (again,) = await claim(conn, worker="successor")
    assert again.attempts == 2
    assert await complete(queue, task, worker="presumed-dead") == []  # refused
    assert (await queue.get(task.id)).status is Status.RUNNING
    assert len(await complete(queue, again, worker="successor")) == 1
    done = await queue.get(task.id)
    assert (done.status, done.result, done.worker_id) == (Status.COMPLETED, {"ok": 1}, None)


async def test_reap_fails_exhausted_and_cancels_requested(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    exhausted = await queue.enqueue("k", {"n": 1}, max_retries=0)
    to_cancel = await queue.enqueue("k", {"n": 2})
    fresh = await queue.enqueue("k", {"n": 3})
    await claim(conn)
    await queue.cancel(to_cancel.id)
    await conn.execute(
        "UPDATE pgqueue.tasks SET heartbeat_at = now() - interval '1 hour' WHERE id <> %s",
        (fresh.id,),
    )
    await conn.execute("SELECT * FROM pgqueue.reap()")
    assert (await queue.get(exhausted.id)).status is Status.FAILED
    error = (await queue.get(exhausted.id)).error
    assert error is not None and error["type"] == "stalled"
    assert (await queue.get(to_cancel.id)).status is Status.CANCELLED
    assert (await queue.get(fresh.id)).status is Status.RUNNING  # its heartbeat is fresh


async def test_concurrent_reapers_requeue_each_task_once(
    dsn: str, queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    await queue.enqueue_many([{"kind": "k"} for _ in range(200)])
    await claim(conn, limit=200)
    await conn.execute("UPDATE pgqueue.tasks SET heartbeat_at = now() - interval '1 hour'")
    reapers = [await connect(dsn) for _ in range(4)]

    async def reap(c: psycopg.AsyncConnection[Any]) -> int:
        return len(await (await c.execute("SELECT * FROM pgqueue.reap()")).fetchall())

    counts = await asyncio.gather(*(reap(c) for c in reapers))
    for c in reapers:
        await c.close()
    assert sum(counts) == 200
    cur = await conn.execute("SELECT count(*) FROM pgqueue.events WHERE event = 'requeued'")
    assert await cur.fetchone() == (200,)
