"""Prometheus metrics of one API process (``GET /metrics``).

**A snapshot.** The text served is rebuilt at most every ``REFRESH_S`` (5 s) per process,
whatever the scrape rate; concurrent scrapes of a stale snapshot share one rebuild. Each
rebuild costs two or three short queries; a scrape between rebuilds costs none. (Every
scrape used to aggregate the whole tasks table: 40 scrapers slowed every producer.)

**Two kinds of numbers.** The HTTP request histograms, WebSocket and long-poll gauges and the
remote-worker counters (``pgqueue_api_*``) are this process's own: Prometheus sums replicas.
The task numbers are the database's, the same in every replica: the task count by queue and
status (a gauge), and SPEC §15's ``pgqueue_task_start_latency_seconds`` (from due to
started), ``pgqueue_task_run_seconds`` (one attempt, started to its end) and
``pgqueue_task_outcomes_total`` (attempt ends by outcome), each by queue and kind.

**Why §15's numbers come from the audit trail.** Outcomes are recorded by whichever process
runs the task — a local worker writes straight to the database and never passes an API
process — so no API process could count them in memory, and a worker has no /metrics. Every
start and attempt end is already a row of ``pgqueue.events``; each process reads the rows
added since its last rebuild (``stats_task_observations``, bucketed in SQL so only a few
rows come back) and adds them to its counters. That costs what the event rate costs, not
what the table holds, and is correct across any number of processes: every replica counts
every event once. Replicas report the same cluster-wide series from their own start, so
aggregate them with ``max`` (or ``rate`` per instance), not ``sum``. Event ids are assigned
before commit, so a reader may see id 12 before id 11 commits: a rebuild reads only up to
the first missing id, and skips one that is still missing ``GAP_GRACE_S`` later (a rolled
back transaction's id never appears). Queue and kind label values are capped at
``MAX_SERIES`` pairs; beyond it, kinds are counted as ``_other`` (kinds are caller-chosen
strings: a tenant must not be able to grow every scraper's memory).

Each app gets its own registry, so several apps in one process (tests) do not collide.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any, cast

from litestar.types import ASGIApp, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg_pool import AsyncConnectionPool

from pgqueue.db import stats as db_stats
from pgqueue.db.rows import Conn

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Task start latency and run time span milliseconds to hours.
TASK_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
REFRESH_S = 5.0
GAP_GRACE_S = 10.0
MAX_SERIES = 1000
_EVENTS_PER_REFRESH = 100_000
_OUTCOMES = ("completed", "failed", "retry_scheduled", "requeued", "cancelled")


class TaskStats(Collector):
    """§15's task histograms and outcome counters, accumulated from the audit trail."""

    def __init__(self) -> None:
        self.after: int | None = None  # the last event id counted
        self._gaps: dict[int, float] = {}  # missing id -> when first seen missing
        # (queue, kind) -> bucket counts (len(TASK_BUCKETS) + 1, the last past every bound)
        self.latency: dict[tuple[str, str], list[int]] = {}
        self.latency_sum: dict[tuple[str, str], float] = {}
        self.run: dict[tuple[str, str], list[int]] = {}
        self.run_sum: dict[tuple[str, str], float] = {}
        self.outcomes: dict[tuple[str, str, str], int] = {}
        self._series: set[tuple[str, str]] = set()

    async def refresh(self, conn: Conn) -> None:
        """Count the events committed since the last refresh."""
        if self.after is None:
            self.after = await db_stats.last_event_id(conn)
            return
        upto = self._unbroken(await db_stats.event_ids(conn, self.after, _EVENTS_PER_REFRESH))
        if upto == self.after:
            return
        for seen in await db_stats.observations(conn, self.after, upto, TASK_BUCKETS):
            self._add(
                self._labels(seen.queue, seen.kind), seen.event, seen.bucket, seen.n, seen.total
            )
        self.after = upto

    def _unbroken(self, ids: list[int]) -> int:
        """The last id of the run from ``after`` with no id missing (or missing for longer
        than GAP_GRACE_S: a rolled-back transaction's, which will never appear)."""
        assert self.after is not None
        now = time.monotonic()
        upto = self.after
        for id_ in ids:
            for missing in range(upto + 1, id_):
                first_seen = self._gaps.setdefault(missing, now)
                if now - first_seen < GAP_GRACE_S:
                    self._gaps = {g: t for g, t in self._gaps.items() if g > upto}
                    return upto
            upto = id_
        self._gaps = {g: t for g, t in self._gaps.items() if g > upto}
        return upto

    def _labels(self, queue: str, kind: str) -> tuple[str, str]:
        key = (queue, kind)
        if key in self._series or len(self._series) < MAX_SERIES:
            self._series.add(key)
            return key
        return ("_other", "_other")

    def _add(
        self, key: tuple[str, str], event: str, bucket: int | None, n: int, total: float
    ) -> None:
        if event != "started":
            outcome = (*key, event)
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n
        if bucket is None:  # no duration (a pending task cancelled)
            return
        counts, sums = (
            (self.latency, self.latency_sum) if event == "started" else (self.run, self.run_sum)
        )
        buckets = counts.setdefault(key, [0] * (len(TASK_BUCKETS) + 1))
        buckets[bucket] += n
        sums[key] = sums.get(key, 0.0) + total

    def collect(self) -> Iterator[Metric]:
        for name, doc, counts, sums in (
            (
                "pgqueue_task_start_latency_seconds",
                "From when a task fell due (enqueued, or its run_at) to its start, every replica's",
                self.latency,
                self.latency_sum,
            ),
            (
                "pgqueue_task_run_seconds",
                "One attempt, from its start to its end, every replica's",
                self.run,
                self.run_sum,
            ),
        ):
            family = HistogramMetricFamily(name, doc, labels=["queue", "kind"])
            for key, buckets in sorted(counts.items()):
                cumulative: list[tuple[str, float]] = []
                seen = 0
                for bound, n in zip(TASK_BUCKETS, buckets, strict=False):
                    seen += n
                    cumulative.append((_bound(bound), seen))
                cumulative.append(("+Inf", sum(buckets)))
                family.add_metric(list(key), cumulative, sum_value=sums.get(key, 0.0))
            yield family
        outcomes = CounterMetricFamily(
            "pgqueue_task_outcomes",
            "Attempt ends by outcome (completed, failed, retry_scheduled, requeued, cancelled)",
            labels=["queue", "kind", "outcome"],
        )
        for (queue, kind, outcome), n in sorted(self.outcomes.items()):
            outcomes.add_metric([queue, kind, outcome], n)
        yield outcomes


