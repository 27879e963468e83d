"""``pgqueue.Context``: what a handler sees of its task and how it reports back.

The same Context serves the database worker and the HTTP remote worker; only the
``Reporter`` behind it differs.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Protocol

import msgspec

from pgqueue.outcomes import SignalTimeout, WaitForSignal
from pgqueue.tasks import Task, TaskId, Usage

_SIGNAL_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MAX_WAIT_S = 366 * 86400.0  # a wait's timeout: a year at most (a bounded number, SPEC §2)


class Reporter(Protocol):
    """Where a running task's progress and checkpoints go. Returns ``cancel_requested``.

    Raises ``StaleLease`` when the task is no longer this worker's.
    """

    async def progress(self, task: Task, progress: dict[str, Any]) -> bool: ...

    async def checkpoint(self, task: Task, token: str, data: Any) -> bool: ...

    async def enqueue_child(
        self, task: Task, kind: str, payload: Any, fields: dict[str, Any]
    ) -> Task: ...

    async def children(self, task: Task) -> list[Task]: ...

    async def wait(self, task: Task, timeout_s: float | None) -> Task: ...

    async def dependency_results(self, task: Task) -> dict[str, Any]: ...

    async def signal_payload(self, task: Task, name: str) -> tuple[bool, Any]: ...


_LOGGERS: dict[str, logging.Logger] = {}


def _logger(kind: str) -> logging.Logger:
    """The logger of a kind's handlers, looked up once per kind (not once per attempt)."""
    logger = _LOGGERS.get(kind)
    if logger is None:
        logger = _LOGGERS[kind] = logging.getLogger(f"pgqueue.task.{kind}")
    return logger


class Context:
    """Handed to every handler call: the task, progress, checkpoints, usage, cancellation."""

    def __init__(self, task: Task, reporter: Reporter) -> None:
        self.task = task
        self._reporter = reporter
        self.usage = Usage()
        self.cancel_requested = False
        self.exit_code: int | None = None  # set by command tasks; recorded with the outcome
        # {dependency id: its result} (SPEC §10), filled before the handler starts
        self.dependency_results: dict[str, Any] = {}
        self.log = _logger(task.kind)
        self._loop = asyncio.get_running_loop()
        # The asyncio task running this attempt: a cancel seen in a progress answer stops it.
        self._attempt = asyncio.current_task()

    @property
    def task_id(self) -> TaskId:
        return self.task.id

    @property
    def attempt(self) -> int:
        """1 on the first run, 2 on the first retry..."""
        return self.task.attempts

    @property
    def queue(self) -> str:
        return self.task.queue

    @property
    def checkpoint_data(self) -> Any:
        """The data of the last checkpoint saved by any attempt, or None."""
        return self.task.checkpoint.get("data") if self.task.checkpoint else None

    @property
    def checkpoint_token(self) -> str | None:
        return self.task.checkpoint.get("token") if self.task.checkpoint else None

    async def progress(
        self, percent: float | None = None, message: str | None = None, data: Any = None
    ) -> None:
        """Report progress (streamed to subscribers); also counts as a heartbeat."""
        if percent is not None and not 0 <= percent <= 100:
            raise ValueError(f"percent must be between 0 and 100, got {percent}")
        progress: dict[str, Any] = {}
        if percent is not None:
            progress["percent"] = percent
        if message is not None:
            progress["message"] = message
        if data is not None:
            progress["data"] = data
        self._note_cancel(await self._reporter.progress(self.task, progress))

    async def checkpoint(self, token: str, data: Any = None) -> None:
        """Save where the work stands; a later attempt starts with ``checkpoint_data``."""
        msgspec.json.encode(data)  # fail here, in the handler, if it cannot be stored
        self._note_cancel(await self._reporter.checkpoint(self.task, token, data))
        self.task = msgspec.structs.replace(self.task, checkpoint={"token": token, "data": data})

    def add_usage(self, input_tokens: int = 0, output_tokens: int = 0, cost: float = 0.0) -> None:
        """Count tokens and cost for this task; summed over attempts, reported per user.

        This attempt's usage is one report, bounded like a report over HTTP (SPEC §2: tokens
        <= 10^12, cost <= 10^9, finite, not negative): beyond that, ``InvalidInput`` (a
        ``ValueError``) and the usage stays as it was.
        """
        Usage.checked(input_tokens, output_tokens, cost)
        self.usage = Usage.checked(
            self.usage.input_tokens + input_tokens,
            self.usage.output_tokens + output_tokens,
            self.usage.cost + cost,
        )

    async def wait_for_signal(self, name: str, timeout_s: float | None = None) -> Any:
        """The payload of the signal ``name`` sent to this task (SPEC §11).

        Sent already (before or during an earlier attempt): returned at once. Otherwise the
        attempt ends here: the task becomes ``waiting``, frees its slot, gives the attempt
        back, and runs again from the start (with its checkpoint) once the signal comes, when
        this call returns its payload. If ``timeout_s`` passes first (the database's clock),
        the re-run's call raises ``pgqueue.SignalTimeout``.
        """
        if not _SIGNAL_NAME.match(name):
            raise ValueError(f"signal name {name!r} is not 1-128 chars of [A-Za-z0-9_.:-]")
        if timeout_s is not None and not 0 < timeout_s <= MAX_WAIT_S:
            raise ValueError(f"timeout_s must be > 0 and <= {MAX_WAIT_S}, got {timeout_s}")
        found, payload = await self._reporter.signal_payload(self.task, name)
        if found:
            return payload
        waited = self.task.waiting_for or {}
        if waited.get("signal") == name and waited.get("timed_out"):
            raise SignalTimeout(f"no signal {name!r} before {waited.get('until')}")
        raise WaitForSignal(name, timeout_s)

    async def enqueue(self, kind: str, payload: Any = None, **fields: Any) -> Task:
        """Enqueue a child task (its ``parent_id`` is this task, its owner this task's owner)."""
        return await self._reporter.enqueue_child(self.task, kind, payload, fields)

    # Sync handlers run in a worker thread: these block that thread, not the event loop.

    def progress_sync(
        self, percent: float | None = None, message: str | None = None, data: Any = None
    ) -> None:
        """``progress`` for sync handlers (call from the handler's thread)."""
        asyncio.run_coroutine_threadsafe(self.progress(percent, message, data), self._loop).result()

    def checkpoint_sync(self, token: str, data: Any = None) -> None:
        """``checkpoint`` for sync handlers (call from the handler's thread)."""
        asyncio.run_coroutine_threadsafe(self.checkpoint(token, data), self._loop).result()

    async def wait_children(self, timeout_s: float | None = None) -> list[Task]:
        """Wait until every child of this task is finished (or ``timeout_s`` passes) and
        return them, oldest first. A parent that resumes after a crash finds the children
        its earlier attempt enqueued."""
        children = await self._reporter.children(self.task)
        return [await self._reporter.wait(child, timeout_s) for child in children]

    def _note_cancel(self, requested: bool) -> None:
        if requested and not self.cancel_requested:
            self.cancel_requested = True
            if self._attempt is not None:
                # Stop the handler where it stands; the worker records 'cancelled'. (A sync
                # handler's thread cannot be interrupted: its result is simply not recorded.)
                self._attempt.cancel("cancel requested")
