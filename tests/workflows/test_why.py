"""``why`` for the workflow statuses (SPEC §12): a blocked task names its unfinished
dependencies (``blocked``), a waiting one the signal and deadline it waits for
(``waiting_signal``), and nothing else holds them back while a worker serves their queue."""

from __future__ import annotations

from typing import Any

import psycopg

import pgqueue
from pgqueue.limits import Reason
from pgqueue.queue import Queue
from pgqueue.settings import Settings
from pgqueue.tasks import Status
from pgqueue.worker.handlers import App
from tests.helpers import running_worker, wait_for

app = App()


@app.task("step")
async def step(ctx: pgqueue.Context, payload: Any) -> Any:
    return payload


@app.task("gate")
async def gate(ctx: pgqueue.Context, payload: Any) -> Any:
    return await ctx.wait_for_signal("approval", timeout_s=3600)


async def reasons(queue: Queue, task_id: Any) -> list[Reason]:
    return (await queue.why(task_id)).reasons


async def test_blocked_names_its_unfinished_dependencies(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    await conn.execute(
        "INSERT INTO pgqueue.workers (id, host, pid, queues, kinds, concurrency)"
        " VALUES ('w', 'h', 1, '{default}', '{}', 1)"
    )
    a = await queue.enqueue("step", {}, queue="held-a")
    b = await queue.enqueue("step", {}, queue="held-b")
    fan_in = await queue.enqueue("step", {}, depends_on=[a.id, b.id])
    [reason] = await reasons(queue, fan_in.id)
    assert (reason.code, reason.detail) == ("blocked", "waits for its dependencies to complete")
    assert set(reason.dependencies or []) == {a.id, b.id}

    # one done: only the other is named
    cur = await conn.execute("SELECT id FROM pgqueue.claim('w', '{held-a}', NULL, 1)")
    assert [r[0] for r in await cur.fetchall()] == [a.id]
    await conn.execute(
        "UPDATE pgqueue.tasks SET status = 'completed', completed_at = now() WHERE id = %s",
        (a.id,),
    )
    assert (await queue.get(fan_in.id)).status == Status.BLOCKED
    [reason] = await reasons(queue, fan_in.id)
    assert reason.code == "blocked" and reason.dependencies == [b.id]

    # a blocked task also due later says both
    later = await queue.enqueue("step", {}, depends_on=[b.id], delay_s=600)
    assert [r.code for r in await reasons(queue, later.id)] == ["blocked", "scheduled"]


async def test_waiting_names_the_signal_and_its_deadline(queue: Queue, settings: Settings) -> None:
    async with running_worker(app, settings):
        task = await queue.enqueue("gate", {})

        async def waiting() -> bool:
            return (await queue.get(task.id)).status == Status.WAITING

        await wait_for(waiting, what="the task to wait")
        waited = await queue.get(task.id)
        [reason] = await reasons(queue, task.id)
        assert (reason.code, reason.detail) == ("waiting_signal", "waits for the signal approval")
        assert reason.signal == "approval"
        assert waited.waiting_for is not None and reason.until is not None
        assert abs((reason.until - waited.updated_at).total_seconds() - 3600) < 60
        await queue.signal(task.id, "approval", {"ok": True})
        done = await queue.wait(task.id, timeout_s=30)
    assert done.status == Status.COMPLETED
    assert await reasons(queue, task.id) == []  # finished: no reasons
