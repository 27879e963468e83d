"""The Litestar application factory: ``create_app(settings)``.

The lifespan opens what one server process shares — the pool, the one LISTEN connection,
the WebSocket hub, and the reaper, scheduler and retention loops (every process runs them,
SPEC §2) — and closes them on shutdown. Handlers receive ``services`` and the caller's
``principal`` by injection.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from pgqueue.api.auth import Authenticator
from pgqueue.api.errors import EXCEPTION_HANDLERS
from pgqueue.api.health import HealthController
from pgqueue.api.metrics import Metrics
from pgqueue.api.queues import QueuesController
from pgqueue.api.schedules import SchedulesController
from pgqueue.api.services import Services, provide_principal, provide_services
from pgqueue.api.stream import Hub, stream
from pgqueue.api.tasks import TasksController
from pgqueue.api.ui import DashboardController
from pgqueue.api.workers import WorkersController
from pgqueue.db.listener import Listener
from pgqueue.db.pool import create_pool
from pgqueue.events import EVENTS, WAKEUP
from pgqueue.services.maintenance import start_maintenance
from pgqueue.services.supervisor import Supervisor
from pgqueue.settings import Settings

log = logging.getLogger(__name__)

# A batch of 10,000 small tasks is a few MB; one task may carry PGQUEUE_MAX_PAYLOAD_BYTES.
# Oversize bodies are refused by Litestar with a 413 before they are read into memory.
MIN_BODY_BYTES = 64 * 1024 * 1024


def create_app(settings: Settings, *, insecure: bool = False, ws_buffer: int = 10_000) -> Litestar:
    """The API for ``settings.dsn``. ``insecure``: no tokens, every caller is an admin."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = create_pool(settings.dsn, min_size=2, max_size=settings.pool_size)
        await pool.open(wait=True)
        listener = Listener(settings.dsn, [EVENTS, WAKEUP])
        hub = Hub(listener, pool, buffer=ws_buffer)
        services = Services(
            settings, pool, listener, Authenticator(pool, insecure=insecure), metrics, hub
        )
        app.state.services = services
        background = Supervisor()
        try:
            await listener.start()
            hub.start()
            start_maintenance(background, pool, settings)  # every process runs it (SPEC §2)
            if insecure:
                log.warning("pgqueue API without auth (--insecure): every caller is an admin")
            yield
        finally:
            await background.stop()
            await hub.stop()
            await listener.stop()
            await pool.close()

    return Litestar(
        route_handlers=[
            TasksController,
            WorkersController,
            QueuesController,
            SchedulesController,
            HealthController,
            stream,
            DashboardController,  # GET /ui, the web dashboard (SPEC §14)
        ],
        dependencies={
            "services": Provide(provide_services, sync_to_thread=False),
            "principal": Provide(provide_principal),
        },
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[metrics.middleware],
        request_max_body_size=max(MIN_BODY_BYTES, 2 * settings.max_payload_bytes),
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


def app_from_env() -> Litestar:
    """For ``uvicorn --factory`` (what ``pgqueue serve --workers N`` runs in each process)."""
    import os

    return create_app(Settings.from_env(), insecure=os.environ.get("PGQUEUE_INSECURE") == "1")
