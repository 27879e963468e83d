"""One WebSocket (or SSE stream) as the hub sees it: what it follows, its bounded buffer, and
the bounds of SPEC §5 that one connection may cost."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeGuard

from litestar.types import Message

from pgqueue.api.auth import Principal
from pgqueue.api.stream.frames import (
    CLOSE_POLICY,
    CLOSE_SEND_FAILED,
    CLOSE_TOO_SLOW,
    Frame,
    frame,
)
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


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _is_coroutine(value: object) -> TypeGuard[Coroutine[Any, Any, None]]:
    return isinstance(value, Coroutine)


class Allowance:
    """A token bucket: ``burst`` at once, refilled at ``per_s`` per second."""

    __slots__ = ("at", "burst", "left", "per_s")

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


# A frame to send, or a send ``offer`` started that the transport made wait.
Item = Frame | Coroutine[Any, Any, None]


class Subscriber:
    """One WebSocket's (or SSE stream's) subscriptions and its bounded outgoing buffer.

    ``offer`` writes a frame straight to the socket when nothing is waiting to be sent:
    where the server offers a frame writer (``write``, ``wire.FrameWriterProtocol``) the
    frame's prebuilt bytes go to the transport with no ASGI send at all; otherwise the ASGI
    send is started here. That write must complete without waiting; if uvicorn's transport
    pushes back (its buffer is full), the frame (or the started send) waits in ``_pending``
    and a drain task, started then and ending once it has sent them all, sends it and the
    frames queued behind it: the router never waits for a client. An SSE stream has no
    ``send``: its generator ``take``s the frames instead.

    An idle connection therefore costs no task, queue or timer of its own (the hub pings the
    silent ones): with 10,000 subscribers per-connection objects are the server's memory
    (docs/benchmarks.md, "WebSocket fan-out").
    """

    __slots__ = (
        "_buffer",
        "_drainer",
        "_frames_wanted",
        "_pending",
        "_room_wanted",
        "all",
        "bad_ops",
        "base",
        "catching_up",
        "close_code",
        "close_reason",
        "closing",
        "error_replies",
        "pinged_at",
        "principal",
        "queues",
        "revalidate",
        "send",
        "sent",
        "started",
        "task_ids",
        "write",
    )

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
        self._buffer = buffer
        self._pending: collections.deque[Item] | None = None  # made when a frame must wait
        self._drainer: asyncio.Task[None] | None = None  # sends ``_pending``, then ends
        self._frames_wanted: asyncio.Future[None] | None = None  # a ``take`` waits for one
        self._room_wanted: asyncio.Future[None] | None = None  # a ``put`` waits for room
        # Done once the connection must end; ``close_code``/``close_reason`` say how.
        self.closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
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
        self.sent = 0  # frames written, so the hub's keepalive knows the socket was silent
        self.pinged_at = -1  # ``sent`` when the keepalive last looked
        self.send = send  # the socket's ASGI send; None: buffer only (SSE ``take``s)
        self.write = write  # the server's frame writer (``wire``), None: the ASGI send only

    @property
    def idle(self) -> bool:
        """Nothing waits to be sent and no send is under way: a frame may be written now."""
        return self.send is not None and self._drainer is None and not self._pending

    def offer(self, frame: Frame) -> None:
        """Write or queue a frame without waiting; a full buffer marks the subscriber too slow."""
        if self.closing.done():
            return
        if self.idle:
            if self.write is not None:
                try:
                    written = self.write(frame.wire)
                except Exception:
                    # Never the router's problem: this socket goes by the ASGI send from now
                    # on, and the drain task meets whatever is wrong with it there.
                    self.write, written = None, False
                if written:
                    self.sent += 1
                    return  # written: the common case
                # (closing, or the transport is full: the drain task sends it, and waits)
            elif self._start_send(frame):
                return
        self._queue(frame)

    def _start_send(self, frame: Frame) -> bool:
        """Without a frame writer: start the ASGI send here; True if it is written or handed
        to the drain task, False if the frame must be queued."""
        assert self.send is not None
        started = self.send(frame.event)
        assert _is_coroutine(started)  # Litestar's send is an ``async def``
        try:
            blocker = started.send(None)
        except StopIteration:
            self.sent += 1
            return True  # written
        except Exception:
            # e.g. the client is gone: the frame is queued and the drain task meets the same
            # error in its own send (and closes the connection), as without this path.
            return False
        # The send waits for the transport to drain. The drain task resumes it: the
        # future it waits on must look un-awaited again for the task to take it over.
        if isinstance(blocker, asyncio.Future):
            blocker._asyncio_future_blocking = False
        self._queue(started)  # nothing is pending (``idle``), so it fits
        return True

    def _queue(self, item: Item) -> None:
        """Keep ``item`` for the drain task (WebSocket) or the next ``take`` (SSE)."""
        if self._pending is None:
            self._pending = collections.deque()
        if len(self._pending) >= self._buffer:
            self.close(CLOSE_TOO_SLOW, "too slow: resubscribe")
            return
        self._pending.append(item)
        if self.send is None:
            _wake(self._frames_wanted)
        elif self._drainer is None:
            self._drainer = asyncio.create_task(self._drain(), name="pgqueue-ws-send")

    async def _drain(self) -> None:
        """Send what is pending, in order, one message per frame (SPEC §5: no coalescing);
        end once nothing is left (the next frame that must wait starts another)."""
        pending = self._pending
        assert pending is not None
        try:
            while pending and self.send is not None:
                item = pending.popleft()
                _wake(self._room_wanted)
                if isinstance(item, Frame):
                    await self.send(item.event)
                else:
                    # A send that offer() started and the transport made wait. A task resumes
                    # it: ``await`` refuses a coroutine suspended mid-await.
                    await asyncio.ensure_future(item)
                self.sent += 1
        except Exception as exc:
            # The client is gone, or its socket failed: nothing more can reach it.
            self.send = None
            self.close(CLOSE_SEND_FAILED, f"send failed: {type(exc).__name__}")
        finally:
            self._drainer = None

    def stop_sending(self) -> None:
        """No more writes to this connection: its drain task (perhaps stuck writing to a
        client that does not read) is cancelled, and later frames are dropped."""
        self.send, self.write = None, None
        if self._drainer is not None:
            self._drainer.cancel()
            self._drainer = None

    async def take(self) -> Frame | None:
        """(SSE) The next frame, waiting for one; None once the stream must close."""
        while not self._pending:
            if self.closing.done():
                return None
            self._frames_wanted = asyncio.get_running_loop().create_future()
            await self._frames_wanted
        item = self._pending.popleft()
        _wake(self._room_wanted)
        assert isinstance(item, Frame)  # (sends are started only where there is a ``send``)
        return item

    async def put(self, frame: Frame) -> None:
        """Offer a frame, first waiting for room: a replay goes at the pace of the client."""
        while self._pending and len(self._pending) >= self._buffer and not self.closing.done():
            self._room_wanted = asyncio.get_running_loop().create_future()
            await self._room_wanted
        self.offer(frame)

    def coverage(self) -> Coverage:
        """What this subscription covers, for a replay from the audit trail."""
        owner = None if self.principal.sees_all else (self.principal.user_id or "")
        return Coverage(
            everything=self.all, task_ids=list(self.task_ids), queues=list(self.queues), owner=owner
        )

    def close(self, code: int, reason: str) -> None:
        """Ask the connection to close with ``code`` (the first reason given stands)."""
        if not self.closing.done():
            self.close_code, self.close_reason = code, reason
            self.closing.set_result(None)
            _wake(self._frames_wanted)
            _wake(self._room_wanted)

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
