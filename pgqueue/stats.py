"""What operators watch (``GET /queues``, ``/workers``, ``/stats``, ``pgqueue status``): the
rows of those reads, declared once. ``pgqueue.db.stats`` and ``pgqueue.db.workers`` build
them; the API serves them and the CLI prints them. Imports no driver and no web framework.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import msgspec

from pgqueue.limits import CircuitBreaker, RateLimit


class QueueStats(msgspec.Struct, frozen=True):
    """One queue: counts by status, the due backlog and its age, throughput, settings."""

    name: str
    pending: int
    running: int
    completed: int
    failed: int
    cancelled: int
    due: int
    oldest_due_age_s: float
    completed_last_minute: int
    paused: bool
    concurrency_limit: int | None
    # §12 limits: null/false when not set; open_breakers: kinds not claimed now
    rate_limit: RateLimit | None = None
    per_user_concurrency: int | None = None
    fair: bool = False
    circuit_breaker: CircuitBreaker | None = None
    open_breakers: list[str] = []

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> QueueStats:
        """From the columns of the ``stats_queues`` queries."""
        (
            name, pending, running, completed, failed, cancelled, due, oldest, last_minute,
            paused, limit, rate_n, rate_s, per_user, fair, b_fail, b_cool, open_breakers,
        ) = row  # fmt: skip
        return cls(
            name, pending, running, completed, failed, cancelled, due, oldest, last_minute,
            paused, limit,
            rate_limit=RateLimit(rate_n, rate_s) if rate_n is not None else None,
            per_user_concurrency=per_user,
            fair=bool(fair),
            circuit_breaker=CircuitBreaker(b_fail, b_cool) if b_fail is not None else None,
            open_breakers=list(open_breakers),
        )  # fmt: skip

    def limits_text(self) -> str | None:
        """Every limit in one line, as the ``limits`` column of ``pgqueue.queue_stats`` shows
        it to psql users (numbers as PostgreSQL prints them); None when there is none."""
        parts: list[str] = []
        if self.concurrency_limit is not None:
            parts.append(f"concurrency {self.concurrency_limit}")
        parts += limit_parts(self, pg_float)
        return ", ".join(parts) or None


class _Limited(Protocol):
    """The §12 limits a queue's settings row and its stats row both carry."""

    @property
    def rate_limit(self) -> RateLimit | None: ...
    @property
    def per_user_concurrency(self) -> int | None: ...
    @property
    def fair(self) -> bool: ...
    @property
    def circuit_breaker(self) -> CircuitBreaker | None: ...


def limit_parts(q: _Limited, number: Callable[[float], str]) -> list[str]:
    """The §12 limits set on a queue, a phrase each (``rate 100/60s``, ``per-user 2``,
    ``fair``, ``breaker 5/30s``), the seconds written by ``number``."""
    parts: list[str] = []
    if q.rate_limit is not None:
        parts.append(f"rate {q.rate_limit.tasks}/{number(q.rate_limit.per_s)}s")
    if q.per_user_concurrency is not None:
        parts.append(f"per-user {q.per_user_concurrency}")
    if q.fair:
        parts.append("fair")
    if (breaker := q.circuit_breaker) is not None:
        parts.append(f"breaker {breaker.failures}/{number(breaker.cool_down_s)}s")
    return parts


def pg_float(value: float) -> str:
    """A float8 as PostgreSQL writes it: the shortest exact digits, no ``.0`` on integers."""
    text = repr(float(value))
    return text.removesuffix(".0")


class WorkerStatus(msgspec.Struct, frozen=True):
    """A worker with a heartbeat row (local or remote).

    ``running`` is what it last reported, ``running_tasks`` what the tasks table says it
    runs; ``alive``: heard from within ``pgqueue.stall_s`` (the reaper removes the others).
    """

    id: str
    host: str
    pid: int
    queues: list[str]
    kinds: list[str]
    concurrency: int
    running: int
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age_s: float
    running_tasks: int
    alive: bool


class UserUsage(msgspec.Struct, frozen=True):
    user_id: str | None
    tasks: int
    input_tokens: int
    output_tokens: int
    cost: float


class QueueUsage(msgspec.Struct, frozen=True):
    queue: str
    tasks: int
    input_tokens: int
    output_tokens: int
    cost: float


class Stats(msgspec.Struct, frozen=True):
    """Totals by status plus usage (tokens, cost) by user and by queue."""

    tasks: dict[str, int]
    usage: UserUsage
    by_user: list[UserUsage]
    by_queue: list[QueueUsage]


class RecentFailure(msgspec.Struct, frozen=True):
    """A row of ``pgqueue.failed_tasks``, the latest failures first."""

    id: Any
    queue: str
    kind: str
    attempts: int
    error_type: str | None
    error_message: str | None
    exit_code: int | None
    failed_at: datetime


class Overview(msgspec.Struct, frozen=True):
    """What ``pgqueue status`` shows, read in one snapshot so it adds up."""

    at: datetime
    queues: list[QueueStats]
    workers: list[WorkerStatus]
    failures: list[RecentFailure]
    stalled: int
