"""The task a just-inserted row holds, built in Python instead of read back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pgqueue.tasks import NewTask, Status, Task, TaskId


def created_task(new: NewTask, payload: Any, inserted: Sequence[Any]) -> Task:
    """The task a just-inserted row holds: the producer's fields, a new row's defaults, and
    what the database decided — ``inserted`` is ``(id, seq, run_at, created_at, user_id, ...)``
    as ``RETURNING`` of sql/queries/task_enqueue.sql gives it.

    Building it here instead of decoding ``RETURNING *`` halves the client's share of an
    enqueue. ``payload`` is the producer's JSON decoded again, so it holds what the database
    holds (jsonb may order object keys differently; the values are the same).
    """
    task_id, seq, run_at, created_at, user_id = inserted[:5]
    # Positional, in Task's (the table's) field order: keywords cost several times as much
    # per task, a quarter of the client's time in a large enqueue_many (docs/benchmarks.md).
    # tests/sql/test_enqueue.py compares the result with the row read back.
    return Task(
        task_id,  # id
        seq,
        new.queue,
        new.kind,
        payload,
        new.priority,
        run_at,
        Status.PENDING,
        0,  # attempts
        new.max_retries,
        new.timeout_s,
        new.backoff_base_s,
        new.backoff_max_s,
        new.idempotency_key,
        user_id,
        list(new.tags),
        TaskId(new.parent_id) if new.parent_id is not None else None,
        None,  # result
        None,  # error
        None,  # exit_code
        None,  # progress
        None,  # checkpoint
        {"input_tokens": 0, "output_tokens": 0, "cost": 0},  # usage: the column's default
        None,  # worker_id
        False,  # cancel_requested
        created_at,
        None,  # started_at
        None,  # heartbeat_at
        None,  # completed_at
        created_at,  # updated_at: now(), as created_at
        new.traceparent,
        [TaskId(d) for d in new.depends_on],
        0,  # deps_left: a pending task's (blocked ones are read back, see Queue)
        new.callback_url,
        None,  # waiting_for
    )
