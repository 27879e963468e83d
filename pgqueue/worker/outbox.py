"""The local worker's ``Recorder``: outcomes written in batches, one statement per flush.

While one flush is in flight, finished tasks accumulate; the next flush writes them all with
``task_finish_many`` (at most ``MAX_FLUSH``), whatever mix of outcomes they are. There is no
timer: an idle worker records a completion at once (latency), a busy one batches by itself
(throughput). A failed flush (database restart) is retried until it succeeds; a row the
database refuses (stale lease: the task was reaped and given to another worker) is dropped,
which is the at-least-once contract; a batch the database refuses as such (a value jsonb
cannot store) is written row by row, and the culprit recorded as ``unrecordable_outcome``.

A task is still ``running`` in the database until its outcome is written, so the core stops
claiming while more than ``concurrency`` outcomes wait (``unrecorded``; see core.py), and
flushes stay small and quick. docs/benchmarks.md has what a worker did without that bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

import psycopg
from psycopg_pool import AsyncConnectionPool

from pgqueue.db.transitions import Finish, finish, finish_many
from pgqueue.outcomes import Outcome, unrecordable
from pgqueue.settings import Settings
from pgqueue.tasks import Task
from pgqueue.worker.context import Reporter
from pgqueue.worker.handlers import Handler

log = logging.getLogger(__name__)

# Outcomes per flush statement: keeps each transaction short whatever the concurrency (a flush
# of tens of thousands held its row locks for seconds; docs/benchmarks.md).
MAX_FLUSH = 1000


class Outbox:
    """A queue of (task, outcome) with one background flusher; ``reporter`` serves the
    handlers' progress, checkpoints and children meanwhile."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        settings: Settings,
        worker_id: str,
        handlers: Mapping[str, Handler],
        reporter: Reporter,
        *,
        on_recorded: Callable[[], None] = lambda: None,
    ) -> None:
        self.reporter = reporter
        self._pool = pool
        self._settings = settings
        self._handlers = handlers
        self._worker_id = worker_id
        self._pending: list[tuple[Task, Outcome]] = []
        self._flushing: list[tuple[Task, Outcome]] = []
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.recorded = 0  # outcomes written, for tests and stats
        # Called after each committed flush: a claim made before the completion committed
        # saw the old running count of a concurrency-limited queue and may have got nothing.
        self._on_recorded = on_recorded

    @property
    def unrecorded(self) -> int:
        """Outcomes not yet written: their tasks still hold a worker slot."""
        return len(self._pending) + len(self._flushing)

    def put(self, task: Task, outcome: Outcome) -> None:
        self._pending.append((task, outcome))
        self._idle.clear()
        self._ready.set()

    async def drained(self) -> None:
        """Wait until every outcome put so far is written (or refused)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Flush forever (cancel to stop; call ``drained()`` first to lose nothing)."""
        delay = 0.05
        while True:
            await self._ready.wait()
            batch = self._flushing = self._pending[:MAX_FLUSH]
            del self._pending[:MAX_FLUSH]
            if not self._pending:
                self._ready.clear()
            try:
                await self._flush(batch)
                delay = 0.05
            except psycopg.OperationalError as exc:
                log.warning("recording %d outcomes failed (%s); retrying", len(batch), exc)
                self._pending[:0] = batch
                self._flushing = []
                self._ready.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except Exception:
                # The database refused the batch itself (say, a result jsonb cannot store):
                # record one by one so only the culprit is affected.
                await self._flush_one_by_one(batch)
            self._flushing = []
            self._on_recorded()  # slots are free: the claim loop may claim again
            if not self._pending:
                self._idle.set()

    async def _flush_one_by_one(self, batch: list[tuple[Task, Outcome]]) -> None:
        for task, outcome in batch:
            try:
                await self._flush([(task, outcome)])
            except psycopg.OperationalError:
                self._pending.append((task, outcome))  # the connection, not the row: retry
                self._ready.set()
            except Exception as exc:
                log.warning("task %s: its outcome cannot be stored (%s); failing it", task.id, exc)
                try:
                    failed = unrecordable(outcome, f"the database refused it: {exc}")
                    await self._flush([(task, failed)])
                except psycopg.Error:
                    log.exception("task %s: not even its failure could be recorded", task.id)

    async def _flush(self, batch: list[tuple[Task, Outcome]]) -> None:
        await finish_many(self._pool, [self._row(task, outcome) for task, outcome in batch])
        self.recorded += len(batch)

    def _row(self, task: Task, outcome: Outcome) -> Finish:
        # Backoff: the task's own override (applied in SQL), else the handler's, else settings.
        handler = self._handlers.get(task.kind)
        return finish(
            task.id,
            task.attempts,
            self._worker_id,
            outcome,
            backoff_base_s=(handler and handler.backoff_base_s) or self._settings.backoff_base_s,
            backoff_max_s=(handler and handler.backoff_max_s) or self._settings.backoff_max_s,
        )
