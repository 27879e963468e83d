"""The workers' side of the API: a remote worker's claim (SPEC §4), and the list of live
workers for operators. What a worker reports about a task it holds is ``api/reports.py``.

Claims go through ``pgqueue.db.transitions.claim``, the statement the local worker runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK

from pgqueue.api.auth import Role, require
from pgqueue.api.services import PrincipalDep, ServicesDep
from pgqueue.api.wakeup import first_of
from pgqueue.api.worker_bodies import Claim
from pgqueue.db import transitions
from pgqueue.db import workers as db_workers
from pgqueue.errors import Conflict
from pgqueue.leases import LeasedTask
from pgqueue.stats import WorkerStatus
from pgqueue.tasks import Task


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

    @get("/workers", summary="Live workers")
    async def workers(self, services: ServicesDep, principal: PrincipalDep) -> list[WorkerStatus]:
        """Local and remote workers with a heartbeat row, and how old that heartbeat is.

        Not for user tokens (403): hosts and pids are the operator's (SPEC §4)."""
        require(principal, Role.ADMIN, Role.WORKER)
        async with services.pool.connection() as conn:
            return await db_workers.live(conn)
