"""The remote-worker protocol (SPEC §4): claim, heartbeat, complete, fail, cancelled,
release; and the list of live workers.

Every report carries the lease the claim returned (``<attempt>:<worker id>``) and runs as a
statement fenced by it and by the token that claimed it: a worker presumed dead, whose task
was reaped and claimed again, or another worker token, gets a 409 instead of overwriting the
holder's work. Claims and outcomes go through ``pgqueue.db.transitions``, the same calls the
local worker makes, so both kinds of worker record the same transitions.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK

from pgqueue.api.auth import Principal, Role, require
from pgqueue.api.schemas import (
    CancelObeyed,
    Claim,
    Complete,
    Fail,
    Heartbeat,
    Release,
    UsageIn,
    WaitIn,
)
from pgqueue.api.services import PrincipalDep, Services, ServicesDep
from pgqueue.api.wakeup import first_of
from pgqueue.db import remote, transitions
from pgqueue.db import workers as db_workers
from pgqueue.errors import Conflict, InvalidInput, PayloadTooLarge
from pgqueue.leases import HeartbeatAnswer, LeasedTask
from pgqueue.outcomes import Cancelled, Completed, Failed, Outcome, Released, Waiting, name_of
from pgqueue.stats import WorkerStatus
from pgqueue.tasks import Task, Usage, lease_parse, result_json

_encode = msgspec.json.Encoder().encode


class Fence(msgspec.Struct, frozen=True):
    """The lease of a request, split: the statement's WHERE clause."""

    id: uuid.UUID
    attempt: int
    worker_id: str
    lease: str

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
    return Fence(id=tid, attempt=attempt, worker_id=worker_id, lease=lease)


def _json(value: Any, field: str, limit: int | None = None) -> str:
    encoded = _encode(value)
    if limit is not None and len(encoded) > limit:
        raise PayloadTooLarge(
            field,
            f"is {len(encoded)} bytes, more than the limit of {limit} (PGQUEUE_MAX_PAYLOAD_BYTES)",
        )
    return encoded.decode()


