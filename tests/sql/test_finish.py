"""task_finish_many (sql/queries/task_finish.sql) through pgqueue.db.transitions: every outcome
in one statement, the lease fence, and "a cancel wins" (SPEC §2)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors

from pgqueue.db import transitions
from pgqueue.db.queries import QUERIES
from pgqueue.db.transitions import encode_finishes, finish
from pgqueue.outcomes import Cancelled, Completed, Failed, Outcome, Released
from pgqueue.queue import Queue
from pgqueue.tasks import Status, Task, Usage

Conn = psycopg.AsyncConnection[Any]

RETRY = Failed(error={"type": "E", "message": "m", "retryable": True}, retryable=True)
TIMEOUT = Failed(
    error={"type": "timeout", "message": "too slow", "retryable": True}, retryable=True
)


async def running(queue: Queue, n: int = 1, **fields: Any) -> list[Task]:
    await queue.enqueue_many([{"kind": "k", **fields} for _ in range(n)])
    return await transitions.claim(queue.pool, "w1", ["default"], ["k"], n)


async def record(queue: Queue, task: Task, outcome: Outcome) -> dict[Any, Status]:
    row = finish(task.id, task.attempts, "w1", outcome, backoff_base_s=0.01, backoff_max_s=0.01)
    return await transitions.finish_many(queue.pool, [row])


async def test_one_statement_records_any_mix_of_outcomes(queue: Queue, conn: Conn) -> None:
    tasks = await running(queue, 5, max_retries=1)
    outcomes: list[Outcome] = [
        Completed(result={"ok": 1}, usage=Usage(input_tokens=3), exit_code=0),
        RETRY,
        Failed(error={"type": "P", "message": "no", "retryable": False}, retryable=False),
        Cancelled(),
        Released(usage=Usage(cost=0.5)),
    ]
    rows = [
        finish(t.id, t.attempts, "w1", o, backoff_base_s=60, backoff_max_s=60)
        for t, o in zip(tasks, outcomes, strict=True)
    ]
    done = await transitions.finish_many(queue.pool, rows)
    assert [done[t.id] for t in tasks] == [
        Status.COMPLETED,
        Status.PENDING,
        Status.FAILED,
        Status.CANCELLED,
        Status.PENDING,
    ]
    completed, retried, failed, cancelled, released = [await queue.get(t.id) for t in tasks]
    assert (completed.result, completed.exit_code, completed.usage["input_tokens"]) == (
        {"ok": 1},
        0,
        3,
    )
    assert retried.attempts == 1 and retried.error is not None and retried.error["type"] == "E"
    assert (retried.run_at - retried.updated_at).total_seconds() > 40  # the backoff asked for
    assert failed.completed_at is not None and failed.error == {
        "type": "P",
        "message": "no",
        "retryable": False,
    }
    assert cancelled.error is not None and cancelled.error["type"] == "cancelled"
    assert released.attempts == 0 and released.usage["cost"] == 0.5 and released.error is None
    cur = await conn.execute(
        "SELECT event FROM pgqueue.events WHERE event NOT IN ('created', 'started') ORDER BY id"
    )
    assert sorted(r[0] for r in await cur.fetchall()) == sorted(
        ["completed", "retry_scheduled", "failed", "cancelled", "requeued"]
    )


async def test_retries_end_when_attempts_are_used_up(queue: Queue) -> None:
    (task,) = await running(queue, max_retries=0)
    assert await record(queue, task, RETRY) == {task.id: Status.FAILED}


async def test_a_stale_lease_records_nothing(queue: Queue) -> None:
    (task,) = await running(queue)
    wrong_attempt = finish(task.id, task.attempts + 1, "w1", Completed(result=1))
    wrong_worker = finish(task.id, task.attempts, "w2", Completed(result=1))
    assert await transitions.finish_many(queue.pool, [wrong_attempt, wrong_worker]) == {}
    assert (await queue.get(task.id)).status is Status.RUNNING
    assert await record(queue, task, Completed(result=1)) == {task.id: Status.COMPLETED}
    assert await record(queue, task, Completed(result=2)) == {}  # once only


@pytest.mark.parametrize(
    "outcome",
    [RETRY, TIMEOUT, Released(), Cancelled()],
    ids=["retry", "timeout", "release", "cancelled"],
)
async def test_a_cancel_wins(queue: Queue, conn: Conn, outcome: Outcome) -> None:
    (task,) = await running(queue)
    await queue.cancel(task.id)
    assert await record(queue, task, outcome) == {task.id: Status.CANCELLED}
    ended = await queue.get(task.id)
    assert ended.status is Status.CANCELLED and ended.completed_at is not None
    assert ended.error is not None and ended.error["type"] == "cancelled"
    assert ended.attempts == 1
    if isinstance(outcome, Failed):  # what the attempt ended with is kept
        assert ended.error["attempt_error"]["type"] == outcome.error["type"]
    # never handed out again
    assert await transitions.claim(queue.pool, "w2", ["default"], ["k"], 10) == []


async def test_a_completion_that_lands_first_keeps_completed(queue: Queue) -> None:
    (task,) = await running(queue)
    await queue.cancel(task.id)
    assert await record(queue, task, Completed(result="done")) == {task.id: Status.COMPLETED}
    assert (await queue.get(task.id)).result == "done"


async def test_the_schema_refuses_a_pending_task_whose_cancel_was_requested(
    queue: Queue, conn: Conn
) -> None:
    """No writer (psql included) can put such a task where a claim would see it."""
    (task,) = await running(queue)
    await queue.cancel(task.id)
    with pytest.raises(pg_errors.CheckViolation, match="tasks_cancel_wins"):
        await conn.execute(
            "UPDATE pgqueue.tasks SET status = 'pending', worker_id = NULL WHERE id = %s",
            (task.id,),
        )


async def test_the_stall_of_a_task_whose_cancel_was_requested_cancels_it(
    queue: Queue, conn: Conn
) -> None:
    (task,) = await running(queue)
    await queue.cancel(task.id)
    await conn.execute("UPDATE pgqueue.tasks SET heartbeat_at = now() - interval '1 hour'")
    await conn.execute("SELECT * FROM pgqueue.reap()")
    assert (await queue.get(task.id)).status is Status.CANCELLED
    assert await transitions.claim(queue.pool, "w2", ["default"], ["k"], 10) == []


async def test_outcomes_are_not_found_through_the_running_index(queue: Queue, conn: Conn) -> None:
    """Each outcome is a probe of tasks_pkey (on a table this small the planner may read it
    whole instead). Fenced by `status = 'running'`, the statement matched tasks_running_idx's
    predicate and the planner hash-joined a scan of that whole index: every running task of
    every worker, and the dead entries a drain leaves behind while autovacuum is behind
    (task_finish.sql)."""
    # Statistics as a drain leaves them (autovacuum, which also analyzes, is off or behind):
    # taken when few tasks ran, so the index looks small next to the outcomes of a flush.
    tasks = await running(queue, 100)
    await queue.enqueue_many([{"kind": "k"} for _ in range(3000)])
    await conn.execute("ANALYZE pgqueue.tasks")
    tasks += await transitions.claim(queue.pool, "w1", ["default"], ["k"], 3000)

    async def scans() -> int:
        await conn.execute("SELECT pg_stat_force_next_flush()")  # flushed when idle
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        cur = await conn.execute(
            "SELECT idx_scan FROM pg_stat_user_indexes"
            " WHERE indexrelid = 'pgqueue.tasks_running_idx'::regclass"
        )
        return int((await cur.fetchone() or (0,))[0])

    before = await scans()
    rows = [finish(t.id, t.attempts, "w1", Completed(result=None)) for t in tasks[-500:]]
    # on this connection, whose statistics scans() flushes
    cur = await conn.execute(
        QUERIES["task_finish_many"], {"items": encode_finishes(rows), "token_id": None}
    )
    assert len(await cur.fetchall()) == 500
    assert await scans() == before
