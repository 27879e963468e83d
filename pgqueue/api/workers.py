"""The remote-worker protocol (SPEC §4): claim, heartbeat, complete, fail, release; and the
list of live workers.

Every report carries the lease the claim returned (``<attempt>:<worker id>``) and runs as a
statement fenced by it: a worker presumed dead, whose task was reaped and claimed again,
gets a 409 instead of overwriting its successor's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any, LiteralString

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK

from pgqueue.api.auth import Role, require
from pgqueue.api.schemas import (
    Claim,
    Complete,
    Fail,
    Heartbeat,
    HeartbeatAnswer,
    LeasedTask,
    Release,
    UsageIn,
    WorkerStatus,
)
from pgqueue.api.services import PrincipalDep, ServicesDep
from pgqueue.db.queries import QUERIES
from pgqueue.db.rows import task_row
from pgqueue.errors import InvalidInput, NotFound, PayloadTooLarge, StaleLease
from pgqueue.tasks import Task, lease_parse

_encode = msgspec.json.Encoder().encode


class Fence(msgspec.Struct, frozen=True):
    """The lease of a request, split: the statement's WHERE clause."""

    id: uuid.UUID
    attempt: int
    worker_id: str

    def params(self) -> dict[str, Any]:
        return {"id": self.id, "attempt": self.attempt, "worker_id": self.worker_id}


def fence(task_id: str, lease: str) -> Fence:
    try:
        tid = uuid.UUID(task_id)
    except ValueError:
        raise InvalidInput("id", f"{task_id!r} is not a UUID") from None
    try:
        attempt, worker_id = lease_parse(lease)
    except ValueError as exc:
        raise InvalidInput("lease", str(exc)) from None
    return Fence(id=tid, attempt=attempt, worker_id=worker_id)


def _json(value: Any, field: str, limit: int | None = None) -> str:
    encoded = _encode(value)
    if limit is not None and len(encoded) > limit:
        raise PayloadTooLarge(
            field,
            f"is {len(encoded)} bytes, more than the limit of {limit} (PGQUEUE_MAX_PAYLOAD_BYTES)",
        )
    return encoded.decode()


def _usage(usage: UsageIn | None) -> str | None:
    return None if usage is None else _encode(usage).decode()


