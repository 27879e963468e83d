"""The one run loop of every worker: claim what is due, run it, hand its outcome on.

The local worker (``loop.py``) and the remote worker (``remote.py``) are this core with two
parts injected:

- a ``Claimer`` hands out tasks and keeps their leases: the database (``task_claim``, the
  workers table) or the HTTP API (``POST /tasks/claim``, heartbeats);
- a ``Recorder`` takes each outcome and what a running handler reports: the local outbox
  (batched ``task_finish_many``) or HTTP posts. Both end in the same statement.

The loop claims up to the free slots whenever it is woken — a NOTIFY, a freed slot, the
claimer's idle timer — and starts each task as a named asyncio task running ``execute()``.
Finished tasks whose outcome is not yet written hold no slot, up to ``concurrency`` of them;
past that they do, so the tasks running in the database stay under twice the concurrency
when recording is slower than claiming (docs/benchmarks.md has what an unbounded backlog did).
Heartbeats run beside it under the ``Supervisor``, with the process's other loops.

Shutdown (``stop()``, what SIGTERM does): stop claiming, let running tasks finish for the
shutdown grace, cancel the rest (their outcome is ``Released``: back to pending, the attempt
given back), wait for the recorder to write what it holds, stop the background loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from pgqueue.outcomes import Failed, Outcome
from pgqueue.services.supervisor import Supervisor
from pgqueue.tasks import Task, TaskId
from pgqueue.worker.context import Reporter
from pgqueue.worker.execute import execute
from pgqueue.worker.handlers import App
from pgqueue.worker.heartbeat import HeartbeatAnswer

log = logging.getLogger(__name__)


class Claimer(Protocol):
    """Where tasks come from, and who keeps their leases alive."""

    claim_wait_s: float
    """How long one ``claim`` may wait for a task (a long-poll); 0 when it never waits."""

    async def claim(self, limit: int, running: int) -> list[Task]:
        """Up to ``limit`` tasks, running for this worker (``running``: how many it has)."""
        ...

    async def idle_s(self) -> float:
        """After a claim got fewer than it asked for: how long to sleep unless woken."""
        ...

    async def heartbeat(self, running: Sequence[Task]) -> HeartbeatAnswer:
        """Keep the worker and these tasks alive; say which were lost or asked to cancel."""
        ...


class Recorder(Protocol):
    """Where outcomes and a running handler's progress go."""

    @property
    def reporter(self) -> Reporter:
        """Where a running handler's progress, checkpoints and children go."""
        ...

    @property
    def unrecorded(self) -> int:
        """Outcomes handed over but not yet written."""
        ...

    def put(self, task: Task, outcome: Outcome) -> None:
        """Record ``outcome`` for ``task``'s attempt (soon; ``drained()`` waits for it)."""
        ...

    async def run(self) -> None:
        """Write what is put, forever (a supervised background loop)."""
        ...

    async def drained(self) -> None:
        """Return once every outcome put so far is written (or refused)."""
        ...


