"""The router: follows the audit trail for the subscribers of this process and hands each
change to those interested, in trail order, with the ``event_id`` a client resumes from.

Notifications (``pgqueue_events``) only wake it: it then reads the audit rows after its
``Position`` (``pgqueue.db.stream.replay``, everything). It follows the trail only while
someone is connected (cold otherwise: no reads at all); the first subscriber's join warms it
up. A resuming subscriber is replayed to at its own pace (``catch_up``), then joined to the
live changes between two reads of the router, so it gets every change once (docs/
architecture.md, "Gap-free stream positions").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

import msgspec
from psycopg_pool import AsyncConnectionPool

from pgqueue.api.stream.frames import CLOSE_TOO_SLOW, Frame, change_frame, position_of
from pgqueue.api.stream.subscriber import Subscriber
from pgqueue.api.stream.subscriptions import Subscriptions
from pgqueue.db import stream as db_stream
from pgqueue.db.stream import EVERYTHING, Coverage
from pgqueue.events import decode_changes
from pgqueue.stream import Position, Snapshot
from pgqueue.tasks import Task, TaskId

log = logging.getLogger(__name__)

RESYNC = "__resync__"  # inbox marker: the listener reconnected, notifications were lost
_TAIL_ROWS = 5_000  # audit rows per read of the trail: one read's changes are sent in a burst
_REPLAY_ROWS = 1_000  # per read of a replay, sent at the client's pace
_TAIL_AT_LEAST_S = 1.0  # with notifications coming, read the trail at least this often


class _Request:
    """A request to the router, done between its reads of the trail: ``sub``'s replay (a
    resume, or the empty one of a new connection) reached ``snapshot``; join it to the live
    changes (and, when the hub is cold, start following the trail from there)."""

    def __init__(self, snapshot: Snapshot | None = None, sub: Subscriber | None = None) -> None:
        self.snapshot = snapshot
        self.sub = sub
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Router:
    """Routes task changes from the audit trail to the ``Subscriptions`` of this process."""

    def __init__(self, pool: AsyncConnectionPool, subs: Subscriptions) -> None:
        self._pool = pool
        self._subs = subs
        # Payloads (and warm-up requests) waiting for the router. Bounded: if the router
        # cannot keep up, every subscriber is told to resynchronise rather than memory growing.
        self._inbox: asyncio.Queue[str | _Request] = asyncio.Queue(maxsize=10_000)
        # Where the router stands on the trail; None: cold. Only the router sets it, and it
        # does so as soon as a read returns, before it hands out that read's changes.
        self.position: Position | None = None
        self._tailed_at = 0.0
        self._cold = 0  # times the hub went cold: a read that spans one is discarded

    def went_cold(self) -> None:
        """Nobody is left to follow the trail for. A read under way is discarded
        (``_cold``), so the next subscriber does not start from a stale position."""
        self.position = None
        self._cold += 1

    # -- resume -------------------------------------------------------------------------

    async def catch_up(self, sub: Subscriber, since: Position) -> None:
        """Replay what ``sub`` covers after ``since``, at the client's pace; then the router
        joins it to the live changes (``_join``)."""
        position = since
        coverage = sub.coverage()
        while True:
            read, at, frames = await _replay(self._pool, position, coverage)
            for frame in frames:
                await sub.put(frame)
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
            read, at, frames = await _replay(self._pool, position, coverage)
            for frame in frames:
                sub.offer(frame)
            position = at if len(read.rows) == _REPLAY_ROWS else Position.at(read.snapshot)
        sub.base = position.b
        sub.catching_up = False

    # -- routing ------------------------------------------------------------------------

    def on_notify(self, payload: str) -> None:
        if not self._subs.subscribers:
            return  # nobody listens: not even a decode
        try:
            self._inbox.put_nowait(payload)
        except asyncio.QueueFull:
            log.warning("stream hub is behind by %d notifications; resyncing", self._inbox.qsize())
            for sub in self._subs.subscribers:
                sub.close(CLOSE_TOO_SLOW, "too slow: resubscribe")

    async def route_forever(self) -> None:
        while True:
            try:
                first = await asyncio.wait_for(self._inbox.get(), _TAIL_AT_LEAST_S)
            except TimeoutError:
                # Quiet: read anyway now and then, should a wake-up have been lost.
                first = RESYNC
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
                    self._inbox.put_nowait(RESYNC)
            finally:
                for item in batch:
                    if isinstance(item, _Request) and not item.done.done():
                        if item.sub is not None:  # its join failed: it must start over
                            item.sub.close(CLOSE_TOO_SLOW, "resume failed: resubscribe")
                        item.done.set_result(None)

    async def _route(self, items: list[str | _Request]) -> None:
        if not self._subs.subscribers:
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
            if sub is not None and snapshot is not None and sub in self._subs.subscribers:
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
                position_of(last, read_from, read.snapshot)
                if full and last is not None
                else Position.at(read.snapshot)
            )
            self._tailed_at = time.monotonic()
            try:
                await self._deliver(read_from, read)
            except BaseException:
                # The position has moved past changes some subscribers did not get: they
                # must resume from their last event_id, or they would miss them.
                for sub in list(self._subs.subscribers):
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
            if item == RESYNC:
                return True
            if isinstance(item, str):
                try:
                    changes = decode_changes(item)
                except msgspec.DecodeError:
                    return True
                if any(self._subs.interested(c.task_id, c.queue, c.user_id) for c in changes):
                    return True
        return False

    async def _deliver(self, read_from: Position, read: db_stream.Replay) -> None:
        routed: list[tuple[db_stream.EventRow, list[Subscriber]]] = []
        for row in read.rows:
            subs = self._subs.interested(row.task_id, row.queue, row.user_id)
            if subs:
                routed.append((row, subs))
        if not routed:
            return
        tasks = await fetch_tasks(self._pool, {row.task_id for row, _ in routed})
        for row, subs in routed:
            task = tasks.get(row.task_id)
            if task is None:
                continue  # purged meanwhile
            at = position_of(row, read_from, read.snapshot)
            shared: Frame | None = None
            for sub in subs:
                if sub.base is not None:
                    if at.a.covers(sub.base):
                        sub.base = None  # the trail has passed what its replay saw
                    elif sub.base.sees(row.xid):
                        continue  # replayed already
                    else:
                        sub.offer(change_frame(row, task, Position(sub.base, at.b, row.id)))
                        continue
                if shared is None:
                    shared = change_frame(row, task, at)
                sub.offer(shared)
            await asyncio.sleep(0)  # let the senders drain between changes of a burst


async def fetch_tasks(pool: AsyncConnectionPool, ids: Iterable[TaskId]) -> dict[TaskId, Task]:
    async with pool.connection() as conn:
        return await db_stream.tasks(conn, ids)


async def _replay(
    pool: AsyncConnectionPool, position: Position, coverage: Coverage
) -> tuple[db_stream.Replay, Position, list[Frame]]:
    """One read of a replay after ``position``: the read, the position after its last row,
    and the frames of its changes in order (a task purged meanwhile sends none)."""
    async with pool.connection() as conn:
        read = await db_stream.replay(conn, position, coverage, limit=_REPLAY_ROWS)
    tasks = await fetch_tasks(pool, {row.task_id for row in read.rows}) if read.rows else {}
    at = Position.at(read.snapshot)
    frames: list[Frame] = []
    for row in read.rows:
        at = position_of(row, position, read.snapshot)
        task = tasks.get(row.task_id)
        if task is not None:
            frames.append(change_frame(row, task, at))
    return read, at, frames
