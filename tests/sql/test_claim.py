"""Claim, lease fencing, reap and notifications: the queue's SQL promises (SPEC §2, §7)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import psycopg
import pytest

from pgqueue.db.pool import connect
from pgqueue.db.queries import QUERIES
from pgqueue.db.rows import task_row
from pgqueue.db.transitions import finish, finish_many
from pgqueue.events import EVENTS, WAKEUP, TaskChange, decode_changes
from pgqueue.outcomes import Cancelled, Completed, Failed
from pgqueue.queue import Queue
from pgqueue.tasks import Status, Task, Usage


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


async def test_claim_order_priority_then_run_at_then_insertion(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    low = await queue.enqueue("k", {"n": "low"}, priority=-5)
    first = await queue.enqueue("k", {"n": "first"})
    second = await queue.enqueue("k", {"n": "second"})
    high = await queue.enqueue("k", {"n": "high"}, priority=10)
    older = await queue.enqueue("k", {"n": "older"})
    await conn.execute(
        "UPDATE pgqueue.tasks SET run_at = run_at - interval '1 minute' WHERE id = %s", (older.id,)
    )
    claimed = await claim(conn)
    assert [t.id for t in claimed] == [high.id, older.id, first.id, second.id, low.id]
    assert all(t.status is Status.RUNNING and t.attempts == 1 for t in claimed)
    assert all(t.lease == "1:w1" for t in claimed)


async def test_claim_commits_asynchronously_without_leaking_the_setting(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    # task_claim turns synchronous_commit off for its own transaction only: a connection
    # that claims and then enqueues must enqueue durably.
    await conn.execute("SET synchronous_commit = remote_apply")  # whatever the server's is
    await queue.enqueue("k")
    assert len(await claim(conn)) == 1
    cur = await conn.execute("SHOW synchronous_commit")
    assert await cur.fetchone() == ("remote_apply",)


async def test_batch_claim_order_ties_follow_insertion(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    batch = await queue.enqueue_many([{"kind": "k", "payload": {"i": i}} for i in range(50)])
    claimed = await claim(conn, limit=50)
    assert [t.id for t in claimed] == [t.id for t in batch]


async def test_delayed_and_other_tasks_are_not_claimed(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    await queue.enqueue("k", delay_s=3600)
    await queue.enqueue("k", queue="elsewhere")
    await queue.enqueue("unknown.kind")
    assert await claim(conn) == []
    due = await queue.enqueue("k")
    assert [t.id for t in await claim(conn)] == [due.id]


async def test_claims_never_wait_for_each_other(dsn: str, queue: Queue) -> None:
    """Two claimers in open transactions get disjoint tasks at once (SKIP LOCKED)."""
    await queue.enqueue_many([{"kind": "k"} for _ in range(10)])
    a, b = await connect(dsn, autocommit=False), await connect(dsn, autocommit=False)
    async with a, b:
        first = await claim(a, limit=6, worker="a")  # transaction stays open: rows locked
        second = await asyncio.wait_for(claim(b, limit=6, worker="b"), timeout=5)
        assert len(first) == 6 and len(second) == 4
        assert not {t.id for t in first} & {t.id for t in second}


async def test_paused_queue_and_concurrency_limit(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    await queue.enqueue_many([{"kind": "k", "queue": "llm"} for _ in range(10)])
    await conn.execute("INSERT INTO pgqueue.queues (name, paused) VALUES ('llm', true)")
    assert await claim(conn, queues=["llm"]) == []
    await conn.execute("UPDATE pgqueue.queues SET paused = false, concurrency_limit = 3")
    assert len(await claim(conn, queues=["llm"], worker="a")) == 3
    assert await claim(conn, queues=["llm"], worker="b") == []


async def complete(queue: Queue, task: Task, worker: str = "w1") -> list[Any]:
    row = finish(task.id, task.attempts, worker, Completed(result={"ok": 1}))
    return list(await finish_many(queue.pool, [row]))


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


async def test_every_transition_is_audited(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    task = await queue.enqueue("k")
    await claim(conn)
    params = {"id": task.id, "attempt": 1, "worker_id": "w1"}
    await conn.execute(QUERIES["task_progress"], {**params, "progress": '{"percent": 50}'})
    await conn.execute(QUERIES["task_checkpoint"], {**params, "token": "t1", "data": '{"s": 1}'})
    failed = Failed(
        error={"type": "E", "message": "m", "retryable": True},
        retryable=True,
        retry_in_s=0,
        usage=Usage(input_tokens=10, output_tokens=2, cost=0.5),
    )
    await finish_many(queue.pool, [finish(task.id, 1, "w1", failed)])
    await claim(conn)
    await queue.cancel(task.id)
    await finish_many(queue.pool, [finish(task.id, 2, "w1", Cancelled())])
    await queue.retry(task.id)
    events = [e.event for e in await queue.events(task.id)]
    assert events == [
        "created",
        "started",
        "progress",
        "checkpoint",
        "retry_scheduled",
        "started",
        "cancel_requested",
        "cancelled",
        "requeued",
    ]
    final = await queue.get(task.id)
    assert final.usage == {"input_tokens": 10, "output_tokens": 2, "cost": 0.5}
    assert final.checkpoint is not None and final.checkpoint["token"] == "t1"


async def test_bulk_insert_does_not_flood_notifications(dsn: str, queue: Queue) -> None:
    """10,000 rows in one statement: one wake-up and ~10000/60 event notifications, not 20,000."""
    got: dict[str, int] = {WAKEUP: 0, EVENTS: 0}
    listener = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    async with listener:
        await listener.execute(f"LISTEN {WAKEUP}")
        await listener.execute(f"LISTEN {EVENTS}")
        await queue.enqueue_many([{"kind": "k", "payload": {"i": i}} for i in range(10_000)])
        await queue.enqueue("k", {"marker": True})  # the last notification we wait for
        changes = 0
        async for n in listener.notifies(timeout=30):
            got[n.channel] += 1
            if n.channel == EVENTS:
                changes += len(msgspec.json.decode(n.payload))
            if changes >= 10_001 and got[WAKEUP] >= 2:
                break
    assert changes == 10_001  # every change is published...
    assert got[EVENTS] <= 10_000 // 60 + 2  # ...in few notifications
    assert got[WAKEUP] == 2  # one per statement and queue


async def test_published_changes_decode_whatever_the_owner_is_called(
    dsn: str, queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    """The triggers build the payload as text: a user id needing JSON escapes must survive."""
    owner = 'ann "the admin" \\ o\'brien\n\u00fc\u2603'
    listener = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    async with listener:
        await listener.execute(f"LISTEN {EVENTS}")
        task = await queue.enqueue("k", user_id=owner, queue="q.1:a-b_c")
        await claim(conn, queues=["q.1:a-b_c"])
        changes: list[TaskChange] = []
        async for n in listener.notifies(timeout=30):
            changes += decode_changes(n.payload)
            if len(changes) == 2:
                break
    assert [(c.task_id, c.event, c.status, c.queue, c.user_id) for c in changes] == [
        (task.id, "created", Status.PENDING, "q.1:a-b_c", owner),
        (task.id, "started", Status.RUNNING, "q.1:a-b_c", owner),
    ]


async def test_purge_leaves_live_tasks_alone(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    done = await queue.enqueue("k", {"n": 1})
    pending = await queue.enqueue("other", {"n": 2})
    (claimed,) = await claim(conn, limit=1)
    assert len(await complete(queue, claimed)) == 1
    running = await queue.enqueue("k", {"n": 3})
    await claim(conn, limit=1)
    await conn.execute(
        "UPDATE pgqueue.tasks SET completed_at = now() - interval '8 days' WHERE id = %s",
        (done.id,),
    )
    cur = await conn.execute("SELECT pgqueue.purge(interval '7 days')")
    assert await cur.fetchone() == (1,)
    left = {t.id for t in (await queue.list()).items}
    assert left == {pending.id, running.id}
    assert await queue.events(done.id) == []


@pytest.mark.parametrize("terminal", ["completed", "failed"])
async def test_cancel_of_a_finished_task_conflicts(
    queue: Queue, conn: psycopg.AsyncConnection[Any], terminal: str
) -> None:
    from pgqueue.errors import Conflict

    task = await queue.enqueue("k")
    await conn.execute(
        "UPDATE pgqueue.tasks SET status = %s, completed_at = now() WHERE id = %s",
        (terminal, task.id),
    )
    with pytest.raises(Conflict, match="cannot be cancelled"):
        await queue.cancel(task.id)


async def test_trigger_functions_never_plan_nested_loops(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    """Cached one-row plans made bulk writes quadratic (61 s for 20,000 rows); see 0001."""
    cur = await conn.execute(
        "SELECT proname, proconfig FROM pg_proc WHERE proname IN ('on_tasks_insert', 'on_tasks_update')"
    )
    configs = dict(await cur.fetchall())
    # (TimeZone=UTC: the JSON times they write must not depend on the session, see 0009)
    assert configs == {
        "on_tasks_insert": ["enable_nestloop=off", "TimeZone=UTC"],
        "on_tasks_update": ["enable_nestloop=off", "TimeZone=UTC"],
    }
