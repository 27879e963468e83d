"""What one API process shares between requests: pool, listener, Queue (and the enqueue
coalescer in front of it), auth, hub, metrics.

Built in the app's lifespan and handed to handlers by dependency injection (``deps``).
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from psycopg_pool import AsyncConnectionPool

from pgqueue.api.auth import Authenticator, Principal
from pgqueue.api.coalesce import EnqueueCoalescer
from pgqueue.api.metrics import Metrics
from pgqueue.api.stream import Hub
from pgqueue.api.wakeup import WakeupBoard
from pgqueue.db.listener import Listener
from pgqueue.queue import Queue
from pgqueue.settings import Settings


class Services:
    """The process-wide objects; one instance per app, stored as ``app.state.services``."""

    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool,
        listener: Listener,
        auth: Authenticator,
        metrics: Metrics,
        hub: Hub,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.listener = listener
        self.auth = auth
        self.metrics = metrics
        self.hub = hub
        self.queue = Queue(settings=settings, pool=pool, listener=listener)
        self.enqueuer = EnqueueCoalescer(self.queue)
        self.wakeups = WakeupBoard(listener)


def provide_services(state: State) -> Services:
    services: Services = state.services
    return services


async def provide_principal(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Principal:
    """The caller. It takes ``services`` (not ``state``) on purpose: depending on it puts the
    two in separate dependency batches of one each, which Litestar awaits inline. As siblings
    they formed one batch of two, resolved in an anyio TaskGroup — two tasks spawned per
    request, 9 % of the server's CPU under `POST /tasks` load (py-spy)."""
    return await services.auth.of_connection(request)


# Handler parameters: explicitly marked as injected (Litestar 3 no longer infers them).
ServicesDep = NamedDependency[Services]
PrincipalDep = NamedDependency[Principal]
