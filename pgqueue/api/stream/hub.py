"""The ``Hub``: the WebSocket (and SSE) subscribers of one process, fed by one LISTEN
connection. It keeps who follows what (``Subscriptions``), runs the router that reads the
audit trail for them (``Router``), answers subscribe and unsubscribe ops, and closes the
connections whose token stopped working.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from litestar.exceptions import NotAuthorizedException
from psycopg_pool import AsyncConnectionPool

from pgqueue.api.auth import Principal
from pgqueue.api.stream.frames import CLOSE_GOING_AWAY, CLOSE_UNAUTHORIZED, PING, frame
from pgqueue.api.stream.incoming import StreamOp
from pgqueue.api.stream.router import RESYNC, Router, fetch_tasks
from pgqueue.api.stream.subscriber import MAX_QUEUES, MAX_TASK_IDS, Send, Subscriber
from pgqueue.api.stream.subscriptions import Subscriptions
from pgqueue.api.stream.wire import WriteFrame
from pgqueue.db import stream as db_stream
from pgqueue.db.listener import Listener
from pgqueue.events import EVENTS
from pgqueue.stream import Position, StateMessage, stream_task
from pgqueue.tasks import TaskId

log = logging.getLogger(__name__)


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
        ping_s: float = 10.0,
    ) -> None:
        self._pool = pool
        self._buffer = buffer
        self._auth_check_s = auth_check_s
        self._ping_s = ping_s
        self._subs = Subscriptions()
        self._router = Router(pool, self._subs)
        self._routing: asyncio.Task[None] | None = None
        self._checker: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self.dropped = 0  # subscribers closed for being too slow, for metrics
        listener.subscribe(EVENTS, self._router.on_notify)
        listener.on_reconnect(lambda: self._router.on_notify(RESYNC))

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    @property
    def position(self) -> Position | None:
        """Where the router stands on the trail; None: cold."""
        return self._router.position

    def start(self) -> None:
        self._routing = asyncio.create_task(self._router.route_forever(), name="pgqueue-ws-hub")
        self._checker = asyncio.create_task(self._check_tokens_forever(), name="pgqueue-ws-auth")
        self._pinger = asyncio.create_task(self._ping_forever(), name="pgqueue-ws-ping")

    async def stop(self) -> None:
        for task in (self._routing, self._checker, self._pinger):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def close_all(
        self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down", wait_s: float = 5
    ) -> None:
        """Close every connection with ``code`` (1001 on shutdown); wait up to ``wait_s`` for
        the endpoints to finish their close handshakes."""
        for sub in list(self._subs.subscribers):
            sub.close(code, reason)
        if self._subs.subscribers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subs.drained.wait(), wait_s)

    async def _check_tokens_forever(self) -> None:
        """Close the connections whose token stopped working (revoked, deleted).

        Each check is the Authenticator's own: a cache hit while the cache trusts the token,
        one shared lookup once it expires. So a revoked token's sockets close within the
        cache's lifetime plus ``auth_check_s``, at the cost of a hash per socket per check.
        """
        while True:
            await asyncio.sleep(self._auth_check_s)
            for sub in list(self._subs.subscribers):
                if sub.revalidate is None or sub.closing.done():
                    continue
                try:
                    await sub.revalidate()
                except NotAuthorizedException as exc:
                    sub.close(CLOSE_UNAUTHORIZED, str(exc.detail)[:120])
                except Exception:
                    # The database may be down: keep the socket, the next check asks again.
                    log.exception("stream hub could not check a connection's token")

    async def _ping_forever(self) -> None:
        """Ping every WebSocket that was sent nothing for a whole interval, so that proxies
        keep it open (``{"type": "ping"}``, docs/api.md). One loop for all of them: a timer
        per connection was memory and wake-ups that 10,000 idle sockets do not need. (An SSE
        stream pings from its own generator.)"""
        while True:
            await asyncio.sleep(self._ping_s)
            for sub in list(self._subs.subscribers):
                if sub.idle and sub.sent == sub.pinged_at:  # (``idle``: a WebSocket)
                    sub.offer(PING)
                sub.pinged_at = sub.sent

    # -- subscriptions ------------------------------------------------------------------

    def add(
        self,
        principal: Principal,
        send: Send | None = None,
        revalidate: Callable[[], Awaitable[Principal]] | None = None,
        write: WriteFrame | None = None,
    ) -> Subscriber:
        sub = Subscriber(principal, self._buffer, send, revalidate, write)
        self._subs.add(sub)
        return sub

    def remove(self, sub: Subscriber) -> None:
        if self._subs.remove(sub):
            self._router.went_cold()

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
            self._subs.follow_all(sub, True)
        for queue in new_queues:
            self._subs.follow_queue(sub, queue)
        # Index first, read second: a change committed in between is delivered, not missed.
        for tid in new_ids:
            self._subs.follow_task(sub, tid)
        if since is None and first:
            # A new connection starts where the trail stands now, before its state read, and
            # joins the router like a resuming one: it gets every change after that point
            # (whether or not the router has read it yet) and none from before.
            async with self._pool.connection() as conn:
                since = Position.at(await db_stream.snapshot(conn))
        accepted: list[TaskId] = new_ids
        if new_ids:
            found = await fetch_tasks(self._pool, new_ids)
            accepted = []
            missing: list[TaskId] = []
            for tid in new_ids:
                task = found.get(tid)
                if task is None or not sub.principal.may_read(task.user_id):
                    self._subs.unfollow_task(sub, tid)
                    missing.append(tid)
                else:
                    accepted.append(tid)
                    if not resuming:
                        sub.offer(frame(StateMessage(task=stream_task(task))))
            if missing:
                # One reply for the op, however many ids it named.
                sub.reject(
                    "not_found",
                    f"task_ids: {len(missing)} tasks do not exist: {', '.join(map(str, missing))}",
                )
        if first and since is not None:
            await self._router.catch_up(sub, since)
        sub.ack("subscribe", accepted, new_queues)

    def unsubscribe(self, sub: Subscriber, op: StreamOp) -> None:
        if op.all:
            self._subs.follow_all(sub, False)
        gone_queues = [q for q in dict.fromkeys(op.queues) if q in sub.queues]
        for queue in gone_queues:
            self._subs.unfollow_queue(sub, queue)
        gone_ids = [t for t in dict.fromkeys(op.task_ids) if t in sub.task_ids]
        for tid in gone_ids:
            self._subs.unfollow_task(sub, tid)
        sub.ack("unsubscribe", gone_ids, gone_queues)

    async def readable(self, principal: Principal, task_id: TaskId) -> bool:
        """Whether the task exists and ``principal`` may read it."""
        task = (await fetch_tasks(self._pool, [task_id])).get(task_id)
        return task is not None and principal.may_read(task.user_id)

    async def _retained(self, since: Position) -> bool:
        """Whether every audit row after ``since`` is still there (none deleted after it)."""
        async with self._pool.connection() as conn:
            deleted = await db_stream.horizon(conn)
        if deleted is None or deleted < since.a.xmin:
            return True
        # Deleted rows of transactions up to ``deleted``: all must be ones ``since`` saw.
        return since.a.sees(deleted) and not any(x <= deleted for x in since.a.xip)