class WorkersController(Controller):
    tags = ("workers",)

    @post("/tasks/claim", status_code=HTTP_200_OK, summary="Claim due tasks (remote worker)")
    async def claim(
        self,
        data: JSONBody[Claim],
        request: Request[Any, Any, Any],
        services: ServicesDep,
        principal: PrincipalDep,
    ) -> list[LeasedTask]:
        """Up to ``limit`` tasks, each with its lease; waits up to ``wait_s`` for one to be due.

        Woken by the ``pgqueue_wakeup`` NOTIFY; a poll every PGQUEUE_POLL_S finds tasks whose
        ``run_at`` came (they send no NOTIFY).
        """
        require(principal, Role.WORKER, Role.ADMIN)
        await self._register(data, request, services)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + data.wait_s
        with services.wakeups.watch(data.queues) as woken:
            while True:
                woken.clear()
                claimed = await self._claim_once(data, services)
                remaining = deadline - loop.time()
                if claimed or remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        woken.wait(), timeout=min(remaining, services.settings.poll_s)
                    )
        for task in claimed:
            services.metrics.claimed.labels(queue=task.queue).inc()
            if task.started_at is not None:
                wait = (task.started_at - task.run_at).total_seconds()
                services.metrics.claim_wait.observe(max(wait, 0.0))
        return [LeasedTask(**msgspec.structs.asdict(t), lease=t.lease) for t in claimed]

    async def _claim_once(self, data: JSONBody[Claim], services: ServicesDep) -> list[Task]:
        async with services.pool.connection() as conn:
            cur = conn.cursor(row_factory=task_row)
            await cur.execute(
                QUERIES["task_claim"],
                {
                    "worker_id": data.worker_id,
                    "queues": data.queues,
                    "kinds": data.kinds,
                    "limit": data.limit,
                },
            )
            return await cur.fetchall()

    async def _register(
        self, data: JSONBody[Claim], request: Request[Any, Any, Any], services: ServicesDep
    ) -> None:
        client = request.client.host if request.client else "unknown"
        async with services.pool.connection() as conn:
            await conn.execute(
                QUERIES["worker_heartbeat"],
                {
                    "id": data.worker_id,
                    "host": data.host or client,
                    "pid": data.pid,
                    "queues": data.queues,
                    "kinds": data.kinds or [],
                    "concurrency": data.concurrency or data.limit,
                    "running": data.running,
                },
            )

    @post("/tasks/{task_id:str}/heartbeat", status_code=HTTP_200_OK, summary="Heartbeat")
    async def heartbeat(
        self,
        task_id: FromPath[str],
        data: JSONBody[Heartbeat],
        services: ServicesDep,
        principal: PrincipalDep,
    ) -> HeartbeatAnswer:
        """Keep the lease alive; optionally save progress, a checkpoint, a usage delta."""
        require(principal, Role.WORKER, Role.ADMIN)
        f = fence(task_id, data.lease)
        limit = services.settings.max_payload_bytes
        params = {
            **f.params(),
            "progress": None
            if data.progress is None
            else _json(
                {k: v for k, v in msgspec.structs.asdict(data.progress).items() if v is not None},
                "progress",
                limit,
            ),
            "checkpoint": None
            if data.checkpoint is None
            else _json(data.checkpoint, "checkpoint", limit),
            "usage": _usage(data.usage),
        }
        async with services.pool.connection() as conn:
            cur = await conn.execute(QUERIES["task_report"], params)
            row = await cur.fetchone()
            await conn.execute(QUERIES["worker_touch"], {"id": f.worker_id})
        if row is None:
            await _refused(services, f)
        assert row is not None
        return HeartbeatAnswer(cancel_requested=bool(row[0]))

    @post("/tasks/{task_id:str}/complete", status_code=HTTP_200_OK, summary="Complete")
    async def complete(
        self,
        task_id: FromPath[str],
        data: JSONBody[Complete],
        services: ServicesDep,
        principal: PrincipalDep,
    ) -> Task:
        require(principal, Role.WORKER, Role.ADMIN)
        f = fence(task_id, data.lease)
        item = {
            **f.params(),
            "result": msgspec.json.decode(
                _json(data.result, "result", services.settings.max_payload_bytes)
            ),
            "usage": data.usage,
            "exit_code": data.exit_code,
        }
        async with services.pool.connection() as conn:
            cur = await conn.execute(
                QUERIES["task_complete_many"], {"items": _encode([item]).decode()}
            )
            done = await cur.fetchone()
        if done is None:
            await _refused(services, f)
        services.metrics.finished.labels(outcome="completed").inc()
        return await services.queue.get(f.id)

    @post("/tasks/{task_id:str}/fail", status_code=HTTP_200_OK, summary="Fail an attempt")
    async def fail(
        self,
        task_id: FromPath[str],
        data: JSONBody[Fail],
        services: ServicesDep,
        principal: PrincipalDep,
    ) -> Task:
        """Retryable with attempts left: pending again after the backoff (or ``retry_in_s``).

        An error of type ``cancelled`` records that the worker obeyed a cancel request.
        """
        require(principal, Role.WORKER, Role.ADMIN)
        f = fence(task_id, data.lease)
        error = {**msgspec.structs.asdict(data.error), "retryable": data.retryable}
        if error["traceback"] is None:
            del error["traceback"]
        common = {
            **f.params(),
            "error": _json(error, "error", services.settings.max_payload_bytes),
            "usage": _usage(data.usage),
        }
        query: LiteralString
        if data.error.type == "cancelled":
            query, params, outcome = "task_cancelled", common, "cancelled"
        else:
            query, outcome = "task_fail", "failed"
            params = {
                **common,
                "retryable": data.retryable,
                "retry_in_s": data.retry_in_s,
                "exit_code": data.exit_code,
                "backoff_base_s": data.backoff_base_s or services.settings.backoff_base_s,
                "backoff_max_s": data.backoff_max_s or services.settings.backoff_max_s,
            }
        task = await _fenced_update(services, query, params)
        if task is None:
            await _refused(services, f)
        assert task is not None
        services.metrics.finished.labels(outcome=outcome).inc()
        return task

    @post("/tasks/{task_id:str}/release", status_code=HTTP_200_OK, summary="Release")
    async def release(
        self,
        task_id: FromPath[str],
        data: JSONBody[Release],
        services: ServicesDep,
        principal: PrincipalDep,
    ) -> Task:
        """Hand a task back, due now, without spending its attempt (graceful shutdown)."""
        require(principal, Role.WORKER, Role.ADMIN)
        f = fence(task_id, data.lease)
        items = [{"id": f.id, "attempt": f.attempt, "usage": data.usage}]
        async with services.pool.connection() as conn:
            cur = await conn.execute(
                QUERIES["task_release_many"],
                {"items": _encode(items).decode(), "worker_id": f.worker_id},
            )
            done = await cur.fetchone()
        if done is None:
            await _refused(services, f)
        services.metrics.finished.labels(outcome="released").inc()
        return await services.queue.get(f.id)

    @get("/workers", summary="Live workers")
    async def workers(self, services: ServicesDep, principal: PrincipalDep) -> list[WorkerStatus]:
        """Local and remote workers with a heartbeat row, and how old that heartbeat is.

        Not for user tokens (403): hosts and pids are the operator's (SPEC §4)."""
        require(principal, Role.ADMIN, Role.WORKER)
        async with services.pool.connection() as conn:
            cur = await conn.execute(QUERIES["stats_workers"])
            rows = await cur.fetchall()
        return [WorkerStatus(*row) for row in rows]


async def _fenced_update(services: ServicesDep, query: str, params: dict[str, Any]) -> Task | None:
    async with services.pool.connection() as conn:
        cur = conn.cursor(row_factory=task_row)
        await cur.execute(QUERIES[query], params)
        return await cur.fetchone()


async def _refused(services: ServicesDep, f: Fence) -> None:
    """A fenced statement changed nothing: say whether the task is unknown or not yours."""
    async with services.pool.connection() as conn:
        cur = await conn.execute(QUERIES["task_lease_state"], {"id": f.id})
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"task {f.id} does not exist")
    status, attempts, worker_id = row
    raise StaleLease(
        f"lease: {f.attempt}:{f.worker_id} no longer holds task {f.id} "
        f"(it is {status}, attempt {attempts}, worker {worker_id})"
    )
