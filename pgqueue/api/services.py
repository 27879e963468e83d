"""What one API process shares between requests: pool, listener, Queue (and the enqueue
coalescer in front of it), auth, hub, metrics.

Built in the app's lifespan and handed to handlers by dependency injection (``deps``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.types import Receive
from psycopg_pool import AsyncConnectionPool

from pgqueue.api.auth import Authenticator, Principal
from pgqueue.api.coalesce import EnqueueCoalescer
from pgqueue.api.metrics import Metrics
from pgqueue.api.stream import Hub
from pgqueue.api.wakeup import LongPolls, WakeupBoard
from pgqueue.db.listener import Listener
from pgqueue.queue import Queue
from pgqueue.settings import Settings
from pgqueue.tasks import Task

log = logging.getLogger(__name__)


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
        self.polls = LongPolls()

    async def wait_task(self, receive: Receive, task: Task, timeout_s: float) -> Task:
        """``?wait=``: the task once terminal, or its state when the wait ends — after
        ``timeout_s`` or when the server shuts down. When the client disconnects it ends at
        once, with no query: ``task`` comes back unchanged, to nobody (uvicorn drops it)."""
        async with self.polls.hold(receive) as hold:
            waiting = asyncio.ensure_future(
                self.queue.wait(task.id, timeout_s=timeout_s, stop=hold.drained)
            )
            gone = asyncio.ensure_future(hold.gone.wait())
            try:
                await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone.cancel()
                if not waiting.done():  # the client left: nothing to read, nobody to tell
                    waiting.cancel()
            return task if waiting.cancelled() else waiting.result()

    async def drain(self) -> None:
        """The start of a shutdown (SIGTERM): answer every long-poll now, refuse to park new
        ones, and close every WebSocket with 1001 (going away)."""
        polls = self.polls.drain()
        sockets = self.hub.subscriber_count
        log.info("draining: %d long-poll(s), %d WebSocket(s)", polls, sockets)
        await self.hub.close_all()


def provide_services(state: State) -> Services:
    services: Services = state.services
    return services


async def provide_principal(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Principal:
    """The caller. It takes ``services`` (not ``state``) on purpose: depending on it puts the
    two in separate dependency batches of one each, which Litestar awaits inline. As siblings
    they formed one batch of two, resolved in an anyio TaskGroup — two tasks spawned per
    request, a visible share of the server's CPU under `POST /tasks` load (py-spy)."""
    return await services.auth.of_connection(request)


# Handler parameters: explicitly marked as injected (Litestar 3 no longer infers them).
ServicesDep = NamedDependency[Services]
PrincipalDep = NamedDependency[Principal]
