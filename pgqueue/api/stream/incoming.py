"""What a client sends on ``/ws`` (and as the query of ``/events``): subscribe, unsubscribe,
ping. Decoded with its bounds, so an op larger than a connection may hold is refused while
it is decoded."""

from __future__ import annotations

from typing import Annotated

import msgspec

from pgqueue.api.schemas import Input
from pgqueue.tasks import QueueName, TaskId


class StreamOp(Input, frozen=True):
    """A client message: ``{"op": "subscribe"|"unsubscribe", "task_ids"|"queues"|"all"}``."""

    op: Annotated[str, msgspec.Meta(pattern="^(subscribe|unsubscribe|ping)$")]
    # The per-connection bounds of SPEC §5 (``subscriber.MAX_TASK_IDS``, ``MAX_QUEUES``):
    # an op longer than a connection may hold is refused while it is decoded.
    # (decoded only, so typed factories change no encoding)
    task_ids: Annotated[list[TaskId], msgspec.Meta(max_length=1_000)] = msgspec.field(
        default_factory=list[TaskId]
    )
    queues: Annotated[list[QueueName], msgspec.Meta(max_length=100)] = msgspec.field(
        default_factory=list[QueueName]
    )
    all: bool = False
    # Resume (SPEC §5): the ``event_id`` of the last change received; the server first sends
    # every covered change after it. Only on a connection's first subscribe.
    since: Annotated[str, msgspec.Meta(max_length=4096)] | None = None


decode_op = msgspec.json.Decoder(StreamOp).decode
