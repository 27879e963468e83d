"""The ``Reporter``s: where a running handler's progress, checkpoints and children go —
the database for local workers, heartbeats over HTTP for remote ones."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from psycopg_pool import AsyncConnectionPool

from pgqueue.db import heartbeats, transitions
from pgqueue.queue import Queue, new_task
from pgqueue.tasks import Task

if TYPE_CHECKING:  # the local worker does not need the HTTP client's imports
    from pgqueue.client import Client


class DatabaseReporter:
    """Progress, checkpoints and child tasks, fenced by the task's lease."""

    def __init__(self, pool: AsyncConnectionPool, queue: Queue) -> None:
        self._pool = pool
        self._queue = queue

    async def progress(self, task: Task, progress: dict[str, Any]) -> bool:
        async with self._pool.connection() as conn:
            return await heartbeats.progress(conn, task, msgspec.json.encode(progress).decode())

    async def checkpoint(self, task: Task, token: str, data: Any) -> bool:
        async with self._pool.connection() as conn:
            return await heartbeats.checkpoint(
                conn, task, token, msgspec.json.encode(data).decode()
            )

    async def enqueue_child(
        self, task: Task, kind: str, payload: Any, fields: dict[str, Any]
    ) -> Task:
        # no user_id: the child takes its parent's owner (Queue checks and copies it)
        body = {**fields, "kind": kind, "parent_id": task.id}
        if payload is not None:
            body["payload"] = payload
        return (await self._queue.submit(new_task(body))).task

    async def children(self, task: Task) -> list[Task]:
        page = await self._queue.list(parent_id=task.id, limit=500)
        return sorted(page.items, key=lambda t: t.seq)

    async def wait(self, task: Task, timeout_s: float | None) -> Task:
        return await self._queue.wait(task.id, timeout_s=timeout_s)

    async def dependency_results(self, task: Task) -> dict[str, Any]:
        return (await transitions.dependency_results(self._pool, [task])).get(task.id, {})

    async def signal_payload(self, task: Task, name: str) -> tuple[bool, Any]:
        found = (await transitions.signal_payload(self._pool, [task.id], name)).get(task.id, {})
        return (name in found, found.get(name))


class HttpReporter:
    """The ``Reporter`` of remote workers: progress and checkpoints as heartbeats."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def progress(self, task: Task, progress: dict[str, Any]) -> bool:
        return await self._client.heartbeat(task.id, task.lease, progress=progress)

    async def checkpoint(self, task: Task, token: str, data: Any) -> bool:
        return await self._client.heartbeat(
            task.id, task.lease, checkpoint={"token": token, "data": data}
        )

    async def enqueue_child(
        self, task: Task, kind: str, payload: Any, fields: dict[str, Any]
    ) -> Task:
        # no user_id: a worker token names no owner, the child takes its parent's (SPEC §4)
        body: dict[str, Any] = {**fields, "parent_id": str(task.id)}
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
