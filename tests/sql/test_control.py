"""Control (``sql/queries/task_control.sql``): what producers and operators do to a task."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgqueue.errors import Conflict
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