def _bound(value: float) -> str:
    return repr(float(value))


class Metrics:
    """The metrics of one app, and how to render them."""

    def __init__(self, refresh_s: float = REFRESH_S) -> None:
        self.refresh_s = refresh_s
        self._snapshot = b""
        self._taken_at = 0.0
        self._rebuild: asyncio.Future[bytes] | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.task_stats = TaskStats()
        r.register(self.task_stats)
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
        self.held_back = Gauge(
            "pgqueue_tasks_held_back",
            "Due tasks a limit holds back now, by queue and reason (the codes of why)",
            ["queue", "reason"],
            registry=r,
        )
        self.long_polls = Gauge(
            "pgqueue_http_long_polls", "Long-polls (?wait=, claim wait_s) open now", registry=r
        )
        self.pool = Gauge(
            "pgqueue_pool_connections", "Connection pool state", ["state"], registry=r
        )

    async def render(self, pool: AsyncConnectionPool) -> bytes:
        """The snapshot: rebuilt when older than ``REFRESH_S``, by one caller at a time."""
        if time.monotonic() - self._taken_at < self.refresh_s and self._snapshot:
            return self._snapshot
        if self._rebuild is None:
            self._rebuild = asyncio.ensure_future(self._take(pool))
            self._rebuild.add_done_callback(self._rebuilt)
        return await asyncio.shield(self._rebuild)

    def _rebuilt(self, done: asyncio.Future[bytes]) -> None:
        self._rebuild = None
        if not done.cancelled():
            done.exception()  # its waiters raise it; retrieved even when none is left

    async def _take(self, pool: AsyncConnectionPool) -> bytes:
        async with pool.connection() as conn:
            counts = await db_stats.task_counts(conn)
            held = await db_stats.held_back(conn)
            try:
                await self.task_stats.refresh(conn)
            except Exception:
                # The counters stay where they were and the next rebuild tries again; the
                # rest of the metrics are still worth serving.
                log.exception("metrics: reading the audit trail failed")
        self.tasks.clear()
        for c in counts:
            self.tasks.labels(queue=c.queue, status=c.status).set(c.count)
        self.held_back.clear()
        for h in held:
            self.held_back.labels(queue=h.queue, reason=h.reason).set(h.tasks)
        stats = pool.get_stats()
        for key in ("pool_size", "pool_available", "requests_waiting"):
            self.pool.labels(state=key).set(stats.get(key, 0))
        self._snapshot = generate_latest(self.registry)
        self._taken_at = time.monotonic()
        return self._snapshot

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
