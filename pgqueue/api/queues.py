"""``GET /queues`` and ``GET /stats``: what operators and dashboards watch.

A user token's ``/queues`` and ``/stats`` count its own tasks only: how much work other
tenants have, and what it costs, is theirs to know (SPEC §4).
"""

from __future__ import annotations

import msgspec
from litestar import Controller, get, patch
from litestar.params import FromPath, JSONBody

from pgqueue.api.auth import Role, require
from pgqueue.api.schemas import QueueSettingsPatch
from pgqueue.api.services import PrincipalDep, ServicesDep
from pgqueue.db import queues, stats
from pgqueue.errors import InvalidInput
from pgqueue.limits import QueueSettings
from pgqueue.stats import QueueStats, Stats
from pgqueue.tasks import QueueName


class QueuesController(Controller):
    tags = ("operations",)

    @get("/queues", summary="Per-queue counts, backlog age and throughput")
    async def queues(self, services: ServicesDep, principal: PrincipalDep) -> list[QueueStats]:
        """Admins and workers: every queue. A user token: its own tasks only (SPEC §4)."""
        async with services.pool.connection() as conn:
            return await stats.queues(conn, None if principal.sees_all else principal.user_id)

    @get("/stats", summary="Totals and usage (tokens, cost) by user and by queue")
    async def stats(self, services: ServicesDep, principal: PrincipalDep) -> Stats:
        async with services.pool.connection() as conn:
            return await stats.usage(conn, None if principal.sees_all else principal.user_id)

    @patch(
        "/queues/{name:str}",
        summary="Pause or resume a queue; set its concurrency, rate, per-user, fair, breaker limits",  # noqa: E501
    )
    async def settings(
        self,
        name: FromPath[str],
        data: JSONBody[QueueSettingsPatch],
        services: ServicesDep,
        principal: PrincipalDep,
    ) -> QueueSettings:
        """Admins only. Resuming or raising the limit wakes the queue's workers at once."""
        require(principal, Role.ADMIN)
        try:
            queue = msgspec.convert(name, QueueName)
        except msgspec.ValidationError as exc:
            raise InvalidInput("name", f"{name!r} is not a queue name: {exc}") from None
        changes = data.changes()
        if not changes:
            raise InvalidInput(
                "paused",
                "give paused, concurrency_limit, rate_limit, per_user_concurrency, fair"
                " and/or circuit_breaker",
            )
        async with services.pool.connection() as conn:
            return await queues.configure(conn, queue, changes)
