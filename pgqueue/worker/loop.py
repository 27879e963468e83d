"""The local worker: the worker core (``core.py``) with the database as both its edges.

``DbClaimer`` claims with ``task_claim`` and sleeps, when nothing is due, until the earliest
future ``run_at`` it knows of (at most ``poll_s``: polling is only the fallback for a missed
NOTIFY); its heartbeat keeps the worker's row and its running tasks' leases in one
transaction. The ``Outbox`` records outcomes in batches. Around the core run the process's
other supervised loops (the reaper, the scheduler and retention: ``services/``) and its one
LISTEN connection, which wakes the core on ``pgqueue_wakeup``, stops a handler on
``pgqueue_cancel``, and serves ``ctx.wait_children()`` too (channels are added at run time).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import psycopg
from psycopg_pool import AsyncConnectionPool

from pgqueue.db import transitions
from pgqueue.db.listener import Listener
from pgqueue.db.pool import create_pool
from pgqueue.events import CANCEL, WAKEUP
from pgqueue.queue import Queue
from pgqueue.services.maintenance import start_maintenance
from pgqueue.settings import Settings
from pgqueue.tasks import Task, TaskId, new_worker_id
from pgqueue.worker import heartbeat
from pgqueue.worker.core import Core
from pgqueue.worker.handlers import App, worker_queues
from pgqueue.worker.heartbeat import HeartbeatAnswer
from pgqueue.worker.outbox import Outbox
from pgqueue.worker.reporter import DatabaseReporter
from pgqueue.worker.webhooks import with_webhooks

log = logging.getLogger(__name__)


class DbClaimer:
    """Claims from the database; keeps leases with one heartbeat transaction."""

    claim_wait_s = 0.0  # a database claim never waits: NOTIFY wakes the core instead

    def __init__(
        self, pool: AsyncConnectionPool, info: heartbeat.WorkerInfo, poll_s: float
    ) -> None:
        self._pool = pool
        self._info = info
        self._poll_s = poll_s

    async def claim(self, limit: int, running: int) -> list[Task]:
        return await transitions.claim(
            self._pool, self._info.id, self._info.queues, self._info.kinds, limit
        )

    async def idle_s(self) -> float:
        """Seconds until the earliest future task of our queues, capped by the poll interval."""
        try:
            due = await transitions.next_run_at(self._pool, self._info.queues, self._info.kinds)
        except psycopg.OperationalError:
            return self._poll_s
        if due is None:
            return self._poll_s
        wait = float((due - datetime.now(UTC)).total_seconds())
        return min(max(wait, 0.01), self._poll_s)

    async def heartbeat(self, running: Sequence[Task]) -> HeartbeatAnswer:
        return await heartbeat.beat(self._pool, self._info, running)


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
        self.app = app
        self.settings = settings
        self.queues = worker_queues(app, queues, concurrency)
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
        # the handlers' Queue (children, wait_children) shares the pool and the LISTEN
        queue = Queue(settings=settings, pool=self.pool, listener=self.listener)
        self.outbox = Outbox(
            self.pool, settings, self.id, app.handlers, DatabaseReporter(self.pool, queue),
            on_recorded=lambda: self.core.wake(),
        )  # fmt: skip
        self.core = Core(
            app,
            DbClaimer(self.pool, self.info, settings.poll_s),
            self.outbox,
            concurrency=concurrency,
            heartbeat_s=settings.heartbeat_s,
            shutdown_grace_s=settings.shutdown_grace_s,
            # recording needs the database; if it is gone, the reaper requeues them later
            record_timeout_s=max(settings.stall_s, 5.0),
            max_result_bytes=settings.result_limit,
        )
        self.started = self.core.started  # set once claiming, for tests and `dev`

    def stop(self) -> None:
        """Ask for a graceful shutdown (what SIGTERM/SIGINT do)."""
        self.core.stop()

    async def run(self) -> None:
        """Run until ``stop()``; then drain, release what is left, and leave no trace."""
        await self.pool.open(wait=True)
        # Everything started from here on is stopped on the way out, whatever fails: a task
        # of the pool or the listener left running keeps asyncio.run (and the process) alive.
        try:
            self.listener.subscribe(WAKEUP, self._on_wakeup)
            self.listener.subscribe(CANCEL, self._on_cancel)
            self.listener.on_reconnect(self.core.wake)
            await self.listener.start()
            await self._register()
            start_maintenance(self.core.supervisor, self.pool, self.settings)
            log.info(
                "worker %s: queues %s, kinds %s, concurrency %d",
                self.id,
                ",".join(self.queues),
                ",".join(self.app.kinds),
                self.concurrency,
            )
            await self.core.run()
        finally:
            with contextlib.suppress(psycopg.Error):
                await heartbeat.unregister(self.pool, self.id)
            await self.listener.stop()
            await self.pool.close()
        log.info("worker %s stopped", self.id)

    async def _register(self) -> None:
        """Announce this worker; a connection lost meanwhile (a restart, a failover) is no
        reason to exit: the first heartbeat writes the same row (``worker_heartbeat``)."""
        try:
            await heartbeat.register(self.pool, self.info)
        except psycopg.OperationalError as exc:
            log.warning("worker %s: registering failed (%s); the heartbeat will", self.id, exc)

    def _on_wakeup(self, queue: str) -> None:
        if queue in self.queues:
            self.core.wake()

    def _on_cancel(self, payload: str) -> None:
        with contextlib.suppress(ValueError):
            self.core.cancel(TaskId(uuid.UUID(payload)), "cancel requested")
