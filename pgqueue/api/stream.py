"""``WS /ws``: live task updates (SPEC §5), one LISTEN connection per process fanned out here.

The ``Hub`` is woken by every ``pgqueue_events`` notification from the process's Listener.
When someone follows a change it names, it reads the audit trail after its position (ONE
query per batch of notifications, never one per subscriber, and one for the rows of the tasks
concerned), encodes each change ONCE into one ASGI event carrying its ``event_id``, and offers
it to each interested subscriber whose principal may read the task (authorization per
message). Each change is its own frame; changes are never merged. A connection's first
subscribe joins the router from a snapshot (a resume's ``since``, or now), so it gets every
change after that point exactly once (docs/architecture.md, "Gap-free stream positions").

An idle subscriber (nothing buffered, its sender task waiting) gets the frame written at once,
when the transport takes it without waiting. Otherwise the frame goes to its bounded buffer
(default 10,000 messages: it holds references to the event shared by all subscribers, so it
costs pointers, not copies; it must exceed the largest burst, e.g. a 10,000-task batch),
drained by its own sender task. The hub never awaits a subscriber: a full buffer closes that
connection (code 1013, "try again later"); the client reconnects and resumes from its last
``event_id`` (or resubscribes, getting the current state first). So a slow or dead client can
neither grow memory nor delay anyone else, and the database is never waited on for it.
Connections are borrowed from the pool only for the batch reads, never held by a stream.

What one connection may cost is bounded (SPEC §5 "Bounds"): at most ``MAX_TASK_IDS`` task
ids and ``MAX_QUEUES`` queues; an op that would pass either is refused whole. Every reply is
proportional to the op that caused it (an ack names what the op changed and the totals, never
the whole set). Bad ops are answered at most ``ERROR_REPLIES`` at a time (refilled per
second), and a connection that keeps sending them is closed with 1008. Every connection's
token is checked again against the Authenticator's cache every ``auth_check_s``: a revoked
token's socket is closed with 4401 once the cache lets go of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeGuard

import msgspec
from litestar import WebSocket, websocket
from litestar.exceptions import NotAuthorizedException, WebSocketDisconnect
from litestar.types import Message, WebSocketSendEvent
from psycopg_pool import AsyncConnectionPool

from pgqueue.api.auth import Principal
from pgqueue.api.schemas import StreamOp
from pgqueue.db import stream as db_stream
from pgqueue.db.listener import Listener
from pgqueue.db.stream import EVERYTHING, Coverage
from pgqueue.events import EVENTS, decode_changes
from pgqueue.stream import (
    Ping,
    Pong,
    Position,
    Snapshot,
    StateMessage,
    StreamError,
    Subscribed,
    TaskMessage,
    stream_task,
)
from pgqueue.tasks import Task, TaskId

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_decode_op = msgspec.json.Decoder(StreamOp)

CLOSE_GOING_AWAY = 1001  # the server shuts down
CLOSE_POLICY = 1008  # the client keeps sending bad ops
CLOSE_TOO_SLOW = 1013  # "try again later": the client fell behind; reconnect and resubscribe
CLOSE_UNAUTHORIZED = 4401
_RESYNC = "__resync__"  # inbox marker: the listener reconnected, notifications were lost

MAX_TASK_IDS = 1_000  # per connection (SPEC §5); StreamOp bounds one op the same way
MAX_QUEUES = 100
# Error replies: a burst of this many, then one per second. Replies beyond are dropped, so a
# flood of bad ops costs the server no frames to write.
ERROR_REPLIES = 10
# Bad ops tolerated: a burst of this many, then one per second; past that, close with 1008.
BAD_OPS = 50
_TAIL_ROWS = 5_000  # audit rows per read of the trail: one read's changes are sent in a burst
_REPLAY_ROWS = 1_000  # per read of a replay, sent at the client's pace
_TAIL_AT_LEAST_S = 1.0  # with notifications coming, read the trail at least this often


def _is_coroutine(value: object) -> TypeGuard[Coroutine[Any, Any, None]]:
    return isinstance(value, Coroutine)


def _frame(message: msgspec.Struct) -> WebSocketSendEvent:
    """The ASGI event for one message, built once and handed to every subscriber's socket.

    Encoded once, decoded to ``str`` once (text frames: clients read JSON), and the same event
    object is passed to uvicorn for every subscriber: ``send_text(bytes)`` decoded and built a
    new event per subscriber (1.2 us against 0.4 us per frame, measured through Litestar).
    """
    return {"type": "websocket.send", "bytes": None, "text": _encode(message).decode()}


_PING = _frame(Ping())
_PONG = _frame(Pong())


Send = Callable[[Message], Awaitable[None]]


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
    with 1,000 subscribers, server user CPU 1.63 -> 1.16 s and 55 -> 43 us per delivered
    message, p99 107 -> 90 ms (medians of 3 interleaved runs of bench/ws_latency.py, 1,000 x
    50 tasks). The write must complete without waiting; if uvicorn's transport pushes back
    (its buffer is full), the started send is handed to the sender task through the buffer,
    and later frames queue behind it: the router never waits for a client.
    """

    def __init__(
        self,
        principal: Principal,
        buffer: int,
        send: Send | None = None,
        revalidate: Callable[[], Awaitable[Principal]] | None = None,
    ) -> None:
        self.principal = principal
        self.task_ids: set[TaskId] = set()
        self.queues: set[str] = set()
        self.all = False
        # Frames, or a send already started by ``offer`` that the sender task must finish.
        self.outbox: asyncio.Queue[WebSocketSendEvent | Coroutine[Any, Any, None]] = asyncio.Queue(
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
        self.idle = False  # the sender task waits on an empty outbox, no send in flight

    def offer(self, frame: WebSocketSendEvent) -> None:
        """Write or queue a frame without waiting; a full buffer marks the subscriber too slow."""
        if self.closing.is_set():
            return
        if self.idle and self.send is not None and self.outbox.empty():
            started = self.send(frame)
            assert _is_coroutine(started)  # Litestar's send is an ``async def``
            try:
                blocker = started.send(None)
            except StopIteration:
                self.sent += 1
                return  # written: the common case
            except Exception:
                # e.g. the client is gone: no more writes from here; the frame is queued and
                # the sender task meets the same error in its own send, as without this path.
                self.send = None
            else:
                # The send waits for the transport to drain. The sender task resumes it: the
                # future it waits on must look un-awaited again for the task to take it over.
                if isinstance(blocker, asyncio.Future):
                    blocker._asyncio_future_blocking = False
                self.outbox.put_nowait(started)  # empty, so it fits
                return
        try:
            self.outbox.put_nowait(frame)
        except asyncio.QueueFull:
            self.close(CLOSE_TOO_SLOW, "too slow: resubscribe")

    async def put(self, frame: WebSocketSendEvent) -> None:
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
            self.offer(_frame(StreamError(detail=detail, code=code)))

    def ack(self, op: str, task_ids: list[TaskId], queues: list[str]) -> None:
        """What ``op`` changed and the totals now (never the whole set: replies stay small)."""
        self.offer(
            _frame(
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


class _Request:
    """A request to the router, done between its reads of the trail: ``sub``'s replay (a
    resume, or the empty one of a new connection) reached ``snapshot``; join it to the live
    changes (and, when the hub is cold, start following the trail from there)."""

    def __init__(self, snapshot: Snapshot | None = None, sub: Subscriber | None = None) -> None:
        self.snapshot = snapshot
        self.sub = sub
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Hub:
    """Routes task changes from the audit trail to the subscribers of this process.

    Notifications (``pgqueue_events``) only wake the router: it then reads the audit rows
    after its ``Position`` (``pgqueue.db.stream.replay``, everything), in the order they are
    sent, so each change goes out with the ``event_id`` a client can resume from. The hub
    follows the trail only while someone is connected (cold otherwise: no reads at all);
    the first subscriber's join warms it up. See docs/architecture.md, "Gap-free stream
    positions".
    """

    def __init__(
        self,
        listener: Listener,
        pool: AsyncConnectionPool,
        *,
        buffer: int = 10_000,
        auth_check_s: float = 1.0,
    ) -> None:
        self._pool = pool
        self._buffer = buffer
        self._auth_check_s = auth_check_s
        self._subscribers: set[Subscriber] = set()
        self._by_task: defaultdict[TaskId, set[Subscriber]] = defaultdict(set)
        self._by_queue: defaultdict[str, set[Subscriber]] = defaultdict(set)
        self._all: set[Subscriber] = set()
        # Payloads (and warm-up requests) waiting for the router. Bounded: if the router
        # cannot keep up, every subscriber is told to resynchronise rather than memory growing.
        self._inbox: asyncio.Queue[str | _Request] = asyncio.Queue(maxsize=10_000)
        # Where the router stands on the trail; None: cold. Only the router sets it, and it
        # does so as soon as a read returns, before it hands out that read's changes.
        self.position: Position | None = None
        self._tailed_at = 0.0
        self._cold = 0  # times the hub went cold: a read that spans one is discarded
        self._router: asyncio.Task[None] | None = None
        self._checker: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()  # set while nobody is connected
        self._drained.set()
        self.dropped = 0  # subscribers closed for being too slow, for metrics
        listener.subscribe(EVENTS, self._on_notify)
        listener.on_reconnect(lambda: self._on_notify(_RESYNC))

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def start(self) -> None:
        self._router = asyncio.create_task(self._route_forever(), name="pgqueue-ws-hub")
        self._checker = asyncio.create_task(self._check_tokens_forever(), name="pgqueue-ws-auth")

    async def stop(self) -> None:
        for task in (self._router, self._checker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def close_all(
        self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down", wait_s: float = 5
    ) -> None:
        """Close every connection with ``code`` (1001 on shutdown); wait up to ``wait_s`` for
        the endpoints to finish their close handshakes."""
        for sub in list(self._subscribers):
            sub.close(code, reason)
        if self._subscribers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), wait_s)

    async def _check_tokens_forever(self) -> None:
        """Close the connections whose token stopped working (revoked, deleted).

        Each check is the Authenticator's own: a cache hit while the cache trusts the token,
        one shared lookup once it expires. So a revoked token's sockets close within the
        cache's lifetime plus ``auth_check_s``, at the cost of a hash per socket per check.
        """
        while True:
            await asyncio.sleep(self._auth_check_s)
            for sub in list(self._subscribers):
                if sub.revalidate is None or sub.closing.is_set():
                    continue
                try:
                    await sub.revalidate()
                except NotAuthorizedException as exc:
                    sub.close(CLOSE_UNAUTHORIZED, str(exc.detail)[:120])
                except Exception:
                    # The database may be down: keep the socket, the next check asks again.
                    log.exception("stream hub could not check a connection's token")

    # -- subscriptions ------------------------------------------------------------------

    def add(
        self,
        principal: Principal,
        send: Send | None = None,
        revalidate: Callable[[], Awaitable[Principal]] | None = None,
    ) -> Subscriber:
        sub = Subscriber(principal, self._buffer, send, revalidate)
        self._subscribers.add(sub)
        self._drained.clear()
        return sub

    def remove(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)
        if not self._subscribers:
            self._drained.set()
            # Cold: nobody to follow the trail for. A read under way is discarded (``_cold``),
            # so the next subscriber does not start from a stale position.
            self.position = None
            self._cold += 1
        self._all.discard(sub)
        for tid in sub.task_ids:
            self._unindex(self._by_task, tid, sub)
        for queue in sub.queues:
            self._unindex(self._by_queue, queue, sub)

    async def subscribe(self, sub: Subscriber, op: StreamOp) -> None:
        """Start following; for task ids, send their current state (readable ones only).

        With ``op.since``: first every covered change after that event id, from the audit
        trail, then live changes, none missed and none twice (no state messages then: the
        changes are the news); a ``since`` past retention gets ``since_expired`` and the
        subscription starts from now. Checked whole before anything changes: an op that would pass
        a bound is refused.
        """
        since: Position | None = None
        if op.since is not None:
            if sub.started:
                sub.reject("bad_message", "since: only on a connection's first subscribe")
                return
            try:
                since = Position.decode(op.since)
            except ValueError:
                sub.reject("bad_message", "since: not an event id of this stream")
                return
        new_ids = [t for t in dict.fromkeys(op.task_ids) if t not in sub.task_ids]
        new_queues = [q for q in dict.fromkeys(op.queues) if q not in sub.queues]
        if len(sub.task_ids) + len(new_ids) > MAX_TASK_IDS:
            sub.reject("too_many", f"task_ids: at most {MAX_TASK_IDS} per connection")
            return
        if len(sub.queues) + len(new_queues) > MAX_QUEUES:
            sub.reject("too_many", f"queues: at most {MAX_QUEUES} per connection")
            return
        if since is not None and not await self._retained(since):
            # Said, and the subscription goes on from now (state first), as after a fresh
            # subscribe: the client re-reads what it needs instead of retrying forever.
            sub.reject("since_expired", "since: older than the retained events; from now on")
            since = None
        first, resuming = not sub.started, since is not None
        sub.started = True
        if first:
            sub.catching_up = True  # from the moment it is indexed: the router skips it
        if op.all:
            sub.all = True
            self._all.add(sub)
        for queue in new_queues:
            sub.queues.add(queue)
            self._by_queue[queue].add(sub)
        # Index first, read second: a change committed in between is delivered, not missed.
        for tid in new_ids:
            sub.task_ids.add(tid)
            self._by_task[tid].add(sub)
        if since is None and first:
            # A new connection starts where the trail stands now, before its state read, and
            # joins the router like a resuming one: it gets every change after that point
            # (whether or not the router has read it yet) and none from before.
            async with self._pool.connection() as conn:
                since = Position.at(await db_stream.snapshot(conn))
        accepted: list[TaskId] = new_ids
        if new_ids:
            found = await self._fetch(new_ids)
            accepted = []
            missing: list[TaskId] = []
            for tid in new_ids:
                task = found.get(tid)
                if task is None or not sub.principal.may_read(task.user_id):
                    self._forget(sub, tid)
                    missing.append(tid)
                else:
                    accepted.append(tid)
                    if not resuming:
                        sub.offer(_frame(StateMessage(task=stream_task(task))))
            if missing:
                # One reply for the op, however many ids it named.
                sub.reject(
                    "not_found",
                    f"task_ids: {len(missing)} tasks do not exist: {', '.join(map(str, missing))}",
                )
        if first and since is not None:
            await self._catch_up(sub, since)
        sub.ack("subscribe", accepted, new_queues)

    def unsubscribe(self, sub: Subscriber, op: StreamOp) -> None:
        if op.all:
            sub.all = False
            self._all.discard(sub)
        gone_queues = [q for q in dict.fromkeys(op.queues) if q in sub.queues]
        for queue in gone_queues:
            sub.queues.discard(queue)
            self._unindex(self._by_queue, queue, sub)
        gone_ids = [t for t in dict.fromkeys(op.task_ids) if t in sub.task_ids]
        for tid in gone_ids:
            self._forget(sub, tid)
        sub.ack("unsubscribe", gone_ids, gone_queues)

    async def readable(self, principal: Principal, task_id: TaskId) -> bool:
        """Whether the task exists and ``principal`` may read it."""
        task = (await self._fetch([task_id])).get(task_id)
        return task is not None and principal.may_read(task.user_id)

    def _forget(self, sub: Subscriber, tid: TaskId) -> None:
        sub.task_ids.discard(tid)
        self._unindex(self._by_task, tid, sub)

    @staticmethod
    def _unindex(index: defaultdict[Any, set[Subscriber]], key: Any, sub: Subscriber) -> None:
        subs = index.get(key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del index[key]

    # -- resume -------------------------------------------------------------------------

    async def _retained(self, since: Position) -> bool:
        """Whether every audit row after ``since`` is still there (none deleted after it)."""
        async with self._pool.connection() as conn:
            deleted = await db_stream.horizon(conn)
        if deleted is None or deleted < since.a.xmin:
            return True
        # Deleted rows of transactions up to ``deleted``: all must be ones ``since`` saw.
        return since.a.sees(deleted) and not any(x <= deleted for x in since.a.xip)

    async def _catch_up(self, sub: Subscriber, since: Position) -> None:
        """Replay what ``sub`` covers after ``since``, at the client's pace; then the router
        joins it to the live changes (``_join``)."""
        position = since
        coverage = sub.coverage()
        while True:
            async with self._pool.connection() as conn:
                read = await db_stream.replay(conn, position, coverage, limit=_REPLAY_ROWS)
            tasks = await self._fetch({row.task_id for row in read.rows}) if read.rows else {}
            at = Position.at(read.snapshot)
            for row in read.rows:
                at = _position_of(row, position, read.snapshot)
                task = tasks.get(row.task_id)
                if task is not None:
                    await sub.put(_change_frame(row, task, at))
            if len(read.rows) < _REPLAY_ROWS:
                break
            position = at  # more to read from where this one stopped
        request = _Request(read.snapshot, sub)
        await self._inbox.put(request)
        await request.done

    async def _join(self, sub: Subscriber, snapshot: Snapshot) -> None:
        """(The router, between reads.) Send ``sub`` what it covers between ``snapshot`` and
        where the router stands, then route to it, skipping what its replay saw (``base``).

        The router does not move meanwhile, so one more read (a few changes: the replay was
        just now) reaches its position; done by the resuming connection itself, the trail
        moved on between its check and its join, for as long as writers kept writing.
        """
        assert self.position is not None
        position = Position.at(snapshot)
        coverage = sub.coverage()
        while not (position.a == position.b and position.b.covers(self.position.b)):
            async with self._pool.connection() as conn:
                read = await db_stream.replay(conn, position, coverage, limit=_REPLAY_ROWS)
            tasks = await self._fetch({row.task_id for row in read.rows}) if read.rows else {}
            at = Position.at(read.snapshot)
            for row in read.rows:
                at = _position_of(row, position, read.snapshot)
                task = tasks.get(row.task_id)
                if task is not None:
                    sub.offer(_change_frame(row, task, at))
            position = at if len(read.rows) == _REPLAY_ROWS else Position.at(read.snapshot)
        sub.base = position.b
        sub.catching_up = False

    # -- routing ------------------------------------------------------------------------

    def _on_notify(self, payload: str) -> None:
        if not self._subscribers:
            return  # nobody listens: not even a decode
        try:
            self._inbox.put_nowait(payload)
        except asyncio.QueueFull:
            log.warning("stream hub is behind by %d notifications; resyncing", self._inbox.qsize())
            for sub in self._subscribers:
                sub.close(CLOSE_TOO_SLOW, "too slow: resubscribe")

    async def _route_forever(self) -> None:
        while True:
            try:
                first = await asyncio.wait_for(self._inbox.get(), _TAIL_AT_LEAST_S)
            except TimeoutError:
                # Quiet: read anyway now and then, should a wake-up have been lost.
                first = _RESYNC
            batch = [first]
            while not self._inbox.empty() and len(batch) < 100:
                batch.append(self._inbox.get_nowait())
            try:
                await self._route(batch)
            except Exception:
                # A failed read (database restart) must not kill the hub, nor lose changes:
                # the position stays, and the read is tried again.
                log.exception("stream hub failed to route %d notifications", len(batch))
                await asyncio.sleep(1)
                with contextlib.suppress(asyncio.QueueFull):
                    self._inbox.put_nowait(_RESYNC)
            finally:
                for item in batch:
                    if isinstance(item, _Request) and not item.done.done():
                        if item.sub is not None:  # its join failed: it must start over
                            item.sub.close(CLOSE_TOO_SLOW, "resume failed: resubscribe")
                        item.done.set_result(None)

    async def _route(self, items: list[str | _Request]) -> None:
        if not self._subscribers:
            self.position = None  # cold: nobody to follow the trail for
            return
        joins = [item for item in items if isinstance(item, _Request) and item.sub is not None]
        must_read = False
        if self.position is None:
            given = [r.snapshot for r in joins if r.snapshot is not None]
            if not given:
                return  # notifications before the first subscriber joined
            # The oldest: every joining subscriber's snapshot covers it.
            start = next(g for g in given if all(o.covers(g) for o in given))
            self.position = Position.at(start)
            # Read at once: changes committed after ``start`` may have been notified already
            # (to a cold hub, which dropped the notifications).
            must_read = True
        for request in joins:
            sub, snapshot = request.sub, request.snapshot
            if sub is not None and snapshot is not None and sub in self._subscribers:
                await self._join(sub, snapshot)
            if not request.done.done():  # (cancelled when the client left meanwhile)
                request.done.set_result(None)
        if not (must_read or self._worth_reading(items)):
            return
        while (read_from := self._tail_position()) is not None:
            cold = self._cold
            async with self._pool.connection() as conn:
                read = await db_stream.replay(conn, read_from, EVERYTHING, limit=_TAIL_ROWS)
            if self._cold != cold:
                return  # everyone left meanwhile: the hub is cold, this read is for no one
            full = len(read.rows) == _TAIL_ROWS
            last = read.rows[-1] if read.rows else None
            self.position = (
                _position_of(last, read_from, read.snapshot)
                if full and last is not None
                else Position.at(read.snapshot)
            )
            self._tailed_at = time.monotonic()
            try:
                await self._deliver(read_from, read)
            except BaseException:
                # The position has moved past changes some subscribers did not get: they
                # must resume from their last event_id, or they would miss them.
                for sub in list(self._subscribers):
                    sub.close(CLOSE_TOO_SLOW, "stream interrupted: resume with since")
                raise
            if not full:
                return

    def _tail_position(self) -> Position | None:
        """Re-read each round: a delivery awaits, and the hub may turn cold (None) meanwhile."""
        return self.position

    def _worth_reading(self, items: list[str | _Request]) -> bool:
        """Read the trail when a notified change interests someone, after a resync, or when
        the last read is a second old: skipped reads only make the next one longer."""
        if time.monotonic() - self._tailed_at > _TAIL_AT_LEAST_S:
            return True
        for item in items:
            if item == _RESYNC:
                return True
            if isinstance(item, str):
                try:
                    changes = decode_changes(item)
                except msgspec.DecodeError:
                    return True
                if any(self._interested(c.task_id, c.queue, c.user_id) for c in changes):
                    return True
        return False

    async def _deliver(self, read_from: Position, read: db_stream.Replay) -> None:
        routed: list[tuple[db_stream.EventRow, list[Subscriber]]] = []
        for row in read.rows:
            subs = self._interested(row.task_id, row.queue, row.user_id)
            if subs:
                routed.append((row, subs))
        if not routed:
            return
        tasks = await self._fetch({row.task_id for row, _ in routed})
        for row, subs in routed:
            task = tasks.get(row.task_id)
            if task is None:
                continue  # purged meanwhile
            at = _position_of(row, read_from, read.snapshot)
            shared: WebSocketSendEvent | None = None
            for sub in subs:
                if sub.base is not None:
                    if at.a.covers(sub.base):
                        sub.base = None  # the trail has passed what its replay saw
                    elif sub.base.sees(row.xid):
                        continue  # replayed already
                    else:
                        sub.offer(_change_frame(row, task, Position(sub.base, at.b, row.id)))
                        continue
                if shared is None:
                    shared = _change_frame(row, task, at)
                sub.offer(shared)
            await asyncio.sleep(0)  # let the senders drain between changes of a burst

    def _interested(self, task_id: TaskId, queue: str, owner: str | None) -> list[Subscriber]:
        candidates = self._all.union(self._by_task.get(task_id, ()), self._by_queue.get(queue, ()))
        return [s for s in candidates if not s.catching_up and s.principal.may_read(owner)]

    async def _fetch(self, ids: Iterable[TaskId]) -> dict[TaskId, Task]:
        async with self._pool.connection() as conn:
            return await db_stream.tasks(conn, ids)


def _position_of(row: db_stream.EventRow, read_from: Position, snapshot: Snapshot) -> Position:
    """The position just after ``row`` in a read from ``read_from`` made in ``snapshot``:
    rows ``read_from.b`` saw come first, then the newer ones, each run by id."""
    if row.in_b:
        return Position(read_from.a, read_from.b, row.id)
    return Position(read_from.b, snapshot, row.id)


def _change_frame(row: db_stream.EventRow, task: Task, at: Position) -> WebSocketSendEvent:
    view = msgspec.structs.replace(stream_task(task), status=row.status)
    return _frame(TaskMessage(event=row.event, task=view, event_id=at.encode()))


# -- the WebSocket endpoint ------------------------------------------------------------


@websocket("/ws")
async def stream(socket: WebSocket[Any, Any, Any]) -> None:
    """Subscribe with ``{"op": "subscribe", "task_ids"|"queues"|"all"}``; see docs/api.md."""
    from pgqueue.api.services import Services

    services: Services = socket.app.state.services
    auth = services.auth
    try:
        principal = await auth.of_connection(socket)
    except NotAuthorizedException as exc:
        await socket.accept()
        await socket.close(code=CLOSE_UNAUTHORIZED, reason=str(exc.detail)[:120])
        return
    await socket.accept()
    hub = services.hub

    async def revalidate() -> Principal:
        return await auth.of_connection(socket)

    sub = hub.add(principal, socket.send, None if auth.insecure else revalidate)
    services.metrics.ws_subscribers.inc()
    receiver = asyncio.create_task(_receive(socket, hub, sub))
    sender = asyncio.create_task(_send(socket, sub))
    keepalive = asyncio.create_task(_keepalive(sub, services.settings.heartbeat_s))
    closing = asyncio.create_task(sub.closing.wait())
    try:
        await asyncio.wait({receiver, sender, closing}, return_when=asyncio.FIRST_COMPLETED)
        if closing.done():
            if sub.close_code == CLOSE_TOO_SLOW:
                hub.dropped += 1
                services.metrics.ws_dropped.inc()
            sender.cancel()  # it may be stuck writing to a client that does not read
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    socket.close(code=sub.close_code, reason=sub.close_reason), 5
                )
    finally:
        sub.send = None  # no direct writes to a finished connection
        hub.remove(sub)
        services.metrics.ws_subscribers.dec()
        for task in (receiver, sender, keepalive, closing):
            task.cancel()
        await asyncio.gather(receiver, sender, keepalive, closing, return_exceptions=True)


async def _receive(socket: WebSocket[Any, Any, Any], hub: Hub, sub: Subscriber) -> None:
    """Read and apply ops, one at a time. A resume (``since``) runs beside the reading, so a
    client that leaves during its replay is noticed; later ops wait for it."""
    resume: asyncio.Task[None] | None = None
    try:
        with contextlib.suppress(WebSocketDisconnect):
            while not sub.closing.is_set():
                raw = await socket.receive_data(mode="text")
                try:
                    op = _decode_op.decode(raw)
                except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                    sub.reject("bad_message", f"message: {str(exc)[:200]}")
                    continue
                if op.op == "ping":
                    sub.offer(_PONG)
                    continue
                if resume is not None:
                    await resume
                    resume = None
                if op.op == "subscribe" and op.since is not None and not sub.started:
                    resume = asyncio.create_task(hub.subscribe(sub, op), name="pgqueue-ws-resume")
                elif op.op == "subscribe":
                    await hub.subscribe(sub, op)
                else:
                    hub.unsubscribe(sub, op)
    finally:
        if resume is not None:
            resume.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resume


async def _send(socket: WebSocket[Any, Any, Any], sub: Subscriber) -> None:
    """Drain the buffer to the socket, one frame per message (SPEC §5: no coalescing).

    A plain ``get()``: the earlier ``wait_for(get(), ping_s)`` made a task and a timer per
    frame; pings are ``_keepalive``'s job. While it waits on an empty buffer (``idle``),
    ``Subscriber.offer`` writes to the socket itself.
    """
    send, get = socket.send, sub.outbox.get
    while True:
        sub.idle = True
        item = await get()
        sub.idle = False
        if isinstance(item, dict):
            await send(item)
        else:
            # A send that offer() started and the transport made wait. A task resumes it:
            # ``await`` refuses a coroutine suspended mid-await.
            await asyncio.ensure_future(item)
        sub.sent += 1


async def _keepalive(sub: Subscriber, ping_s: float) -> None:
    """Offer a ping when nothing was sent for a whole interval (so proxies keep it open)."""
    while True:
        sent = sub.sent
        await asyncio.sleep(ping_s)
        if sub.sent == sent and sub.outbox.empty():
            sub.offer(_PING)
