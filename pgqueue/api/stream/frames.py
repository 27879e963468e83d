"""What the server writes to a socket (outgoing messages are ``pgqueue.stream``'s, shared
with the client): each message encoded once into one ASGI event, and the close codes."""

from __future__ import annotations

import msgspec
from litestar.types import WebSocketSendEvent

from pgqueue.db.stream import EventRow
from pgqueue.stream import Ping, Pong, Position, Snapshot, TaskMessage, stream_task
from pgqueue.tasks import Task

_encode = msgspec.json.Encoder().encode

CLOSE_GOING_AWAY = 1001  # the server shuts down
CLOSE_POLICY = 1008  # the client keeps sending bad ops
CLOSE_TOO_SLOW = 1013  # "try again later": the client fell behind; reconnect and resubscribe
CLOSE_UNAUTHORIZED = 4401


def frame(message: msgspec.Struct) -> WebSocketSendEvent:
    """The ASGI event for one message, built once and handed to every subscriber's socket.

    Encoded once, decoded to ``str`` once (text frames: clients read JSON), and the same event
    object is passed to uvicorn for every subscriber: ``send_text(bytes)`` decoded and built a
    new event per subscriber, three times the cost per frame (docs/benchmarks.md).
    """
    return {"type": "websocket.send", "bytes": None, "text": _encode(message).decode()}


PING = frame(Ping())
PONG = frame(Pong())


def position_of(row: EventRow, read_from: Position, snapshot: Snapshot) -> Position:
    """The position just after ``row`` in a read from ``read_from`` made in ``snapshot``:
    rows ``read_from.b`` saw come first, then the newer ones, each run by id."""
    if row.in_b:
        return Position(read_from.a, read_from.b, row.id)
    return Position(read_from.b, snapshot, row.id)


def change_frame(row: EventRow, task: Task, at: Position) -> WebSocketSendEvent:
    """One change of the trail as a ``TaskMessage``, with the ``event_id`` to resume after it."""
    view = msgspec.structs.replace(stream_task(task), status=row.status)
    return frame(TaskMessage(event=row.event, task=view, event_id=at.encode()))
