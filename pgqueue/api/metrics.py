"""Prometheus metrics of one API process (``GET /metrics``).

Counters and histograms are per process (Prometheus sums replicas); task counts by queue and
status come from the database at scrape time, so every replica reports the same truth.
Each app gets its own registry, so several apps in one process (tests) do not collide.
"""

from __future__ import annotations

import time
from typing import Any, cast

from litestar.types import ASGIApp, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from psycopg_pool import AsyncConnectionPool

from pgqueue.db.queries import QUERIES

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The metrics of one app, and how to render them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tasks = Gauge(
            "pgqueue_tasks", "Tasks by queue and status", ["queue", "status"], registry=r
        )
        self.enqueued = Counter(
            "pgqueue_api_enqueued_tasks", "Tasks enqueued through this process", registry=r
        )
        self.claimed = Counter(
            "pgqueue_api_claimed_tasks", "Tasks claimed by remote workers", ["queue"], registry=r
        )
        self.finished = Counter(
            "pgqueue_api_finished_tasks",
            "Outcomes reported by remote workers",
            ["outcome"],
            registry=r,
        )
        self.claim_wait = Histogram(
            "pgqueue_task_wait_seconds",
            "From due (run_at) to claimed, for tasks claimed over HTTP",
            buckets=(*_LATENCY_BUCKETS, 60, 300),
            registry=r,
        )
        self.request_latency = Histogram(
            "pgqueue_http_request_duration_seconds",
            "HTTP request latency by method and route",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ws_subscribers = Gauge(
            "pgqueue_ws_subscribers", "Open WebSocket connections", registry=r
        )
        self.ws_dropped = Counter(
            "pgqueue_ws_dropped_subscribers",
            "WebSocket subscribers closed because they fell too far behind",
            registry=r,
        )
        self.long_polls = Gauge(
            "pgqueue_http_long_polls", "Long-polls (?wait=, claim wait_s) open now", registry=r
        )
        self.pool = Gauge(
            "pgqueue_pool_connections", "Connection pool state", ["state"], registry=r
        )

    async def render(self, pool: AsyncConnectionPool) -> bytes:
        """Refresh the database-backed gauges, then the text exposition format."""
        async with pool.connection() as conn:
            cur = await conn.execute(QUERIES["stats_tasks_by_queue_status"])
            rows = await cur.fetchall()
        self.tasks.clear()
        for queue, status, count in rows:
            self.tasks.labels(queue=queue, status=status).set(count)
        stats = pool.get_stats()
        for key in ("pool_size", "pool_available", "requests_waiting"):
            self.pool.labels(state=key).set(stats.get(key, 0))
        return generate_latest(self.registry)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Time every HTTP request, labelled by its route template (bounded cardinality)."""

        # (method, route) -> its histogram child: labels() builds and locks per call, and
        # the set of routes is fixed, so each child is looked up once.
        children: dict[tuple[str, str], Any] = {}

        async def timed(scope: Scope, receive: Receive, send: Send) -> None:
            raw = cast("dict[str, Any]", scope)
            if raw["type"] != "http":
                await app(scope, receive, send)
                return
            start = time.perf_counter()
            try:
                await app(scope, receive, send)
            finally:
                handler: Any = raw.get("route_handler")
                route = next(iter(handler.paths), "?") if handler is not None else "unmatched"
                key = (raw["method"], route)
                child = children.get(key)
                if child is None:
                    child = children[key] = self.request_latency.labels(method=key[0], route=route)
                child.observe(time.perf_counter() - start)

        return timed
