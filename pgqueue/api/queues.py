"""``GET /queues`` and ``GET /stats``: what operators and dashboards watch.

A user token's ``/stats`` counts its own tasks only (usage of others is theirs); queue
depths are shared facts and visible to every token.
"""

from __future__ import annotations

from litestar import Controller, get

from pgqueue.api.schemas import QueueStats, QueueUsage, Stats, UserUsage
from pgqueue.api.services import PrincipalDep, ServicesDep
from pgqueue.db.queries import QUERIES


class QueuesController(Controller):
    tags = ("operations",)

    @get("/queues", summary="Per-queue counts, backlog age and throughput")
    async def queues(self, services: ServicesDep, principal: PrincipalDep) -> list[QueueStats]:
        async with services.pool.connection() as conn:
            cur = await conn.execute(QUERIES["stats_queues"])
            rows = await cur.fetchall()
        return [QueueStats(*row) for row in rows]

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
