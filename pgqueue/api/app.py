"""The Litestar application factory: ``create_app(settings)``.

The lifespan opens what one server process shares — the pool, the one LISTEN connection,
the WebSocket hub, and the reaper, scheduler and retention loops (every process runs them,
SPEC §2) — and closes them on shutdown. Handlers receive ``services`` and the caller's
``principal`` by injection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncGenerator, Callable
from types import FrameType

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from pgqueue.api.auth import Authenticator
from pgqueue.api.body import JsonRequest
from pgqueue.api.errors import EXCEPTION_HANDLERS
from pgqueue.api.health import HealthController
from pgqueue.api.metrics import Metrics
from pgqueue.api.queues import QueuesController
from pgqueue.api.reports import ReportsController
from pgqueue.api.schedules import SchedulesController
from pgqueue.api.services import Services, provide_principal, provide_services
from pgqueue.api.sse import queue_stream, task_stream
from pgqueue.api.stream import Hub, stream
from pgqueue.api.tasks import TasksController
from pgqueue.api.ui import DashboardController
from pgqueue.api.users import UsersController, WhyController
from pgqueue.api.workers import WorkersController
from pgqueue.db.listener import Listener
from pgqueue.db.pool import create_pool
from pgqueue.events import EVENTS, WAKEUP
from pgqueue.services.maintenance import start_maintenance
from pgqueue.services.supervisor import Supervisor
from pgqueue.settings import Settings

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    insecure: bool = False,
    ws_buffer: int = 10_000,
    drain_on_signals: bool = False,
) -> Litestar:
    """The API for ``settings.dsn``. ``insecure``: no tokens, every caller is an admin.

    ``drain_on_signals`` (``pgqueue serve``): SIGTERM/SIGINT first drain the app — open
    long-polls answered, WebSockets closed with 1001 — then reach uvicorn's own handler,
    which stops accepting and waits for the (now short) requests in flight."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None, None]:
        pool = create_pool(settings.dsn, min_size=2, max_size=settings.pool_size)
        await pool.open(wait=True)
        listener = Listener(settings.listen_target, [EVENTS, WAKEUP])
        hub = Hub(listener, pool, buffer=ws_buffer, ping_s=settings.heartbeat_s)
        services = Services(
            settings, pool, listener, Authenticator(pool, insecure=insecure), metrics, hub
        )
        app.state.services = services
        background = Supervisor()
        restore: Callable[[], None] = lambda: None  # noqa: E731 -- the no-op default
        try:
            await listener.start()
            hub.start()
            start_maintenance(background, pool, settings)  # every process runs it (SPEC §2)
            if insecure:
                log.warning("pgqueue API without auth (--insecure): every caller is an admin")
            if drain_on_signals:
                restore = _drain_on_signals(services)
            yield
        finally:
            restore()
            await background.stop()
            await hub.stop()
            await listener.stop()
            await pool.close()

    return Litestar(
        route_handlers=[
            TasksController,
            WhyController,
            UsersController,
            WorkersController,
            ReportsController,
            QueuesController,
            SchedulesController,
            HealthController,
            stream,
            task_stream,
            queue_stream,
            DashboardController,  # GET /ui, the web dashboard (SPEC §14)
        ],
        dependencies={
            "services": Provide(provide_services, sync_to_thread=False),
            "principal": Provide(provide_principal),
        },
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[metrics.middleware],
        # Litestar refuses a body over this with a 413 as soon as it knows: from its
        # Content-Length before reading any of it, and for a chunked body when the bytes
        # received so far pass the limit (tests/api/test_limits.py sends both).
        request_max_body_size=settings.max_body_bytes,
        request_class=JsonRequest,
        openapi_config=OpenAPIConfig(
            title="pgqueue",
            version="0.1.0",
            description="A durable task queue that needs nothing but PostgreSQL (SPEC §4).",
            path="/schema",
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="pgq_…")
                }
            ),
            security=[{"bearer": []}],
        ),
        debug=False,
        # Log through the root logger as every pgqueue command sets it up (pgqueue/logging.py:
        # text, or one JSON object per line): Litestar's own config would replace it.
        logging_config=None,
    )


def _drain_on_signals(services: Services) -> Callable[[], None]:
    """Put a drain in front of the SIGTERM/SIGINT handlers installed now (uvicorn's: they
    are in place while the lifespan starts). The drain is scheduled on the loop, so it runs
    before uvicorn's main loop (which looks at its exit flag every 0.1 s) starts closing
    connections — WebSockets get our 1001, not uvicorn's 1012. Returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.getsignal(sig) for sig in signals}
    draining: list[asyncio.Task[None]] = []

    def start_drain() -> None:
        if not draining:
            draining.append(loop.create_task(_drain(services), name="pgqueue-drain"))

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(start_drain)
        before = previous[signal.Signals(signum)]
        if callable(before):
            before(signum, frame)
        elif before == signal.SIG_DFL:  # nobody else handles it: what it would have done
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    for sig in signals:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, before in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, before)

    return restore


async def _drain(services: Services) -> None:
    try:
        await services.drain()
    except Exception:
        log.exception("draining on shutdown failed; uvicorn's shutdown carries on")


def app_from_env() -> Litestar:
    """For ``uvicorn --factory`` (what ``pgqueue serve --workers N`` runs in each process)."""
    import os

    return create_app(
        Settings.from_env(),
        insecure=os.environ.get("PGQUEUE_INSECURE") == "1",
        drain_on_signals=True,
    )