def _usage(usage: UsageIn | None) -> Usage:
    return Usage() if usage is None else msgspec.convert(msgspec.structs.asdict(usage), Usage)


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
        worker = {
            "id": data.worker_id,
            "host": data.host or (request.client.host if request.client else "unknown"),
            "pid": data.pid,
            "queues": data.queues,
            "kinds": data.kinds or [],
            "concurrency": data.concurrency or data.limit,
            "running": data.running,
        }
        if not await transitions.register_worker(services.pool, worker, principal.token_id):
            raise Conflict(
                f"worker_id: {data.worker_id!r} is in use by a worker with another token; "
                "pick another id"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + data.wait_s

        async def claim_once() -> list[Task]:
            return await transitions.claim(
                services.pool, data.worker_id, data.queues, data.kinds, data.limit
            )

        with services.wakeups.watch(data.queues) as woken:
            claimed = await claim_once()
            if not claimed and data.wait_s > 0:
                # Parked on NOTIFY, no connection held (api/wakeup.py), and given up at once
                # when the client disconnects or the server shuts down: nothing is claimed
                # then, so no task is leased to a client that is gone.
                async with services.polls.hold(request.receive) as hold:
                    while not claimed:
                        remaining = deadline - loop.time()
                        if remaining <= 0 or hold.ended:
                            break
                        await first_of(
                            [woken, hold.drained, hold.gone],
                            min(remaining, services.settings.poll_s),
                        )
                        if hold.ended:
                            break
                        woken.clear()
                        claimed = await claim_once()
        for task in claimed:
            services.metrics.claimed.labels(queue=task.queue).inc()
            if task.started_at is not None:
                wait = (task.started_at - task.run_at).total_seconds()
                services.metrics.claim_wait.observe(max(wait, 0.0))
        results = await transitions.dependency_results(services.pool, claimed)
        signals = await transitions.signal_payload(services.pool, [t.id for t in claimed])
        return [
            LeasedTask(
                **msgspec.structs.asdict(t),
                lease=t.lease,
                dependency_results=results.get(t.id, {}),
                signals=signals.get(t.id, {}),
            )
            for t in claimed
        ]

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
        progress = None
        if data.progress is not None:
            given = msgspec.structs.asdict(data.progress)
            progress = _json({k: v for k, v in given.items() if v is not None}, "progress", limit)
        async with services.pool.connection() as conn:
            cancel_requested = await remote.report(
                conn,
                f.id,
                f.attempt,
                f.worker_id,
                progress=progress,
                checkpoint=None
                if data.checkpoint is None
                else _json(data.checkpoint, "checkpoint", limit),
                usage=None if data.usage is None else _encode(data.usage).decode(),
                token_id=principal.token_id,
            )
        if cancel_requested is None:
            raise await transitions.refusal(services.pool, f.id, f.lease)
        return HeartbeatAnswer(cancel_requested=cancel_requested)

    @post("/tasks/{task_id:str}/complete", status_code=HTTP_200_OK, summary="Complete")
    async def complete(
        self,
        task_id: FromPath[str],
        data: JSONBody[Complete],
        services: ServicesDep,
        principal: PrincipalDep,
    ) -> Task:
        require(principal, Role.WORKER, Role.ADMIN)
        result_json(data.result, services.settings.result_limit)  # the one result limit: 413
        outcome = Completed(result=data.result, usage=_usage(data.usage), exit_code=data.exit_code)
        return await _finish(services, principal, fence(task_id, data.lease), outcome)

    @post("/tasks/{task_id:str}/fail", status_code=HTTP_200_OK, summary="Fail an attempt")
    async def fail(
        self,
        task_id: FromPath[str],
        data: JSONBody[Fail],
        services: ServicesDep,
        principal: PrincipalDep,
    ) -> Task:
        """Retryable with attempts left: pending again after the backoff (or ``retry_in_s``).

        A task whose cancel was requested ends ``cancelled`` whatever the failure (a cancel
        wins). Deprecated, accepted for one release: an error of type ``cancelled`` records
        that the worker obeyed a cancel request, as ``POST /tasks/{id}/cancelled`` does.
        """
        require(principal, Role.WORKER, Role.ADMIN)
        f = fence(task_id, data.lease)
        if data.error.type == "cancelled":
            return await _finish(services, principal, f, Cancelled(usage=_usage(data.usage)))
        error = {**msgspec.structs.asdict(data.error), "retryable": data.retryable}
        if error["traceback"] is None:
            del error["traceback"]
        _json(error, "error", services.settings.max_payload_bytes)
        outcome = Failed(
            error=error,
            retryable=data.retryable,
            usage=_usage(data.usage),
            retry_in_s=data.retry_in_s,
            exit_code=data.exit_code,
        )
        return await _finish(
            services,
            principal,
            f,
            outcome,
            backoff_base_s=data.backoff_base_s,
            backoff_max_s=data.backoff_max_s,
        )

    @post("/tasks/{task_id:str}/cancelled", status_code=HTTP_200_OK, summary="Cancel obeyed")
    async def cancelled(
        self,
        task_id: FromPath[str],
        data: JSONBody[CancelObeyed],
        services: ServicesDep,
        principal: PrincipalDep,
    ) -> Task:
        """The worker stopped the handler because a cancel was requested: ``cancelled``."""
        require(principal, Role.WORKER, Role.ADMIN)
        outcome = Cancelled(usage=_usage(data.usage))
        return await _finish(services, principal, fence(task_id, data.lease), outcome)

    @post("/tasks/{task_id:str}/release", status_code=HTTP_200_OK, summary="Release")
    async def release(
        self,
        task_id: FromPath[str],
        data: JSONBody[Release],
        services: ServicesDep,
        principal: PrincipalDep,
    ) -> Task:
        """Hand a task back, due now, without spending its attempt (graceful shutdown).

        A task whose cancel was requested ends ``cancelled`` instead.
        """
        require(principal, Role.WORKER, Role.ADMIN)
        outcome = Released(usage=_usage(data.usage))
        return await _finish(services, principal, fence(task_id, data.lease), outcome)

    @post("/tasks/{task_id:str}/wait", status_code=HTTP_200_OK, summary="Wait for a signal")
    async def wait(
        self,
        task_id: FromPath[str],
        data: JSONBody[WaitIn],
        services: ServicesDep,
        principal: PrincipalDep,
    ) -> Task:
        """End the attempt as a wait for ``signal`` (SPEC §11): ``waiting``, the attempt given
        back; ``pending`` at once if that signal was sent meanwhile."""
        require(principal, Role.WORKER, Role.ADMIN)
        outcome = Waiting(signal=data.signal, timeout_s=data.timeout_s, usage=_usage(data.usage))
        return await _finish(services, principal, fence(task_id, data.lease), outcome)

    @get("/workers", summary="Live workers")
    async def workers(self, services: ServicesDep, principal: PrincipalDep) -> list[WorkerStatus]:
        """Local and remote workers with a heartbeat row, and how old that heartbeat is.

        Not for user tokens (403): hosts and pids are the operator's (SPEC §4)."""
        require(principal, Role.ADMIN, Role.WORKER)
        async with services.pool.connection() as conn:
            return await db_workers.live(conn)


async def _finish(
    services: Services,
    principal: Principal,
    f: Fence,
    outcome: Outcome,
    *,
    backoff_base_s: float | None = None,
    backoff_max_s: float | None = None,
) -> Task:
    """Record one outcome through the statement every worker uses; the task as it is now."""
    # The handler's backoff if the worker sent it (the server does not know its handlers).
    row = transitions.finish(
        f.id, f.attempt, f.worker_id, outcome,
        backoff_base_s=backoff_base_s or services.settings.backoff_base_s,
        backoff_max_s=backoff_max_s or services.settings.backoff_max_s,
    )  # fmt: skip
    done = await transitions.finish_many(services.pool, [row], token_id=principal.token_id)
    if not done:
        raise await transitions.refusal(services.pool, f.id, f.lease)
    services.metrics.finished.labels(outcome=name_of(outcome)).inc()
    return await services.queue.get(f.id)
