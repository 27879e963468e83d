"""Operator functions (pause, resume, limits), purge and retention, and the concurrency limit
enforced across workers — against a real database and real workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

import pgqueue
from pgqueue.db.listener import Listener
from pgqueue.db.pool import create_pool
from pgqueue.events import WAKEUP
from pgqueue.queue import Queue
from pgqueue.retention import purge_finished, run_retention
from pgqueue.settings import Settings
from pgqueue.tasks import Status
from tests.helpers import fast_settings, running_worker, wait_for

Conn = psycopg.AsyncConnection[Any]


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[AsyncConnectionPool]:
    p = create_pool(dsn, max_size=4)
    await p.open(wait=True)
    yield p
    await p.close()


async def claim_ids(conn: Conn, queue: str, limit: int = 10, worker: str = "w") -> list[Any]:
    cur = await conn.execute(
        "SELECT id FROM pgqueue.claim(%s, %s, %s, %s)", (worker, [queue], ["k"], limit)
    )
    return [r[0] for r in await cur.fetchall()]


async def test_pause_stops_claims_and_resume_wakes_workers(
    dsn: str, queue: Queue, conn: Conn
) -> None:
    await queue.enqueue_many([{"kind": "k", "queue": "q"} for _ in range(3)])
    cur = await conn.execute("SELECT name, paused FROM pgqueue.pause_queue('q')")
    assert await cur.fetchone() == ("q", True)
    assert await claim_ids(conn, "q") == []
    woken: list[str] = []
    listener = Listener(dsn, [WAKEUP])
    listener.subscribe(WAKEUP, woken.append)
    await listener.start()
    try:
        cur = await conn.execute("SELECT paused FROM pgqueue.resume_queue('q')")
        assert await cur.fetchone() == (False,)

        async def heard() -> bool:
            return "q" in woken

        await wait_for(heard, timeout=10, what="the wake-up NOTIFY of resume_queue")
    finally:
        await listener.stop()
    assert len(await claim_ids(conn, "q")) == 3


async def test_set_queue_limit_caps_claims_and_null_removes_it(queue: Queue, conn: Conn) -> None:
    await queue.enqueue_many([{"kind": "k", "queue": "llm"} for _ in range(10)])
    cur = await conn.execute("SELECT concurrency_limit FROM pgqueue.set_queue_limit('llm', 2)")
    assert await cur.fetchone() == (2,)
    assert len(await claim_ids(conn, "llm", worker="a")) == 2
    assert await claim_ids(conn, "llm", worker="b") == []  # across workers
    await conn.execute("SELECT pgqueue.set_queue_limit('llm', NULL)")
    assert len(await claim_ids(conn, "llm", worker="b")) == 8
    with pytest.raises(psycopg.errors.CheckViolation):
        await conn.execute("SELECT pgqueue.set_queue_limit('llm', 0)")


async def _mixed_tasks(queue: Queue, conn: Conn) -> dict[str, Any]:
    """One task per state; finished ones finished 10 days ago, one finished just now."""
    tasks = await queue.enqueue_many([{"kind": "k"} for _ in range(6)])
    ids = await claim_ids(conn, "default", limit=5)
    for task_id, status in zip(
        ids[:4], ["completed", "failed", "cancelled", "completed"], strict=True
    ):
        await conn.execute(
            "UPDATE pgqueue.tasks SET status = %s, completed_at = now() - interval '10 days',"
            " worker_id = NULL, heartbeat_at = NULL WHERE id = %s",
            (status, task_id),
        )
    await conn.execute("UPDATE pgqueue.tasks SET completed_at = now() WHERE id = %s", (ids[3],))
    # Running and pending tasks that are old: still never purged.
    await conn.execute("UPDATE pgqueue.tasks SET created_at = now() - interval '30 days'")
    return {"old": set(ids[:3]), "recent": ids[3], "running": ids[4], "pending": tasks[5].id}


async def remaining(conn: Conn) -> tuple[set[Any], set[Any]]:
    cur = await conn.execute("SELECT id FROM pgqueue.tasks")
    tasks = {r[0] for r in await cur.fetchall()}
    cur = await conn.execute("SELECT DISTINCT task_id FROM pgqueue.events")
    return tasks, {r[0] for r in await cur.fetchall()}


async def test_purge_function_leaves_running_pending_and_recent_alone(
    queue: Queue, conn: Conn
) -> None:
    made = await _mixed_tasks(queue, conn)
    cur = await conn.execute("SELECT pgqueue.purge('7 days')")
    assert await cur.fetchone() == (3,)
    tasks, with_events = await remaining(conn)
    assert tasks == {made["recent"], made["running"], made["pending"]}
    assert with_events == tasks  # the purged tasks' events went with them


async def test_retention_deletes_in_batches_and_leaves_live_tasks(
    pool: AsyncConnectionPool, queue: Queue, conn: Conn
) -> None:
    made = await _mixed_tasks(queue, conn)
    assert await purge_finished(pool, older_than_s=7 * 86400, batch=2) == 3
    tasks, with_events = await remaining(conn)
    assert tasks == {made["recent"], made["running"], made["pending"]}
    assert with_events == tasks


async def test_run_retention_uses_retention_days(
    dsn: str, pool: AsyncConnectionPool, queue: Queue, conn: Conn
) -> None:
    made = await _mixed_tasks(queue, conn)
    stop = asyncio.Event()
    settings = Settings.from_env({}, dsn=dsn, retention_days=7)
    runner = asyncio.create_task(run_retention(pool, settings, stop, every_s=0.1))

    async def purged() -> bool:
        old: set[Any] = made["old"]
        return old.isdisjoint((await remaining(conn))[0])

    await wait_for(purged, timeout=30, what="retention to purge the old tasks")
    stop.set()
    await asyncio.wait_for(runner, timeout=10)
    assert (await remaining(conn))[0] == {made["recent"], made["running"], made["pending"]}

    # retention_days = 0 keeps everything.
    disabled = Settings.from_env({}, dsn=dsn, retention_days=0)
    await conn.execute(
        "UPDATE pgqueue.tasks SET completed_at = now() - interval '1 year'"
        " WHERE completed_at IS NOT NULL"
    )
    await asyncio.wait_for(run_retention(pool, disabled, asyncio.Event()), timeout=10)
    assert made["recent"] in (await remaining(conn))[0]


@pytest.mark.slow
async def test_concurrency_limit_is_never_exceeded_by_four_workers(
    dsn: str, queue: Queue, conn: Conn
) -> None:
    limit, total = 3, 40
    app = pgqueue.App()

    @app.task("k", queue="llm")
    async def slow(ctx: pgqueue.Context, payload: Any) -> None:
        await asyncio.sleep(0.05)

    await conn.execute("SELECT pgqueue.set_queue_limit('llm', %s)", (limit,))
    settings = fast_settings(dsn)
    samples: list[int] = []
    async with (
        running_worker(app, settings, concurrency=5),
        running_worker(app, settings, concurrency=5),
        running_worker(app, settings, concurrency=5),
        running_worker(app, settings, concurrency=5),
    ):
        await queue.enqueue_many([{"kind": "k", "queue": "llm"} for _ in range(total)])

        async def all_done() -> bool:
            cur = await conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'running'),"
                " count(*) FILTER (WHERE status = 'completed') FROM pgqueue.tasks"
            )
            row = await cur.fetchone()
            assert row is not None
            samples.append(row[0])
            return bool(row[1] == total)

        await wait_for(all_done, timeout=120, interval=0.005, what="all tasks to complete")
    assert max(samples) <= limit, samples
    assert max(samples) == limit  # the limit was reached, so it was what held them back
    assert all(t.status is Status.COMPLETED for t in (await queue.list(limit=100)).items)
