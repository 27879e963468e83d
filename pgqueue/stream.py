"""What travels over the WebSocket ``/ws`` (SPEC §5): one definition for server and client.

The server sends ``TaskMessage`` for every change, ``StateMessage`` with a task's current
state when a subscription to its id starts, ``Subscribed`` after each (un)subscribe,
``StreamError`` for a bad message, and ``Ping``/``Pong``. The task is shown without its
payload, which may be large.
"""

from __future__ import annotations

import re
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
    """A change: ``{"type": "task", "event": ..., "task": {...}, "event_id": ...}``.

    ``event_id`` is the stream position just after this change (``Position.encode``): pass it
    as ``since`` (or SSE ``Last-Event-ID``) to resume with the next change.
    """

    event: EventName
    task: StreamTask
    event_id: str = ""


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


class Snapshot(msgspec.Struct, frozen=True):
    """A PostgreSQL snapshot (``pg_snapshot``): the transactions whose work it sees.

    Every transaction below ``xmax`` and not in ``xip`` had ended when it was taken (committed
    or aborted: an aborted one left no rows), every other one had not. Snapshots taken one
    after the other see ever more, so of two snapshots one always ``covers`` the other.
    """

    xmin: int
    xmax: int
    xip: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        """From PostgreSQL's text form ``xmin:xmax:xip,xip``."""
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), tuple(int(x) for x in xip.split(",") if x))

    def text(self) -> str:
        return f"{self.xmin}:{self.xmax}:{','.join(map(str, self.xip))}"

    def sees(self, xid: int) -> bool:
        """Whether the work of transaction ``xid`` is visible (as ``pg_visible_in_snapshot``)."""
        return xid < self.xmin or (xid < self.xmax and xid not in self.xip)

    def covers(self, other: Snapshot) -> bool:
        """Whether this snapshot sees every transaction ``other`` sees."""
        if other.xmax > self.xmax:
            return False
        return all(x >= other.xmax or x in other.xip for x in self.xip)


class Position(msgspec.Struct, frozen=True):
    """A point in the stream of committed changes: every audit row visible in snapshot ``a``,
    plus those visible in ``b`` (which covers ``a``) with ``id <= after_id``.

    Within one read, rows are sent by id, so a message's position names exactly what was sent
    up to it, however the transactions committed; see docs/architecture.md, "Gap-free stream
    positions". Encoded as the opaque ``event_id``: a few base-36 numbers, xids relative to
    ``xmin``.
    """

    a: Snapshot
    b: Snapshot
    after_id: int = 0

    @classmethod
    def at(cls, snapshot: Snapshot) -> Position:
        """Everything ``snapshot`` sees, nothing more."""
        return cls(snapshot, snapshot, 0)

    def encode(self) -> str:
        return f"{_snap36(self.a)}~{_snap36(self.b)}~{_b36(self.after_id)}"

    @classmethod
    def decode(cls, event_id: str) -> Position:
        """The position of an ``event_id``; ``ValueError`` when it is not one."""
        parts = event_id.split("~")
        if len(event_id) > 100_000 or len(parts) != 3:
            raise ValueError("not an event id")
        a, b = _unsnap36(parts[0]), _unsnap36(parts[1])
        after_id = _num36(parts[2])
        if not b.covers(a) or after_id >= 2**63:
            raise ValueError("not an event id")
        return cls(a, b, after_id)


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _snap36(s: Snapshot) -> str:
    return ".".join([_b36(s.xmin), _b36(s.xmax - s.xmin), *(_b36(x - s.xmin) for x in s.xip)])


def _num36(text: str) -> int:
    if not _BASE36.fullmatch(text):
        raise ValueError("not an event id")
    return int(text, 36)


def _unsnap36(text: str) -> Snapshot:
    numbers = [_num36(part) for part in text.split(".")]
    if len(numbers) < 2:
        raise ValueError("not an event id")
    xmin, width, *rest = numbers
    xip = tuple(sorted({xmin + x for x in rest}))
    if xmin + width >= 2**63 or any(x >= xmin + width for x in xip):
        raise ValueError("not an event id")
    return Snapshot(xmin, xmin + width, xip)


_BASE36 = re.compile("[0-9a-z]{1,13}")  # 13 base-36 digits hold any xid8


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
