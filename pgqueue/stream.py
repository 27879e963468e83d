"""What travels over the WebSocket ``/ws`` (SPEC §5): one definition for server and client.

The server sends ``TaskMessage`` for every change, ``StateMessage`` with a task's current
state when a subscription to its id starts, ``Subscribed`` after each (un)subscribe,
``StreamError`` for a bad message, and ``Ping``/``Pong``. The task is shown without its
payload, which may be large.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from pgqueue.events import EventName
from pgqueue.tasks import Status, Task, TaskId


class StreamTask(msgspec.Struct, frozen=True):
    """What the stream shows of a task: everything but the payload (which may be large)."""

    id: TaskId
    queue: str
    kind: str
    status: Status
    attempts: int
    max_retries: int
    priority: int
    progress: dict[str, Any] | None
    result: Any
    error: dict[str, Any] | None
    usage: dict[str, Any]
    user_id: str | None
    parent_id: TaskId | None
    tags: list[str]
    worker_id: str | None
    cancel_requested: bool
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime


class TaskMessage(msgspec.Struct, frozen=True, tag="task", tag_field="type"):
    """A change: ``{"type": "task", "event": ..., "task": {...}}``."""

    event: EventName
    task: StreamTask


class StateMessage(msgspec.Struct, frozen=True, tag="state", tag_field="type"):
    """The current state of a task, sent when a subscription to its id starts."""

    task: StreamTask


class Subscribed(msgspec.Struct, frozen=True, tag="subscribed", tag_field="type"):
    """The answer to a subscribe/unsubscribe: what that op changed, and the totals now.

    ``task_ids`` and ``queues`` are the ones the op added (subscribe) or removed
    (unsubscribe), never the whole set, so a reply costs what the op did; ``all`` is whether
    the connection now follows everything it may read.
    """

    op: str
    task_ids: list[TaskId]
    queues: list[str]
    all: bool
    task_id_count: int
    queue_count: int


class StreamError(msgspec.Struct, frozen=True, tag="error", tag_field="type"):
    """A refused message. ``code``: ``bad_message`` (undecodable or invalid), ``too_many``
    (a bound of SPEC §5 would be passed; nothing changed), ``not_found`` (task ids that do
    not exist or are not yours), ``since_expired`` (a resume point older than the retained
    events)."""

    detail: str
    code: str = "bad_message"


class Ping(msgspec.Struct, frozen=True, tag="ping", tag_field="type"):
    pass


class Pong(msgspec.Struct, frozen=True, tag="pong", tag_field="type"):
    pass


StreamMessage = TaskMessage | StateMessage | Subscribed | StreamError | Ping | Pong

decode_message = msgspec.json.Decoder(StreamMessage).decode


def stream_task(task: Task) -> StreamTask:
    return StreamTask(
        id=task.id,
        queue=task.queue,
        kind=task.kind,
        status=task.status,
        attempts=task.attempts,
        max_retries=task.max_retries,
        priority=task.priority,
        progress=task.progress,
        result=task.result,
        error=task.error,
        usage=task.usage,
        user_id=task.user_id,
        parent_id=task.parent_id,
        tags=task.tags,
        worker_id=task.worker_id,
        cancel_requested=task.cancel_requested,
        run_at=task.run_at,
        created_at=task.created_at,
        started_at=task.started_at,
        completed_at=task.completed_at,
        updated_at=task.updated_at,
    )