class Core:
    """Runs an App's handlers for the tasks a Claimer hands out, ``concurrency`` at a time."""

    def __init__(
        self,
        app: App,
        claimer: Claimer,
        recorder: Recorder,
        *,
        concurrency: int,
        heartbeat_s: float,
        shutdown_grace_s: float,
        record_timeout_s: float,
        max_result_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.claimer = claimer
        self.recorder = recorder
        self.concurrency = concurrency
        self.heartbeat_s = heartbeat_s
        self.shutdown_grace_s = shutdown_grace_s
        self.record_timeout_s = record_timeout_s  # after that, the reaper requeues the rest
        self.max_result_bytes = max_result_bytes  # the one result limit (None: the server's)
        self.supervisor = Supervisor()
        self.running: dict[TaskId, tuple[Task, asyncio.Task[None]]] = {}
        self._lost: set[TaskId] = set()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._shutting_down = asyncio.Event()
        self.started = asyncio.Event()  # set once claiming, for tests and `dev`

    def stop(self) -> None:
        """Ask for a graceful shutdown."""
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Claim now (a NOTIFY said a task is due, an outcome freed a limited queue's slot)."""
        self._wake.set()

    def cancel(self, task_id: TaskId, reason: str) -> None:
        """Stop the handler of ``task_id`` if it runs here; its outcome becomes ``Cancelled``."""
        entry = self.running.get(task_id)
        if entry is not None:
            log.info("stopping task %s: %s", task_id, reason)
            entry[1].cancel(reason)

    async def run(self) -> None:
        """Claim and run until ``stop()``, then drain; the background loops end with it."""
        self.supervisor.start("recorder", self.recorder.run)
        self.supervisor.every("heartbeat", self.heartbeat_s, self._heartbeat)
        try:
            self.started.set()
            await self._claim_loop()
            await self._drain()
        finally:
            await self.supervisor.stop()

    # -- claiming ---------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            self._wake.clear()
            backlog = max(0, self.recorder.unrecorded - self.concurrency)
            free = self.concurrency - len(self.running) - backlog
            # No free slot: a finished task or a written outcome wakes us (the timer only
            # guards against a missed wake-up).
            timeout = 1.0
            if free > 0:
                try:
                    claimed = await self._claim(free)
                    delay = 0.1
                except Exception as exc:
                    log.warning("claim failed (%s); retrying in %.1fs", exc, delay)
                    await self._sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                for task in claimed:
                    self._start(task)
                if len(claimed) < free:
                    # Nothing more is due now. The handlers just started get the event loop
                    # first: the claimer's idle probe would otherwise sit between a claim and
                    # its handlers' start.
                    await asyncio.sleep(0)
                    timeout = await self.claimer.idle_s()
                # else every free slot got a task: more may be due once a slot frees.
            await self._sleep(timeout)

    async def _claim(self, limit: int) -> list[Task]:
        """One claim; a stop during a long-poll lets it answer, so nothing it took is stranded."""
        if self.claimer.claim_wait_s <= 0:
            return await self.claimer.claim(limit, len(self.running))
        claim = asyncio.ensure_future(self.claimer.claim(limit, len(self.running)))
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({claim, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not claim.done():
            done, _ = await asyncio.wait({claim}, timeout=self.claimer.claim_wait_s + 5)
            if not done:
                claim.cancel()
                return []
        return claim.result()

    async def _sleep(self, timeout: float) -> None:
        if timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _start(self, task: Task) -> None:
        runner = asyncio.create_task(self._run_one(task), name=f"pgqueue-task-{task.id}")
        self.running[task.id] = (task, runner)

    async def _run_one(self, task: Task) -> None:
        handler = self.app.handlers.get(task.kind)
        try:
            if handler is None:  # a remote claim of any kind found one this App lacks
                error = {"type": "unknown_kind", "message": f"no handler for kind {task.kind!r}"}
                outcome: Outcome = Failed(error={**error, "retryable": True}, retryable=True)
            else:
                outcome, _ = await execute(
                    task,
                    handler,
                    self.recorder.reporter,
                    shutting_down=self._shutting_down,
                    max_result_bytes=self.max_result_bytes,
                )
        finally:
            self.running.pop(task.id, None)
            self._wake.set()  # a slot is free
        if task.id in self._lost:
            self._lost.discard(task.id)
            log.warning("task %s was reaped while running here; its outcome is dropped", task.id)
            return
        self.recorder.put(task, outcome)

    # -- leases -----------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        # Only tasks whose handler runs: one whose outcome waits in the recorder is not
        # heartbeated, so if recording is stuck the reaper hands the task to another worker.
        answer = await self.claimer.heartbeat([task for task, _ in self.running.values()])
        for task_id in answer.lost:
            self._lost.add(task_id)
            self.cancel(task_id, "lost its lease (reaped)")
        for task_id in answer.cancel_requested:
            self.cancel(task_id, "cancel requested")
        return

    # -- shutdown ---------------------------------------------------------------------

    async def _drain(self) -> None:
        """Let running tasks finish within the grace, release the rest, write what is left."""
        runners = [runner for _, runner in self.running.values()]
        if runners:
            log.info(
                "waiting up to %.0fs for %d running tasks", self.shutdown_grace_s, len(runners)
            )
            _, late = await asyncio.wait(runners, timeout=self.shutdown_grace_s)
            self._shutting_down.set()
            for runner in late:
                runner.cancel()
            if late:
                # A handler that ignores cancellation gets one more grace, then is left to
                # the reaper (its lease lapses once heartbeats stop).
                await asyncio.wait(late, timeout=max(self.shutdown_grace_s, 1.0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.recorder.drained(), timeout=self.record_timeout_s)
