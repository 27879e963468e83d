"""The remote worker: an App's handlers run over the HTTP API, no database credentials.

It is the worker core (``core.py``) with HTTP edges: ``HttpClaimer`` long-polls
``POST /tasks/claim`` and keeps leases alive with ``POST /tasks/{id}/heartbeat`` (whose
answer stops a handler whose task got a cancel request, or was reaped and given to someone
else: 409, its outcome would be refused); ``HttpRecorder`` posts each outcome with its lease
and carries progress and checkpoints as heartbeats. On SIGTERM/SIGINT it stops claiming,
lets running tasks finish for the grace period, then cancels them and releases them back to
pending without spending an attempt.

Like a local worker it also delivers webhooks (SPEC §13, ``worker/webhooks.py``) unless
``PGQUEUE_WEBHOOKS=false``: it signs with its own ``PGQUEUE_WEBHOOK_SECRET`` and checks
targets against its own ``PGQUEUE_WEBHOOK_ALLOW_HOSTS`` (its environment, as for a local
worker; the API never hands the secret out). Without a secret it does not take deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from pgqueue.client import Client, ServerError
from pgqueue.errors import InvalidInput, NotFound, PgQueueError, StaleLease
from pgqueue.outcomes import (
    UNRECORDABLE,
    Cancelled,
    Completed,
    Failed,
    Outcome,
    Released,
    unrecordable,
)
from pgqueue.settings import Settings
from pgqueue.tasks import Task, TaskId, new_worker_id
from pgqueue.worker.core import Core
from pgqueue.worker.handlers import App, Handler, worker_queues
from pgqueue.worker.heartbeat import HeartbeatAnswer
from pgqueue.worker.reporter import HttpReporter
from pgqueue.worker.webhooks import with_webhooks

log = logging.getLogger(__name__)

# Errors of the HTTP edge an outage or a restarting server causes: retried, logged briefly.
TRANSIENT = (httpx.TransportError, ServerError)


class HttpClaimer:
    """Claims by long-poll; heartbeats every running task's lease, one request each."""

    def __init__(
        self,
        client: Client,
        worker_id: str,
        queues: list[str],
        kinds: list[str],
        *,
        concurrency: int,
        claim_wait_s: float,
    ) -> None:
        self._client = client
        self._worker_id = worker_id
        self._queues = queues
        self._kinds = kinds
        self._concurrency = concurrency
        self.claim_wait_s = claim_wait_s

    async def claim(self, limit: int, running: int) -> list[Task]:
        return list(
            await self._client.claim(
                self._worker_id,
                self._queues,
                limit=limit,
                wait_s=self.claim_wait_s,
                kinds=self._kinds,
                host=socket.gethostname(),
                pid=os.getpid(),
                concurrency=self._concurrency,
                running=running,
            )
        )

    async def idle_s(self) -> float:
        return 0.0  # the claim itself waited on the server: claim again at once

    async def heartbeat(self, running: Sequence[Task]) -> HeartbeatAnswer:
        beats = await asyncio.gather(*(self._beat(task) for task in running))
        return HeartbeatAnswer(
            lost={task.id for task, beat in zip(running, beats, strict=True) if beat is None},
            cancel_requested={task.id for task, beat in zip(running, beats, strict=True) if beat},
        )

    async def _beat(self, task: Task) -> bool | None:
        """The task's cancel flag; None when its lease is gone. Any other error: try later."""
        try:
            return await self._client.heartbeat(task.id, task.lease)
        except (StaleLease, NotFound):
            log.warning("task %s was reaped from this worker; stopping it", task.id)
            return None
        except (*TRANSIENT, PgQueueError) as exc:
            # A 401 while the token is rotated, a server restarting: the lease may still
            # hold, the next beat tells.
            log.warning("heartbeat of task %s failed (%s)", task.id, exc)
            return False


