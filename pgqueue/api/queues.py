"""``GET /queues`` and ``GET /stats``: what operators and dashboards watch.

A user token's ``/queues`` and ``/stats`` count its own tasks only: how much work other
tenants have, and what it costs, is theirs to know (SPEC §4).
"""

from __future__ import annotations

import msgspec
from litestar import Controller, get, patch
from litestar.params import FromPath, JSONBody

from pgqueue.api.auth import Role, require
from pgqueue.api.schemas import (
    QueueSettingsPatch,
    QueueStats,
    QueueUsage,
    Stats,
    UserUsage,
)
from pgqueue.api.services import PrincipalDep, ServicesDep
from pgqueue.db import limits
from pgqueue.db.queries import QUERIES
from pgqueue.errors import InvalidInput
from pgqueue.limits import QueueSettings
from pgqueue.tasks import QueueName


class QueuesController(Controller):
    tags = ("operations",)

    @get("/queues", summary="Per-queue counts, backlog age and throughput")
    async def queues(self, services: ServicesDep, principal: PrincipalDep) -> list[QueueStats]:
        """Admins and workers: every queue. A user token: its own tasks only (SPEC §4)."""
        async with services.pool.connection() as conn:
            if principal.sees_all:
                cur = await conn.execute(QUERIES["stats_queues"])
            else:
                cur = await conn.execute(
                    QUERIES["stats_queues_of_user"], {"user_id": principal.user_id}
                )
            rows = await cur.fetchall()
        return [QueueStats.from_row(row) for row in rows]

    @get("/stats", summary="Totals and usage (tokens, cost) by user and by queue")
    async def stats(self, services: ServicesDep, principal: PrincipalDep) -> Stats:
        only = None if principal.sees_all else principal.user_id
        async with services.pool.connection() as conn, conn.transaction():
            # One snapshot for all three reads: the totals add up.
            await conn.execute(QUERIES["stats_set_snapshot"])
            cur = await conn.execute(QUERIES["stats_usage_by_user"], {"user_id": only})
            by_user = [UserUsage(*row) for row in await cur.fetchall()]
            cur = await conn.execute(QUERIES["stats_usage_by_queue"], {"user_id": only})
            by_queue = [QueueUsage(*row) for row in await cur.fetchall()]
            cur = await conn.execute(QUERIES["stats_tasks_by_status"], {"user_id": only})
            totals = {str(status): int(count) for status, count in await cur.fetchall()}
        usage = UserUsage(
            user_id=only,
            tasks=sum(u.tasks for u in by_user),
            input_tokens=sum(u.input_tokens for u in by_user),
            output_tokens=sum(u.output_tokens for u in by_user),
            cost=sum(u.cost for u in by_user),
        )
        return Stats(tasks=totals, usage=usage, by_user=by_user, by_queue=by_queue)

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
        limit_changes = data.limit_changes()
        if (
            data.paused is msgspec.UNSET
            and data.concurrency_limit is msgspec.UNSET
            and not limit_changes
        ):
            raise InvalidInput(
                "paused",
                "give paused, concurrency_limit, rate_limit, per_user_concurrency, fair"
                " and/or circuit_breaker",
            )
        row = None
        async with services.pool.connection() as conn, conn.transaction():
            if data.paused is not msgspec.UNSET:
                query = QUERIES["queue_pause"] if data.paused else QUERIES["queue_resume"]
                row = await (await conn.execute(query, {"queue": queue})).fetchone()
            if data.concurrency_limit is not msgspec.UNSET:
                cur = await conn.execute(
                    QUERIES["queue_set_limit"], {"queue": queue, "limit": data.concurrency_limit}
                )
                row = await cur.fetchone()
            if limit_changes:
                return await limits.set_queue(conn, queue, limit_changes)
        assert row is not None
        return QueueSettings.from_row(row)
