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
        # The last answer of the next-due probe, kept until something could have made a task
        # due sooner: an idle worker asked it at every poll, 40 % of what it cost the database
        # doing nothing. ``_known`` says the answer is usable; ``_changes`` counts the
        # invalidations, so an answer that raced one is not kept.
        self._next_due: datetime | None = None
        self._known = False
        self._changes = 0

    def forget_next_due(self) -> None:
        """Something may have made a task of our queues due sooner than the probe said: a
        wake-up NOTIFY (an insert, a retry, a requeue, a limit raised), a listener reconnect
        (notifications lost), an outcome of ours written (it may have opened a circuit
        breaker, whose cool-down's end is "due" too). A claim needs none: it takes only tasks
        due already, and the answer is about later ones."""
        self._known = False
        self._changes += 1

    async def claim(self, limit: int, running: int) -> list[Task]:
        return await transitions.claim(
            self._pool, self._info.id, self._info.queues, self._info.kinds, limit
        )

    async def idle_s(self) -> float:
        """Seconds until the earliest future task of our queues, capped by the poll interval.

        The probe's answer is reused until ``forget_next_due`` or until that moment passes
        (then the claim there found it taken or not due, and only a new probe can tell what
        is next). A task made due without any NOTIFY (an operator's UPDATE in psql) is still
        claimed by the poll: the cache only decides how much sooner than that to wake.
        """
        now = datetime.now(UTC)
        if not self._known or (self._next_due is not None and self._next_due <= now):
            changes = self._changes
            try:
                due = await transitions.next_run_at(self._pool, self._info.queues, self._info.kinds)
            except psycopg.OperationalError:
                return self._poll_s
            if changes == self._changes:  # nothing happened meanwhile that it could miss
                self._next_due, self._known = due, True
            now = datetime.now(UTC)
        else:
            due = self._next_due
        if due is None:
            return self._poll_s
        wait = float((due - now).total_seconds())
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
        self.claimer = DbClaimer(self.pool, self.info, settings.poll_s)
        self.outbox = Outbox(
            self.pool, settings, self.id, app.handlers, DatabaseReporter(self.pool, queue),
            on_recorded=self._wake,
        )  # fmt: skip
        self.core = Core(
            app,
            self.claimer,
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
            self.listener.on_reconnect(self._wake)
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

    def _wake(self) -> None:
        """Claim now, and ask again when the next task is due."""
        self.claimer.forget_next_due()
        self.core.wake()

    def _on_wakeup(self, queue: str) -> None:
        if queue in self.queues:
            self._wake()

    def _on_cancel(self, payload: str) -> None:
        with contextlib.suppress(ValueError):
            self.core.cancel(TaskId(uuid.UUID(payload)), "cancel requested")
