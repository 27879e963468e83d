"""The remote worker: an App's handlers run over the HTTP API, no database credentials.

The same ``execute()`` as the local worker runs each attempt; only the edges differ:
claims are long-polls (``POST /tasks/claim``), progress and checkpoints go through
``HttpReporter`` (``POST /tasks/{id}/heartbeat``), outcomes are posted with the lease. A
heartbeat loop keeps every running task's lease alive and stops a handler whose task got a
cancel request, or was reaped and given to someone else (409: its outcome would be refused).
On SIGTERM/SIGINT it stops claiming, lets running tasks finish for the grace period, then
cancels them and releases them back to pending without spending an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from typing import Any

import httpx

from pgqueue.client import Client, LeasedTask, ServerError
from pgqueue.errors import InvalidInput, NotFound, StaleLease
from pgqueue.outcomes import (
    UNRECORDABLE,
    Cancelled,
    Completed,
    Failed,
    Outcome,
    Released,
    Waiting,
    unrecordable,
)
from pgqueue.tasks import Task, Usage, new_worker_id
from pgqueue.worker.execute import execute
from pgqueue.worker.handlers import App, worker_queues

log = logging.getLogger(__name__)


class HttpReporter:
    """The ``Reporter`` of remote workers: progress and checkpoints as heartbeats."""

    def __init__(self, client: Client, leases: dict[uuid.UUID, str]) -> None:
        self._client = client
        self._leases = leases

    async def progress(self, task: Task, progress: dict[str, Any]) -> bool:
        return await self._client.heartbeat(task.id, self._lease(task), progress=progress)

    async def checkpoint(self, task: Task, token: str, data: Any) -> bool:
        return await self._client.heartbeat(
            task.id, self._lease(task), checkpoint={"token": token, "data": data}
        )

    async def enqueue_child(
        self, task: Task, kind: str, payload: Any, fields: dict[str, Any]
    ) -> Task:
        # no user_id: a worker token names no owner, the child takes its parent's (SPEC §4)
        body = {**fields, "parent_id": str(task.id)}
        return await self._client.submit(kind, payload, **body)

    async def children(self, task: Task) -> list[Task]:
        page = await self._client.list(parent_id=str(task.id), limit=500)
        return sorted(page.items, key=lambda t: t.seq)

    async def wait(self, task: Task, timeout_s: float | None) -> Task:
        return await self._client.wait(task.id, timeout_s=timeout_s)

    async def dependency_results(self, task: Task) -> dict[str, Any]:
        """The claim answered them (``LeasedTask.dependency_results``): no request."""
        return dict(getattr(task, "dependency_results", {}))

    async def signal_payload(self, task: Task, name: str) -> tuple[bool, Any]:
        """The claim answered the signals sent so far (``LeasedTask.signals``): no request.
        One sent since is not lost: recording the wait finds it and the task runs again."""
        signals: dict[str, Any] = getattr(task, "signals", {})
        return (name in signals, signals.get(name))

    def _lease(self, task: Task) -> str:
        return self._leases.get(task.id) or task.lease


class RemoteWorker:
    """Claims over HTTP and runs up to ``concurrency`` tasks at once."""

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
    ) -> None:
        queues = worker_queues(app, queues, concurrency)
        self.app = app
        self.client = client
        self.queues = queues
        self.concurrency = concurrency
        self.id = worker_id or new_worker_id()
        self.heartbeat_s = heartbeat_s
        self.claim_wait_s = claim_wait_s
        self.shutdown_grace_s = shutdown_grace_s
        self._leases: dict[uuid.UUID, str] = {}
        self._running: dict[uuid.UUID, tuple[LeasedTask, asyncio.Task[None]]] = {}
        self._lost: set[uuid.UUID] = set()
        self._slot_free = asyncio.Event()
        self._stop = asyncio.Event()
        self._shutting_down = asyncio.Event()
        self.reporter = HttpReporter(client, self._leases)
        self.started = asyncio.Event()
        self.recorded = 0  # outcomes the server accepted, for tests

    def stop(self) -> None:
        """Graceful shutdown (what SIGTERM/SIGINT do)."""
        self._stop.set()
        self._slot_free.set()

    async def run(self) -> None:
        heartbeats = asyncio.create_task(self._heartbeat_forever(), name="pgqueue-remote-hb")
        self.started.set()
        log.info("remote worker %s on %s: queues %s", self.id, self.client.base_url, self.queues)
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeats

    # -- claiming -----------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            free = self.concurrency - len(self._running)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            claim = asyncio.ensure_future(
                self.client.claim(
                    self.id,
                    self.queues,
                    limit=free,
                    wait_s=self.claim_wait_s,
                    kinds=self.app.kinds,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    concurrency=self.concurrency,
                    running=len(self._running),
                )
            )
            stop = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({claim, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not claim.done():
                # Stopping mid long-poll: let it answer so nothing it claimed is stranded.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(claim), self.claim_wait_s + 5)
            try:
                tasks = claim.result()
                delay = 0.1
            except (httpx.TransportError, ServerError) as exc:
                log.warning("claim failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            except asyncio.CancelledError:
                break
            for task in tasks:
                self._start(task)

    def _start(self, task: LeasedTask) -> None:
        self._leases[task.id] = task.lease
        runner = asyncio.create_task(self._run_one(task), name=f"pgqueue-task-{task.id}")
        self._running[task.id] = (task, runner)

    async def _run_one(self, task: LeasedTask) -> None:
        try:
            handler = self.app.handlers.get(task.kind)
            if handler is None:
                error = {"type": "unknown_kind", "message": f"no handler for kind {task.kind!r}"}
                await self._report(task, Failed(error=error, retryable=True, usage=Usage()))
                return
            outcome, _ = await execute(
                task, handler, self.reporter, shutting_down=self._shutting_down
            )
            if task.id in self._lost:
                return  # reaped and given to another worker: our outcome would be refused
            await self._report(task, outcome, handler.backoff_base_s, handler.backoff_max_s)
        finally:
            self._running.pop(task.id, None)
            self._leases.pop(task.id, None)
            self._lost.discard(task.id)
            self._slot_free.set()

    # -- reporting ----------------------------------------------------------------------

    async def _report(
        self,
        task: LeasedTask,
        outcome: Outcome,
        backoff_base_s: float | None = None,
        backoff_max_s: float | None = None,
    ) -> None:
        """Post the outcome; network errors are retried, a refused lease is dropped.

        An outcome the server refuses as such (413: too big; 400: a value it cannot store) is
        recorded once as a permanent ``unrecordable_outcome`` failure, as the local worker's
        outbox does: left alone, the task would run again after the reaper found it.
        """
        delay = 0.1
        while True:
            try:
                await self._post(task, outcome, backoff_base_s, backoff_max_s)
            except (StaleLease, NotFound) as exc:
                log.warning("task %s: outcome refused (%s)", task.id, exc)
                return
            except InvalidInput as exc:  # PayloadTooLarge (413) is an InvalidInput too
                if isinstance(outcome, Failed) and outcome.error.get("type") == UNRECORDABLE:
                    log.exception("task %s: not even its failure could be recorded", task.id)
                    return
                log.warning("task %s: its outcome was refused (%s); failing it", task.id, exc)
                outcome = unrecordable(outcome, f"the server refused it: {str(exc)[:500]}")
            except (httpx.TransportError, ServerError) as exc:
                log.warning("task %s: reporting failed (%s); retrying", task.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                self.recorded += 1
                return

    async def _post(
        self,
        task: LeasedTask,
        outcome: Outcome,
        backoff_base_s: float | None,
        backoff_max_s: float | None,
    ) -> None:
        usage = outcome.usage
        if isinstance(outcome, Completed):
            await self.client.complete(
                task.id, task.lease, result=outcome.result, usage=usage, exit_code=outcome.exit_code
            )
        elif isinstance(outcome, Failed):
            error = {
                k: v for k, v in outcome.error.items() if k in ("type", "message", "traceback")
            }
            await self.client.fail(
                task.id,
                task.lease,
                error=error,
                retryable=outcome.retryable,
                retry_in_s=outcome.retry_in_s,
                usage=usage,
                exit_code=outcome.exit_code,
                backoff_base_s=backoff_base_s,
                backoff_max_s=backoff_max_s,
            )
        elif isinstance(outcome, Cancelled):
            await self.client.cancelled(task.id, task.lease, usage=usage)
        elif isinstance(outcome, Released):
            await self.client.release(task.id, task.lease, usage=usage)
        elif isinstance(outcome, Waiting):
            await self.client.wait_for_signal(
                task.id, task.lease, outcome.signal, timeout_s=outcome.timeout_s, usage=usage
            )

    # -- heartbeats and shutdown --------------------------------------------------------

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await asyncio.gather(
                *(self._beat(task, runner) for task, runner in list(self._running.values()))
            )

    async def _beat(self, task: LeasedTask, runner: asyncio.Task[None]) -> None:
        try:
            cancel = await self.client.heartbeat(task.id, task.lease)
        except (StaleLease, NotFound):
            log.warning("task %s was reaped from this worker; stopping it", task.id)
            self._lost.add(task.id)
            runner.cancel()
            return
        except (httpx.TransportError, ServerError) as exc:
            log.warning("heartbeat of task %s failed (%s)", task.id, exc)
            return
        if cancel:
            self._cancel_attempt(runner)

    def _cancel_attempt(self, runner: asyncio.Task[None]) -> None:
        # execute() runs inside the runner task: cancelling it ends the attempt as Cancelled
        # (the shutting_down flag is not set), which is reported as a cancel obeyed.
        runner.cancel("cancel requested")

    async def _drain(self) -> None:
        if not self._running:
            return
        runners = [r for _, r in self._running.values()]
        _, pending = await asyncio.wait(runners, timeout=self.shutdown_grace_s)
        if pending:
            self._shutting_down.set()
            for runner in pending:
                runner.cancel()
            await asyncio.wait(pending, timeout=30)


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
