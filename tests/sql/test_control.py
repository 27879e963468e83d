"""Control (``sql/queries/task_control.sql``): what producers and operators do to a task."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from pgqueue.errors import Conflict, NotFound
from pgqueue.queue import Queue


@pytest.mark.parametrize("terminal", ["completed", "failed"])
async def test_cancel_of_a_finished_task_conflicts(
    queue: Queue, conn: psycopg.AsyncConnection[Any], terminal: str
) -> None:
    task = await queue.enqueue("k")
    await conn.execute(
        "UPDATE pgqueue.tasks SET status = %s, completed_at = now() WHERE id = %s",
        (terminal, task.id),
    )
    with pytest.raises(Conflict, match="cannot be cancelled"):
        await queue.cancel(task.id)


@pytest.mark.parametrize("action", ["cancel", "retry", "signal", "why"])
async def test_an_unknown_task_is_not_found(queue: Queue, action: str) -> None:
    """The SQL functions' no_data_found reaches ``Queue`` callers as NotFound naming the id
    (translated in pgqueue/db/errors.py), never as a driver error."""
    task_id = uuid.uuid4()
    calls = {
        "cancel": lambda: queue.cancel(task_id),
        "retry": lambda: queue.retry(task_id),
        "signal": lambda: queue.signal(task_id, "go"),
        "why": lambda: queue.why(task_id),
    }
    with pytest.raises(NotFound, match=f"task {task_id} does not exist"):
        await calls[action]()
