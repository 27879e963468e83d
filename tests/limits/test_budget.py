"""The budget stop through the one finish path (task_finish_many) and the reaper: a stopped
task ends failed/budget_exceeded whatever its worker reports, a user's own cancel still wins,
and the daily rollup counts every recorded attempt."""

from __future__ import annotations

from typing import Any

import psycopg

from pgqueue.db.transitions import finish, finish_many
from pgqueue.outcomes import Cancelled, Completed, Failed, Released
from pgqueue.queue import Queue
from pgqueue.tasks import Status, Task, Usage


async def claim_all(conn: psycopg.AsyncConnection[Any], n: int) -> list[Any]:
    cur = await conn.execute("SELECT id, attempts FROM pgqueue.claim('w', '{llm}', NULL, %s)", (n,))
    return await cur.fetchall()


async def test_stopped_tasks_fail_with_budget_exceeded_whatever_the_worker_reports(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    await conn.execute("SELECT pgqueue.set_user_limits('ann', 1, NULL, NULL)")
    tasks = [await queue.enqueue("k", queue="llm", user_id="ann") for _ in range(5)]
    held = await queue.enqueue("k", queue="llm", user_id="ann")
    claimed = dict(await claim_all(conn, 5))
    payer, *rest = tasks
    # the payer's completion crosses the budget: the others are asked to stop, marked
    done = await finish_many(
        queue.pool, [finish(payer.id, 1, "w", Completed(None, usage=Usage(cost=1.5)))]
    )
    assert len(done) == 1
    for t in rest:
        got = await queue.get(t.id)
        assert got.cancel_requested and got.error is not None
        assert got.error["type"] == "budget_exceeded"
    cancelled_by_user = await queue.cancel(rest[3].id)  # a cancel of one's own wins
    assert cancelled_by_user.error is None
    outcomes = [
        Cancelled(),
        Failed({"type": "E", "message": "boom"}, retryable=True),
        Released(),
        Cancelled(),
    ]
    rows = [finish(t.id, claimed[t.id], "w", o) for t, o in zip(rest, outcomes, strict=True)]
    assert len(await finish_many(queue.pool, rows)) == 4
    ended = [await queue.get(t.id) for t in rest]
    assert [t.status for t in ended] == [Status.FAILED] * 3 + [Status.CANCELLED]
    assert all(t.error is not None and t.error["type"] == "budget_exceeded" for t in ended[:3])
    assert ended[1].error is not None and ended[1].error["attempt_error"]["message"] == "boom"
    assert (await queue.get(held.id)).status is Status.PENDING
    assert await claim_all(conn, 5) == []  # over budget: nothing of ann's is claimed

    cur = await conn.execute(
        "SELECT cost::float8, attempts FROM pgqueue.usage_by_day WHERE user_id = 'ann'"
    )
    assert await cur.fetchone() == (1.5, 1)


async def test_reaper_ends_a_stalled_stopped_task_as_budget_exceeded(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    task: Task = await queue.enqueue("k", queue="llm", user_id="bo")
    await claim_all(conn, 1)
    # a budget of 0 is used up at once: set_user_limits stops what runs
    await conn.execute("SELECT pgqueue.set_user_limits('bo', 0, NULL, NULL)")
    await conn.execute(
        "UPDATE pgqueue.tasks SET heartbeat_at = now() - interval '1 hour' WHERE id = %s",
        (task.id,),
    )
    await conn.execute("SELECT * FROM pgqueue.reap()")
    reaped = await queue.get(task.id)
    assert reaped.status is Status.FAILED
    assert reaped.error is not None and reaped.error["type"] == "budget_exceeded"


async def test_the_reaper_sweeps_stops_the_trigger_had_to_skip(
    queue: Queue, conn: psycopg.AsyncConnection[Any], dsn: str
) -> None:
    task = await queue.enqueue("k", queue="llm", user_id="cy")
    await claim_all(conn, 1)
    await conn.execute("SELECT pgqueue.set_user_limits('cy', 5, NULL, NULL)")
    other = await psycopg.AsyncConnection.connect(dsn)
    async with other:
        # a heartbeat (say) holds the row while the budget is lowered: the stop skips it
        await other.execute("SELECT 1 FROM pgqueue.tasks WHERE id = %s FOR UPDATE", (task.id,))
        await conn.execute("SELECT pgqueue.set_user_limits('cy', 0, NULL, NULL)")
        assert not (await queue.get(task.id)).cancel_requested
        await other.rollback()
    await conn.execute("SELECT * FROM pgqueue.reap()")
    assert (await queue.get(task.id)).cancel_requested
