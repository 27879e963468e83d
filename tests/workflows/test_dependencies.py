"""Dependencies (SPEC §10): blocked until the last dependency completes, cancelled down the
graph when one fails, graphs in one batch, retry by hand, and the enqueue race."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest

from pgqueue.db import transitions
from pgqueue.db.transitions import finish
from pgqueue.errors import InvalidInput, NotFound
from pgqueue.outcomes import Completed, Failed
from pgqueue.queue import Queue
from pgqueue.tasks import Status, Task

Conn = psycopg.AsyncConnection[Any]
FAIL = Failed(error={"type": "E", "message": "no", "retryable": False}, retryable=False)


async def run(queue: Queue, task: Task, outcome: Any = None, queue_name: str = "default") -> None:
    """Claim ``task`` (it must be the next due one of its queue) and record ``outcome``."""
    claimed = await transitions.claim(queue.pool, "w1", [queue_name], None, 1)
    assert [t.id for t in claimed] == [task.id]
    done = await transitions.finish_many(
        queue.pool, [finish(task.id, claimed[0].attempts, "w1", outcome or Completed({"r": 1}))]
    )
    assert task.id in done


async def events(queue: Queue, task: Task) -> list[str]:
    return [e.event for e in await queue.events(task.id)]


async def test_blocked_until_the_last_dependency_completes(queue: Queue) -> None:
    a = await queue.enqueue("k", {}, queue="a")
    b = await queue.enqueue("k", {}, queue="b")
    c = await queue.enqueue("k", {}, depends_on=[a.id, b.id])
    assert (c.status, c.deps_left, c.depends_on) == (Status.BLOCKED, 2, [a.id, b.id])
    assert await transitions.claim(queue.pool, "w1", ["default"], None, 1) == []
    await run(queue, a, queue_name="a")
    assert (await queue.get(c.id)).status == Status.BLOCKED
    await run(queue, b, queue_name="b")
    c = await queue.get(c.id)
    assert (c.status, c.deps_left) == (Status.PENDING, 0)
    assert await events(queue, c) == ["created", "unblocked"]
    page = await queue.list(status=Status.PENDING)
    assert c.id in [t.id for t in page.items]


async def test_completed_dependencies_leave_the_task_pending(queue: Queue) -> None:
    a = await queue.enqueue("k", {})
    await run(queue, a)
    b = await queue.enqueue("k", {}, depends_on=[a.id])
    assert b.status == Status.PENDING


async def test_a_failed_dependency_cancels_the_graph_below_it(queue: Queue) -> None:
    a = await queue.enqueue("k", {}, queue="a")
    b = await queue.enqueue("k", {}, depends_on=[a.id])
    c = await queue.enqueue("k", {}, depends_on=[b.id])
    d = await queue.enqueue("k", {}, depends_on=[b.id, c.id])
    await run(queue, a, FAIL, queue_name="a")
    for t in (b, c, d):
        got = await queue.get(t.id)
        assert got.status == Status.CANCELLED, t
        assert got.error is not None and got.error["type"] == "dependency_failed"
        assert got.error["root"] == str(a.id)
    assert (await queue.get(b.id)).error["dependency"] == str(a.id)  # type: ignore[index]
    # a dependency already failed at enqueue: cancelled at once
    e = await queue.enqueue("k", {}, depends_on=[a.id])
    assert e.status == Status.CANCELLED and e.error and e.error["type"] == "dependency_failed"


async def test_cancelling_a_blocked_task_cancels_its_dependents(queue: Queue) -> None:
    a = await queue.enqueue("k", {}, queue="a")
    b = await queue.enqueue("k", {}, depends_on=[a.id])
    c = await queue.enqueue("k", {}, depends_on=[b.id])
    assert (await queue.cancel(b.id)).status == Status.CANCELLED
    assert (await queue.get(c.id)).status == Status.CANCELLED
    await run(queue, a, queue_name="a")  # its edges are gone; nothing to unblock
    assert (await queue.get(b.id)).status == Status.CANCELLED


async def test_retry_by_hand_goes_back_to_blocked_or_pending(queue: Queue) -> None:
    a = await queue.enqueue("k", {}, queue="a")
    b = await queue.enqueue("k", {}, depends_on=[a.id])
    await queue.cancel(a.id)
    assert (await queue.get(b.id)).status == Status.CANCELLED
    a = await queue.retry(a.id)
    b = await queue.retry(b.id)
    assert (b.status, b.deps_left) == (Status.BLOCKED, 1)
    await run(queue, a, queue_name="a")
    assert (await queue.get(b.id)).status == Status.PENDING
    # and with its dependency completed by then: pending at once
    await run(queue, b, FAIL)
    assert (await queue.retry(b.id)).status == Status.PENDING


async def test_a_graph_in_one_batch(queue: Queue) -> None:
    outside = await queue.enqueue("k", {}, queue="a")
    tasks = await queue.enqueue_many(
        [
            {"kind": "plan", "ref": "plan"},
            {"kind": "step", "ref": "s1", "depends_on_refs": ["plan"]},
            {"kind": "step", "ref": "s2", "depends_on_refs": ["plan"], "depends_on": [outside.id]},
            {"kind": "join", "depends_on_refs": ["s1", "s2"]},
        ]
    )
    plan, s1, s2, join = tasks
    assert [t.status for t in tasks] == [Status.PENDING] + [Status.BLOCKED] * 3
    assert s2.depends_on == [outside.id, plan.id] and join.depends_on == [s1.id, s2.id]
    await run(queue, plan)
    assert {t.status for t in [await queue.get(s1.id), await queue.get(s2.id)]} == {
        Status.PENDING,
        Status.BLOCKED,
    }
    with pytest.raises(InvalidInput, match=r"tasks\[1\].depends_on_refs"):
        await queue.enqueue_many([{"kind": "k"}, {"kind": "k", "depends_on_refs": ["nope"]}])
    with pytest.raises(InvalidInput, match=r"tasks\[1\].ref"):
        await queue.enqueue_many([{"kind": "k", "ref": "x"}, {"kind": "k", "ref": "x"}])


async def test_dependencies_must_be_readable(queue: Queue) -> None:
    alice = await queue.enqueue("k", {}, user_id="alice")
    with pytest.raises(NotFound, match="depends_on"):
        await queue.enqueue("k", {}, user_id="bob", depends_on=[alice.id])
    with pytest.raises(NotFound, match="depends_on"):
        await queue.enqueue("k", {}, depends_on=[uuid.uuid4()])
    with pytest.raises(InvalidInput, match="depends_on"):
        await queue.enqueue("k", {}, depends_on=[uuid.uuid4() for _ in range(101)])
    assert (await queue.enqueue("k", {}, user_id="alice", depends_on=[alice.id])).status == (
        Status.BLOCKED
    )


async def test_psql_gets_the_same_rules(queue: Queue, conn: Conn) -> None:
    a = await queue.enqueue("k", {}, queue="a")
    await conn.execute(
        "INSERT INTO pgqueue.tasks (kind, depends_on) VALUES ('k', ARRAY[%s::uuid])", (a.id,)
    )
    cur = await conn.execute(
        "SELECT (pgqueue.enqueue('k', depends_on => ARRAY[%s::uuid])).status::text", (a.id,)
    )
    assert (await cur.fetchone()) == ("blocked",)
    cur = await conn.execute("SELECT task_id, depends_on FROM pgqueue.blocked_tasks")
    assert len(await cur.fetchall()) == 2
    # a completion written by hand unblocks too
    await conn.execute(
        "UPDATE pgqueue.tasks SET status = 'completed', completed_at = now() WHERE id = %s",
        (a.id,),
    )
    cur = await conn.execute("SELECT count(*) FROM pgqueue.tasks WHERE status = 'pending'")
    assert (await cur.fetchone()) == (2,)
    cur = await conn.execute("SELECT count(*) FROM pgqueue.task_deps")
    assert (await cur.fetchone()) == (0,)


async def test_one_completion_unblocks_many_in_one_statement(queue: Queue) -> None:
    a = await queue.enqueue("k", {}, queue="a")
    await queue.enqueue_many([{"kind": "k", "depends_on": [a.id]} for _ in range(2000)])
    await run(queue, a, queue_name="a")
    page = await queue.list(status=Status.BLOCKED)
    assert page.items == []
    ev = await queue.events((await queue.list(status=Status.PENDING, limit=1)).items[0].id)
    assert [e.event for e in ev] == ["created", "unblocked"]


async def test_handlers_see_dependency_results(queue: Queue, settings: Any) -> None:
    from pgqueue.worker.handlers import App
    from tests.helpers import running_worker

    app = App()
    seen: dict[str, Any] = {}

    @app.task("step")
    async def step(ctx: Any, payload: dict[str, Any]) -> Any:
        if payload.get("join"):
            seen.update(ctx.dependency_results)
        return {"n": payload.get("n")}

    a, b, j = await queue.enqueue_many(
        [
            {"kind": "step", "payload": {"n": 1}, "ref": "a"},
            {"kind": "step", "payload": {"n": 2}, "ref": "b"},
            {"kind": "step", "payload": {"join": True}, "depends_on_refs": ["a", "b"]},
        ]
    )
    async with running_worker(app, settings):
        await queue.wait(j.id, timeout_s=30)
    assert seen == {str(a.id): {"n": 1}, str(b.id): {"n": 2}}


async def test_workflow_events_reach_listeners(queue: Queue, dsn: str) -> None:
    """The changes a stream or a waiter decodes include the workflow events (an unknown
    event name made every listener drop the whole notification)."""
    from pgqueue.events import EVENTS, decode_changes

    seen: list[tuple[Any, str, str]] = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listen:
        listen.add_notify_handler(
            lambda n: seen.extend((c.task_id, c.event, c.status) for c in decode_changes(n.payload))
        )
        await listen.execute(f"LISTEN {EVENTS}")
        a = await queue.enqueue("k", {}, queue="a")
        b = await queue.enqueue("k", {}, depends_on=[a.id])
        await run(queue, a, queue_name="a")
        for _ in range(100):  # notifications are read as the connection talks to the server
            await listen.execute("SELECT 1")
            if (b.id, "unblocked", Status.PENDING) in seen:
                break
            await asyncio.sleep(0.05)
    assert (b.id, "created", Status.BLOCKED) in seen
    assert (b.id, "unblocked", Status.PENDING) in seen
