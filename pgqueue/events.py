"""Notification channels and their payloads: what travels over LISTEN/NOTIFY.

NOTIFY is a hint, never the source of truth: workers also poll, and stream subscribers
first read the current state. Channels and payload shapes are defined by the triggers in
``sql/functions/triggers.sql``; this module is their Python side.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from pgqueue.tasks import Status, TaskId

WAKEUP: Final = "pgqueue_wakeup"
"""Payload: a queue name that just got a due task. Workers listen."""

CANCEL: Final = "pgqueue_cancel"
"""Payload: the id of a running task whose cancel was requested. Workers listen."""

EVENTS: Final = "pgqueue_events"
"""Payload: a JSON array of task changes (see ``TaskChange``). Streams, waiters, workers listen."""

EventName = Literal[
    "created",
    "started",
    "progress",
    "checkpoint",
    "retry_scheduled",
    "completed",
    "failed",
    "cancel_requested",
    "cancelled",
    "requeued",
    # workflows (SPEC §10, §11): blocked -> pending, running -> waiting, waiting -> pending
    "unblocked",
    "waiting",
    "signalled",
    "wait_timed_out",
]


class TaskChange(msgspec.Struct, array_like=True, frozen=True):
    """One change as published: ``[task_id, event, status, queue, user_id]``.

    (Schemas before migration 0004 appended the event id; trailing elements are ignored.)
    """

    task_id: TaskId
    event: EventName
    status: Status
    queue: str
    user_id: str | None


_decoder = msgspec.json.Decoder(list[TaskChange])


def decode_changes(payload: str) -> list[TaskChange]:
    """Decode a ``pgqueue_events`` payload."""
    return _decoder.decode(payload)