class HttpRecorder:
    """Posts each outcome with its lease, concurrently; network errors are retried.

    An outcome the server refuses as such (413: too big; 400: a value it cannot store) is
    recorded once as a permanent ``unrecordable_outcome`` failure, as the local outbox does:
    left alone, the task would run again after the reaper found it.
    """

    def __init__(
        self,
        client: Client,
        handlers: Mapping[str, Handler],
        on_recorded: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = client
        self._handlers = handlers
        self._on_recorded = on_recorded
        self.reporter = HttpReporter(client)
        self._posting: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.recorded = 0  # outcomes the server accepted, for tests

    @property
    def unrecorded(self) -> int:
        return len(self._posting)

    def put(self, task: Task, outcome: Outcome) -> None:
        post = asyncio.create_task(self._report(task, outcome), name=f"pgqueue-report-{task.id}")
        self._posting.add(post)
        self._idle.clear()
        post.add_done_callback(self._posted)

    def _posted(self, post: asyncio.Task[None]) -> None:
        self._posting.discard(post)
        if not self._posting:
            self._idle.set()
        self._on_recorded()

    async def run(self) -> None:
        """Each outcome posts itself; on stop, the posts still retrying are abandoned (their
        tasks are requeued by the reaper)."""
        try:
            await asyncio.Event().wait()
        finally:
            for post in list(self._posting):
                post.cancel()

    async def drained(self) -> None:
        await self._idle.wait()

    async def _report(self, task: Task, outcome: Outcome) -> None:
        delay = 0.1
        while True:
            try:
                await self._post(task, outcome)
            except (StaleLease, NotFound) as exc:
                log.warning("task %s: outcome refused (%s)", task.id, exc)
                return
            except InvalidInput as exc:  # PayloadTooLarge (413) is an InvalidInput too
                if isinstance(outcome, Failed) and outcome.error.get("type") == UNRECORDABLE:
                    log.exception("task %s: not even its failure could be recorded", task.id)
                    return
                log.warning("task %s: its outcome was refused (%s); failing it", task.id, exc)
                outcome = unrecordable(outcome, f"the server refused it: {str(exc)[:500]}")
            except (*TRANSIENT, PgQueueError) as exc:
                log.warning("task %s: reporting failed (%s); retrying", task.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                self.recorded += 1
                return

    async def _post(self, task: Task, outcome: Outcome) -> None:
        usage = outcome.usage
        if isinstance(outcome, Completed):
            await self._client.complete(
                task.id, task.lease, result=outcome.result, usage=usage, exit_code=outcome.exit_code
            )
        elif isinstance(outcome, Failed):
            handler = self._handlers.get(task.kind)
            error = {
                k: v for k, v in outcome.error.items() if k in ("type", "message", "traceback")
            }
            await self._client.fail(
                task.id,
                task.lease,
                error=error,
                retryable=outcome.retryable,
                retry_in_s=outcome.retry_in_s,
                usage=usage,
                exit_code=outcome.exit_code,
                backoff_base_s=handler and handler.backoff_base_s,
                backoff_max_s=handler and handler.backoff_max_s,
            )
        elif isinstance(outcome, Cancelled):
            await self._client.cancelled(task.id, task.lease, usage=usage)
        elif isinstance(outcome, Released):
            await self._client.release(task.id, task.lease, usage=usage)
        else:  # Waiting, the last kind of Outcome
            await self._client.wait_for_signal(
                task.id, task.lease, outcome.signal, timeout_s=outcome.timeout_s, usage=usage
            )


class RemoteWorker:
    """Claims over HTTP and runs up to ``concurrency`` tasks at once.

    ``settings`` (default: the ``PGQUEUE_*`` environment) gives the webhook options."""

    def __init__(
        self,
        app: App,
        client: Client,
        *,
        queues: list[str] | None = None,
        concurrency: int = 10,
        worker_id: str | None = None,
        heartbeat_s: float = 10.0,
        claim_wait_s: float = 10.0,
        shutdown_grace_s: float = 30.0,
        settings: Settings | None = None,
    ) -> None:
        # the built-in deliveries (§13), as on a local worker
        app, queues = with_webhooks(app, queues, settings or Settings.from_env())
        self.app = app
        self.client = client
        self.queues = worker_queues(app, queues, concurrency)
        self.concurrency = concurrency
        self.id = worker_id or new_worker_id()
        claimer = HttpClaimer(
            client,
            self.id,
            self.queues,
            app.kinds,
            concurrency=concurrency,
            claim_wait_s=claim_wait_s,
        )
        self.recorder = HttpRecorder(client, app.handlers, lambda: self.core.wake())
        self.core = Core(
            app,
            claimer,
            self.recorder,
            concurrency=concurrency,
            heartbeat_s=heartbeat_s,
            shutdown_grace_s=shutdown_grace_s,
            # posting what is left may take a retry or two; after that the reaper requeues it
            record_timeout_s=max(shutdown_grace_s, 5.0),
        )
        self.started = self.core.started

    @property
    def recorded(self) -> int:
        return self.recorder.recorded

    def stop(self) -> None:
        """Graceful shutdown (what SIGTERM/SIGINT do)."""
        self.core.stop()

    def cancel(self, task_id: TaskId, reason: str) -> None:
        self.core.cancel(task_id, reason)

    async def run(self) -> None:
        log.info("remote worker %s on %s: queues %s", self.id, self.client.base_url, self.queues)
        await self.core.run()


async def run_remote_worker(
    app: App,
    url: str,
    token: str,
    queues: list[str] | None,
    concurrency: int,
    worker_id: str | None = None,
    **options: Any,
) -> None:
    """Run a RemoteWorker against ``url`` until SIGTERM or SIGINT, then shut down gracefully."""
    async with Client(url, token) as client:
        worker = RemoteWorker(
            app, client, queues=queues, concurrency=concurrency, worker_id=worker_id, **options
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, worker.stop)
        await worker.run()
