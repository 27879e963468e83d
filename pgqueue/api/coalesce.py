"""Concurrent ``POST /tasks`` share one INSERT and one commit (group commit in the server).

Each single enqueue on its own costs a round trip, a transaction and a WAL flush, and in
PostgreSQL the per-statement work (statement triggers, audit row, NOTIFYs) — that alone
capped ``POST /tasks``, with or without HTTP in front, while the same tasks through
``task_insert_many`` cost a small fraction each (docs/benchmarks.md, "Measurements behind
the code"). So requests
that arrive while earlier ones are being written wait for the next statement and go in
together: at low load a request still goes alone and at once (no timer, no added delay);
under load, batches form by themselves.

What a caller sees does not change: it gets its own task once the transaction that holds it
has committed, and its own error. A batch refused as a whole (one payload too large, one
text the database cannot store, ...) is retried one task at a time, so each request gets
the outcome it would have had alone. Tasks with an idempotency key never join a batch:
their replay (200 + ``Idempotent-Replayed``) needs ``Queue.submit``.
"""

from __future__ import annotations

import asyncio
import logging

from pgqueue.queue import Queue
from pgqueue.tasks import NewTask, Task

log = logging.getLogger(__name__)

# At most this many statements in flight from one process: more would only make batches
# smaller; fewer would leave the pool idle while one batch commits. Pool default is 10.
MAX_IN_FLIGHT = 4
# A batch bigger than this waits for the next statement (bounds one transaction's size).
MAX_BATCH = 1000


class EnqueueCoalescer:
    """Single enqueues from concurrent requests, written ``MAX_IN_FLIGHT`` statements at most."""

    def __init__(
        self, queue: Queue, *, max_in_flight: int = MAX_IN_FLIGHT, max_batch: int = MAX_BATCH
    ) -> None:
        if max_in_flight < 1 or max_batch < 1:
            raise ValueError("max_in_flight and max_batch must be >= 1")
        self._queue = queue
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._pending: list[tuple[NewTask, asyncio.Future[Task]]] = []
        self._in_flight = 0
        self._scheduled = False
        self._writers: set[asyncio.Task[None]] = set()
        self.statements = 0  # how many statements were sent (tests read it)

    async def submit(self, task: NewTask) -> Task:
        """Enqueue ``task`` (no idempotency key) and return it once committed."""
        if task.idempotency_key is not None:
            raise ValueError("tasks with an idempotency key go through Queue.submit")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Task] = loop.create_future()
        self._pending.append((task, future))
        if not self._scheduled:
            # Start on the next loop turn, so every request parsed in this turn (uvicorn
            # reads all ready sockets in one) joins the same statement.
            self._scheduled = True
            loop.call_soon(self._start)
        return await future

    def _start(self) -> None:
        self._scheduled = False
        while self._pending and self._in_flight < self._max_in_flight:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self._in_flight += 1
            writer = asyncio.create_task(self._write(batch), name="pgqueue-enqueue-batch")
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)

    async def _write(self, batch: list[tuple[NewTask, asyncio.Future[Task]]]) -> None:
        try:
            await self._insert(batch)
        except asyncio.CancelledError:
            for _, future in batch:  # shutdown: whether it committed is unknown
                future.cancel()
            raise
        finally:
            self._in_flight -= 1
            self._start()  # what arrived meanwhile goes in the next statement

    async def _insert(self, batch: list[tuple[NewTask, asyncio.Future[Task]]]) -> None:
        self.statements += 1
        try:
            if len(batch) == 1:
                created = [(await self._queue.submit(batch[0][0])).task]
            else:
                created = await self._queue.enqueue_many([task for task, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            # One bad task fails the whole statement: give each its own outcome.
            log.debug("batch of %d refused (%s); one at a time", len(batch), exc)
            for task, future in batch:
                await self._insert([(task, future)])
            return
        for (_, future), done in zip(batch, created, strict=True):
            _settle(future, done)


def _settle(future: asyncio.Future[Task], outcome: Task | Exception) -> None:
    """Resolve a request's future, unless the request is gone (client disconnected)."""
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
