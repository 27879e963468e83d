"""``/healthz`` (the process answers), ``/readyz`` (database reachable, schema current) and
``/metrics`` (Prometheus). Public: load balancers and scrapers carry no API token; /metrics
needs PGQUEUE_METRICS_TOKEN when that is set.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.exceptions import NotAuthorizedException
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from pgqueue.api.auth import bearer
from pgqueue.api.schemas import Health
from pgqueue.api.services import ServicesDep
from pgqueue.db.migrate import current_version, latest_version

READY_TIMEOUT_S = 2.0


class HealthController(Controller):
    tags = ("operations",)
    include_in_schema = True

    @get("/healthz", summary="The process is up")
    async def healthz(self) -> Health:
        return Health(status="ok")

    @get("/readyz", summary="Database reachable and schema at the latest migration")
    async def readyz(self, services: ServicesDep) -> Response[Health]:
        latest = latest_version()
        try:
            async with services.pool.connection(timeout=READY_TIMEOUT_S) as conn:
                version = await current_version(conn)
        except Exception as exc:  # any failure to reach the database means "not ready"
            return Response(
                Health(status="unavailable", detail=f"database: {exc}", latest_version=latest),
                status_code=HTTP_503_SERVICE_UNAVAILABLE,
            )
        ready = version >= latest and services.listener.connected
        detail = None
        if version < latest:
            detail = f"schema: at migration {version}, latest is {latest}: run `pgqueue migrate`"
        elif not services.listener.connected:
            detail = f"listener: not connected ({services.listener.error!r})"
        return Response(
            Health(
                status="ok" if ready else "unavailable",
                detail=detail,
                schema_version=version,
                latest_version=latest,
            ),
            status_code=HTTP_200_OK if ready else HTTP_503_SERVICE_UNAVAILABLE,
        )

    @get("/metrics", summary="Prometheus metrics", media_type="text/plain; version=0.0.4")
    async def metrics(self, services: ServicesDep, request: Request[Any, Any, Any]) -> bytes:
        """A snapshot at most ``REFRESH_S`` old (api/metrics.py). With PGQUEUE_METRICS_TOKEN
        set, only a scraper that sends it as a bearer token gets it."""
        expected = services.settings.metrics_token
        if expected:
            given = bearer(request.headers.get("authorization")) or ""
            if not hmac.compare_digest(given.encode(), expected.encode()):
                raise NotAuthorizedException(
                    "Authorization: /metrics needs 'Bearer <PGQUEUE_METRICS_TOKEN>'"
                )
        services.metrics.ws_subscribers.set(services.hub.subscriber_count)
        services.metrics.long_polls.set(services.polls.open)
        return await services.metrics.render(services.pool)
