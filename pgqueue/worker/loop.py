"""The worker: claim what is due, run it, record the outcome, and keep the books.

One loop claims up to the free slots whenever it is woken — by a NOTIFY on its queues, by a
slot freed, by the poll timer (a fallback, and the way future ``run_at`` are found) — and
starts each claimed task as a named asyncio task. Around it run the outbox flusher, the
heartbeat, the reaper, the scheduler and retention, each a small module of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import psycopg
from psycopg_pool import AsyncConnectionPool

from pgqueue import reaper
from pgqueue.db.listener import Listener
from pgqueue.db.pool import create_pool
from pgqueue.db.queries import QUERIES
from pgqueue.db.rows import task_row
from pgqueue.events import CANCEL, WAKEUP
from pgqueue.queue import Queue
from pgqueue.retention import run_retention
from pgqueue.schedules.scheduler import run_scheduler
from pgqueue.settings import Settings
from pgqueue.tasks import Task, TaskId, new_worker_id
from pgqueue.worker import heartbeat
from pgqueue.worker.execute import execute
from pgqueue.worker.handlers import App, worker_queues
from pgqueue.worker.outbox import Outbox
from pgqueue.worker.reporter import DatabaseReporter
from pgqueue.worker.webhooks import with_webhooks

log = logging.getLogger(__name__)


class Worker:
    """Runs an App's handlers for tasks of some queues, ``concurrency`` at a time."""

    def __init__(
        self,
        app: App,
        settings: Settings,
        *,
        queues: list[str] | None = None,
        concurrency: int = 10,
        worker_id: str | None = None,
    ) -> None:
        app, queues = with_webhooks(app, queues, settings)  # the built-in deliveries (§13)
        queues = worker_queues(app, queues, concurrency)
        self.app = app
        self.settings = settings
        self.queues = queues
        self.concurrency = concurrency
        self.id = worker_id or new_worker_id()
        self.info = heartbeat.WorkerInfo(
            id=self.id, queues=self.queues, kinds=app.kinds, concurrency=concurrency
        )
        # claim, flush, heartbeat/reap, and handlers' progress calls share a small pool
        self.pool: AsyncConnectionPool = create_pool(
            settings.dsn, min_size=2, max_size=max(4, min(concurrency, 20))
        )
        self.listener = Listener(settings.listen_target, [WAKEUP, CANCEL])
        self._wake = asyncio.Event()
        self.outbox = Outbox(self.pool, settings, self.id, app.handlers, self._wake.set)
        self._running: dict[TaskId, tuple[Task, asyncio.Task[None]]] = {}
        self._lost: set[TaskId] = set()
        self._stop = asyncio.Event()
        self._shutting_down = asyncio.Event()
        self.started = asyncio.Event()  # set once claiming, for tests and `dev`

    # -- lifecycle --------------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a graceful shutdown (what SIGTERM/SIGINT do)."""
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Run until ``stop()``; then drain, release what is left, and leave no trace."""
        await self.pool.open(wait=True)
        queue = Queue(settings=self.settings, pool=self.pool)
        reporter = DatabaseReporter(self.pool, queue)
        self.listener.subscribe(WAKEUP, self._on_wakeup)
        self.listener.subscribe(CANCEL, self._on_cancel)
        self.listener.on_reconnect(self._wake.set)
        await self.listener.start()
        await heartbeat.register(self.pool, self.info)
        background = [
            asyncio.create_task(self.outbox.run(), name="pgqueue-outbox"),
            asyncio.create_task(
                self._every(self.settings.heartbeat_s, self._heartbeat), name="pgqueue-heartbeat"
            ),
            asyncio.create_task(
                self._every(self.settings.reap_s, self._reap), name="pgqueue-reaper"
            ),
            # Every process runs these too; both are safe when many do (SKIP LOCKED, and an
            # idempotency key per schedule and fire time).
            asyncio.create_task(
                run_scheduler(self.pool, self.settings, self._stop), name="pgqueue-scheduler"
            ),
            asyncio.create_task(
                run_retention(self.pool, self.settings, self._stop), name="pgqueue-retention"
            ),
        ]
        log.info(
            "worker %s: queues %s, kinds %s, concurrency %d",
            self.id,
            ",".join(self.queues),
            ",".join(self.app.kinds),
            self.concurrency,
        )
        try:
            self.started.set()
            await self._claim_loop(reporter)
            await self._drain()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            with contextlib.suppress(psycopg.Error):
                await heartbeat.unregister(self.pool, self.id)
            await self.listener.stop()
            await self.pool.close()
        log.info("worker %s stopped", self.id)

    async def _drain(self) -> None:
        """Graceful shutdown: let running tasks finish within the grace, then release them."""
        running = [t for _, t in self._running.values()]
        if running:
            log.info(
                "waiting up to %.0fs for %d running tasks",
                self.settings.shutdown_grace_s,
                len(running),
            )
            _, late = await asyncio.wait(running, timeout=self.settings.shutdown_grace_s)
            self._shutting_down.set()
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        with contextlib.suppress(TimeoutError):
            # Recording needs the database; if it is gone, the reaper requeues them later.
            await asyncio.wait_for(self.outbox.drained(), timeout=max(self.settings.stall_s, 5))

    # -- claiming ---------------------------------------------------------------------

    async def _claim_loop(self, reporter: DatabaseReporter) -> None:
        delay = 0.1
        while not self._stop.is_set():
            self._wake.clear()
            # Up to `concurrency` finished tasks may wait for their outcome to be written
            # without holding a slot (claims overlap the flush: 20,000 no-ops drained at
            # 8,200/s when every unrecorded outcome held its slot, ~10,000/s like this); past
            # that, they do, so the rows running in the database stay under 2 x concurrency
            # (see outbox.py for what an unbounded outbox did).
            backlog = max(0, self.outbox.unrecorded - self.concurrency)
            free = self.concurrency - len(self._running) - backlog
            timeout = self.settings.poll_s
            if free > 0:
                try:
                    claimed = await self._claim(free)
                    delay = 0.1
                except psycopg.OperationalError as exc:
                    log.warning("claim failed (%s); retrying in %.1fs", exc, delay)
                    await self._sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                for task in claimed:
                    self._start(task, reporter)
                if len(claimed) < free:
                    # Nothing more is due now: sleep until the next run_at we know of. The
                    # handlers just started get the event loop first; the query below would
                    # otherwise sit between a claim and its handler's start (~0.3 ms).
                    await asyncio.sleep(0)
                    timeout = await self._until_next_due()
                # else every free slot got a task: more may be due; a freed slot wakes us.
            await self._sleep(timeout)

    async def _claim(self, limit: int) -> list[Task]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=task_row)
            await cur.execute(
                QUERIES["task_claim"],
                {
                    "worker_id": self.id,
                    "queues": self.queues,
                    "kinds": self.app.kinds,
                    "limit": limit,
                },
            )
            return await cur.fetchall()

    async def _until_next_due(self) -> float:
        """Seconds until the earliest future task of our queues, capped by the poll interval."""
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    QUERIES["task_next_run_at"], {"queues": self.queues, "kinds": self.app.kinds}
                )
                row = await cur.fetchone()
        except psycopg.OperationalError:
            return self.settings.poll_s
        if row is None or row[0] is None:
            return self.settings.poll_s
        wait = float((row[0] - datetime.now(UTC)).total_seconds())
        return min(max(wait, 0.01), self.settings.poll_s)

    async def _sleep(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _start(self, task: Task, reporter: DatabaseReporter) -> None:
        handler = self.app.handlers[task.kind]

        async def run() -> None:
            try:
                outcome, _ = await execute(
                    task,
                    handler,
                    reporter,
                    shutting_down=self._shutting_down,
                    max_result_bytes=self.settings.result_limit,
                )
            finally:
                self._running.pop(task.id, None)
                self._wake.set()  # a slot is free
            if task.id in self._lost:
                self._lost.discard(task.id)
                log.warning(
                    "task %s was reaped while running here; its outcome is dropped", task.id
                )
                return
            self.outbox.put(task, outcome)

        self._running[task.id] = (task, asyncio.create_task(run(), name=f"pgqueue-task-{task.id}"))

    # -- notifications ----------------------------------------------------------------

    def _on_wakeup(self, queue: str) -> None:
        if queue in self.queues:
            self._wake.set()

    def _on_cancel(self, payload: str) -> None:
        with contextlib.suppress(ValueError):
            self._cancel_local(TaskId(uuid.UUID(payload)), "cancel requested")

    def _cancel_local(self, task_id: TaskId, reason: str) -> None:
        entry = self._running.get(task_id)
        if entry is not None:
            log.info("stopping task %s: %s", task_id, reason)
            entry[1].cancel(reason)

    # -- housekeeping -----------------------------------------------------------------

    async def _every(self, interval_s: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await job()
            except psycopg.OperationalError as exc:
                log.warning("%s failed: %s", getattr(job, "__name__", job), exc)
            except psycopg.Error:
                # Keep heartbeating and reaping whatever one round's error was: stopping
                # silently would get every running task of this worker reaped.
                log.exception("%s failed", getattr(job, "__name__", job))

    async def _heartbeat(self) -> None:
        # Only tasks whose handler runs: one whose outcome waits in the outbox is not
        # heartbeated, so if the outbox is stuck the reaper hands the task to another worker.
        answer = await heartbeat.beat(
            self.pool, self.info, [task for task, _ in self._running.values()]
        )
        for task_id in answer.lost:
            self._lost.add(task_id)
            self._cancel_local(task_id, "lost its lease (reaped)")
        for task_id in answer.cancel_requested:
            self._cancel_local(task_id, "cancel requested")

    async def _reap(self) -> None:
        await reaper.reap(self.pool, self.settings.stall_s)
