"""The reports of the remote-worker protocol (SPEC §4): heartbeat, complete, fail,
cancelled, release and wait, each for one task the worker holds.

Every report carries the lease the claim returned (``<attempt>:<worker id>``) and runs as a
statement fenced by it and by the token that claimed it: a worker presumed dead, whose task
was reaped and claimed again, or another worker token, gets a 409 instead of overwriting the
holder's work. Outcomes go through ``pgqueue.db.transitions.finish_many``, the statement the
local worker's outbox uses, so both kinds of worker record the same transitions.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Controller, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK

from pgqueue.api.auth import Principal, Role, require
from pgqueue.api.services import PrincipalDep, Services, ServicesDep
from pgqueue.api.worker_bodies import (
    CancelObeyed,
    Complete,
    Fail,
    Heartbeat,
    Release,
    UsageIn,
    WaitIn,
)
from pgqueue.db import remote, transitions
from pgqueue.errors import InvalidInput, PayloadTooLarge
from pgqueue.leases import HeartbeatAnswer
from pgqueue.outcomes import Cancelled, Completed, Failed, Outcome, Released, Waiting, name_of
from pgqueue.tasks import Task, Usage, lease_parse, result_json

_encode = msgspec.json.Encoder().encode


class Fence(msgspec.Struct, frozen=True):
    """The lease of a request, split: the statement's WHERE clause."""

    id: uuid.UUID
    attempt: int
    worker_id: str
    lease: str


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


class ReportsController(Controller):
    tags = ("workers",)

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
