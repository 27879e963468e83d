"""One WebSocket (or SSE stream) as the hub sees it: what it follows, its bounded buffer, and
the bounds of SPEC §5 that one connection may cost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeGuard

from litestar.types import Message

from pgqueue.api.auth import Principal
from pgqueue.api.stream.frames import CLOSE_POLICY, CLOSE_TOO_SLOW, Frame, frame
from pgqueue.api.stream.wire import WriteFrame
from pgqueue.db.stream import Coverage
from pgqueue.stream import Snapshot, StreamError, Subscribed
from pgqueue.tasks import TaskId

MAX_TASK_IDS = 1_000  # per connection (SPEC §5); StreamOp bounds one op the same way
MAX_QUEUES = 100
# Error replies: a burst of this many, then one per second. Replies beyond are dropped, so a
# flood of bad ops costs the server no frames to write.
ERROR_REPLIES = 10
# Bad ops tolerated: a burst of this many, then one per second; past that, close with 1008.
BAD_OPS = 50

Send = Callable[[Message], Awaitable[None]]


def _is_coroutine(value: object) -> TypeGuard[Coroutine[Any, Any, None]]:
    return isinstance(value, Coroutine)


class Allowance:
    """A token bucket: ``burst`` at once, refilled at ``per_s`` per second."""

    def __init__(self, burst: float, per_s: float) -> None:
        self.burst, self.per_s = burst, per_s
        self.left = burst
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.left = min(self.burst, self.left + (now - self.at) * self.per_s)
        self.at = now
        if self.left < 1:
            return False
        self.left -= 1
        return True


class Subscriber:
    """One WebSocket's subscriptions and its bounded outgoing buffer.

    ``offer`` writes a frame straight to the socket when the sender task is idle and nothing
    is buffered, instead of waking that task (queue put, future, task step) once per frame:
    with many subscribers that wake-up was a large share of the server's CPU per delivered
    message (docs/benchmarks.md has the A/B). Where the server offers a frame writer
    (``write``, ``wire.FrameWriterProtocol``) the frame's prebuilt bytes go to the transport
    with no ASGI send at all; otherwise the ASGI send is started here. The write must
    complete without waiting; if uvicorn's transport pushes back (its buffer is full), the
    frame (or the started send) is handed to the sender task through the buffer, and later
    frames queue behind it: the router never waits for a client.
    """

    def __init__(
        self,
        principal: Principal,
        buffer: int,
        send: Send | None = None,
        revalidate: Callable[[], Awaitable[Principal]] | None = None,
        write: WriteFrame | None = None,
    ) -> None:
        self.principal = principal
        self.task_ids: set[TaskId] = set()
        self.queues: set[str] = set()
        self.all = False
        # Frames, or a send already started by ``offer`` that the sender task must finish.
        self.outbox: asyncio.Queue[Frame | Coroutine[Any, Any, None]] = asyncio.Queue(
            maxsize=buffer
        )
        # Set once the connection must end; ``close_code``/``close_reason`` say how.
        self.closing = asyncio.Event()
        self.close_code = CLOSE_TOO_SLOW
        self.close_reason = ""
        self.revalidate = revalidate  # the principal again, from the token (None: insecure)
        self.error_replies = Allowance(ERROR_REPLIES, 1.0)
        self.bad_ops = Allowance(BAD_OPS, 1.0)
        # Resume (SPEC §5): while ``catching_up`` the hub does not route to this subscriber (it
        # is being replayed to); then, until the hub's own position covers ``base``, live
        # changes that ``base`` already saw are skipped (they were replayed).
        self.catching_up = False
        self.base: Snapshot | None = None
        self.started = False  # a subscribe op was handled (``since`` is for the first one)
        self.sent = 0  # frames written, so the keepalive knows whether the socket was idle
        self.send = send  # the socket's ASGI send; None: buffer only (the sender writes)
        self.write = write  # the server's frame writer (``wire``), None: the ASGI send only
        self.idle = False  # the sender task waits on an empty outbox, no send in flight

    def offer(self, frame: Frame) -> None:
        """Write or queue a frame without waiting; a full buffer marks the subscriber too slow."""
        if self.closing.is_set():
            return
        if self.idle and self.send is not None and self.outbox.empty():
            if self.write is not None:
                try:
                    written = self.write(frame.wire)
                except Exception:
                    # Never the router's problem: this socket goes by the ASGI send from now
                    # on, and the sender task meets whatever is wrong with it there.
                    self.write, written = None, False
                if written:
                    self.sent += 1
                    return  # written: the common case
                # (closing, or the transport is full: the sender task sends it, and waits)
            elif self._start_send(frame):
                return
        try:
            self.outbox.put_nowait(frame)
        except asyncio.QueueFull:
            self.close(CLOSE_TOO_SLOW, "too slow: resubscribe")

    def _start_send(self, frame: Frame) -> bool:
        """Without a frame writer: start the ASGI send here; True if it is written or handed
        to the sender task, False if the frame must be queued."""
        assert self.send is not None
        started = self.send(frame.event)
        assert _is_coroutine(started)  # Litestar's send is an ``async def``
        try:
            blocker = started.send(None)
        except StopIteration:
            self.sent += 1
            return True  # written
        except Exception:
            # e.g. the client is gone: no more writes from here; the frame is queued and
            # the sender task meets the same error in its own send, as without this path.
            self.send = None
            return False
        # The send waits for the transport to drain. The sender task resumes it: the
        # future it waits on must look un-awaited again for the task to take it over.
        if isinstance(blocker, asyncio.Future):
            blocker._asyncio_future_blocking = False
        self.outbox.put_nowait(started)  # empty, so it fits
        return True

    async def put(self, frame: Frame) -> None:
        """Queue a frame, waiting for room: a replay goes at the pace of the client."""
        if not self.closing.is_set():
            await self.outbox.put(frame)

    def coverage(self) -> Coverage:
        """What this subscription covers, for a replay from the audit trail."""
        owner = None if self.principal.sees_all else (self.principal.user_id or "")
        return Coverage(
            everything=self.all, task_ids=list(self.task_ids), queues=list(self.queues), owner=owner
        )

    def close(self, code: int, reason: str) -> None:
        """Ask the connection to close with ``code`` (the first reason given stands)."""
        if not self.closing.is_set():
            self.close_code, self.close_reason = code, reason
            self.closing.set()

    def reject(self, code: str, detail: str) -> None:
        """A bad op: answer it while the error allowance lasts; close a persistent offender."""
        if not self.bad_ops.take():
            self.close(CLOSE_POLICY, "too many bad messages")
        elif self.error_replies.take():
            self.offer(frame(StreamError(detail=detail, code=code)))

    def ack(self, op: str, task_ids: list[TaskId], queues: list[str]) -> None:
        """What ``op`` changed and the totals now (never the whole set: replies stay small)."""
        self.offer(
            frame(
                Subscribed(
                    op=op,
                    task_ids=task_ids,
                    queues=queues,
                    all=self.all,
                    task_id_count=len(self.task_ids),
                    queue_count=len(self.queues),
                )
            )
        )
