"""What the server writes to a socket (outgoing messages are ``pgqueue.stream``'s, shared
with the client): each message encoded once into one ASGI event and the bytes of its
WebSocket frame, and the close codes."""

from __future__ import annotations

import msgspec
from litestar.types import WebSocketSendEvent

from pgqueue.db.stream import EventRow
from pgqueue.stream import Ping, Pong, Position, Snapshot, TaskMessage, stream_task
from pgqueue.tasks import Task

_encode = msgspec.json.Encoder().encode

CLOSE_GOING_AWAY = 1001  # the server shuts down
CLOSE_POLICY = 1008  # the client keeps sending bad ops
CLOSE_SEND_FAILED = 1011  # a write to the socket failed (the client is most likely gone)
CLOSE_TOO_SLOW = 1013  # "try again later": the client fell behind; reconnect and resubscribe
CLOSE_UNAUTHORIZED = 4401


class Frame:
    """One message as every subscriber's socket gets it, built once for all of them.

    ``wire``: the whole WebSocket frame (a final, unmasked text frame, RFC 6455 §5.2), written
    as is to the transports that take it (``wire.FrameWriterProtocol``). ``event``: the same
    message as an ASGI event, for the others (and SSE reads its ``text``); one object passed
    to uvicorn for every subscriber: ``send_text(bytes)`` decoded and built a new event per
    subscriber, three times the cost per frame (docs/benchmarks.md).
    """

    __slots__ = ("event", "wire")

    def __init__(self, payload: bytes) -> None:
        self.event: WebSocketSendEvent = {
            "type": "websocket.send",
            "bytes": None,
            "text": payload.decode(),
        }
        self.wire = _header(len(payload)) + payload


def _header(length: int) -> bytes:
    if length < 126:
        return bytes((0x81, length))
    if length < 1 << 16:
        return bytes((0x81, 126)) + length.to_bytes(2, "big")
    return bytes((0x81, 127)) + length.to_bytes(8, "big")


def frame(message: msgspec.Struct) -> Frame:
    """The frame of one message: encoded once (text frames: clients read JSON)."""
    return Frame(_encode(message))


PING = frame(Ping())
PONG = frame(Pong())


def position_of(row: EventRow, read_from: Position, snapshot: Snapshot) -> Position:
    """The position just after ``row`` in a read from ``read_from`` made in ``snapshot``:
    rows ``read_from.b`` saw come first, then the newer ones, each run by id."""
    if row.in_b:
        return Position(read_from.a, read_from.b, row.id)
    return Position(read_from.b, snapshot, row.id)


def change_frame(row: EventRow, task: Task, at: Position) -> Frame:
    """One change of the trail as a ``TaskMessage``, with the ``event_id`` to resume after it."""
    view = msgspec.structs.replace(stream_task(task), status=row.status)
    return frame(TaskMessage(event=row.event, task=view, event_id=at.encode()))
