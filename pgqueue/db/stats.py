"""The operators' reads (``sql/queries/stats.sql``, ``operator_views.sql``): per-queue
counts, usage totals, the numbers behind ``/metrics`` and the ``pgqueue status`` overview.

Aggregates over the tasks table; each returns typed rows (``pgqueue.stats``), never tuples.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from psycopg.rows import class_row

from pgqueue.db import clock, workers
from pgqueue.db.queries import QUERIES
from pgqueue.db.rows import Conn
from pgqueue.stats import Overview, QueueStats, QueueUsage, RecentFailure, Stats, UserUsage


class TaskCount(msgspec.Struct, frozen=True):
    """How many tasks of ``queue`` are in ``status`` (the ``pgqueue_tasks`` gauge)."""

    queue: str
    status: str
    count: int


class HeldBack(msgspec.Struct, frozen=True):
    """Due tasks of ``queue`` a §12 rule holds back now, by the code ``why`` gives."""

    queue: str
    reason: str
    tasks: int


class Observation(msgspec.Struct, frozen=True):
    """Starts or attempt ends of one queue, kind and event in one duration bucket (SPEC §15).

    ``bucket`` is ``width_bucket`` over the bounds asked for: 0 below the first, n past the
    last; None when the event has no duration (a pending task cancelled).
    """

    queue: str
    kind: str
    event: str
    bucket: int | None
    n: int
    total: float


async def queues(conn: Conn, user_id: str | None = None) -> list[QueueStats]:
    """Every queue; with ``user_id``, the queues that user has tasks in, counting only theirs
    (another tenant's backlog is not theirs to see, SPEC §4)."""
    if user_id is None:
        cur = await conn.execute(QUERIES["stats_queues"])
    else:
        cur = await conn.execute(QUERIES["stats_queues_of_user"], {"user_id": user_id})
    return [QueueStats.from_row(row) for row in await cur.fetchall()]


async def usage(conn: Conn, user_id: str | None = None) -> Stats:
    """Totals by status and usage by user and by queue (one owner's only, with ``user_id``),
    read in one snapshot so they add up."""
    params = {"user_id": user_id}
    async with conn.transaction():
        await conn.execute(QUERIES["stats_set_snapshot"])
        cur = await conn.execute(QUERIES["stats_usage_by_user"], params)
        by_user = [UserUsage(*row) for row in await cur.fetchall()]
        cur = await conn.execute(QUERIES["stats_usage_by_queue"], params)
        by_queue = [QueueUsage(*row) for row in await cur.fetchall()]
        cur = await conn.execute(QUERIES["stats_tasks_by_status"], params)
        totals = {str(status): int(count) for status, count in await cur.fetchall()}
    total = UserUsage(
        user_id=user_id,
        tasks=sum(u.tasks for u in by_user),
        input_tokens=sum(u.input_tokens for u in by_user),
        output_tokens=sum(u.output_tokens for u in by_user),
        cost=sum(u.cost for u in by_user),
    )
    return Stats(tasks=totals, usage=total, by_user=by_user, by_queue=by_queue)


async def task_counts(conn: Conn) -> list[TaskCount]:
    """Tasks by queue and status, every queue."""
    cur = await conn.execute(QUERIES["stats_tasks_by_queue_status"])
    return [TaskCount(*row) for row in await cur.fetchall()]


async def held_back(conn: Conn) -> list[HeldBack]:
    """Due tasks held back now by each §12 rule, per queue (``pgqueue.held_back``)."""
    cur = await conn.execute(QUERIES["stats_held_back"])
    return [HeldBack(*row) for row in await cur.fetchall()]


async def last_event_id(conn: Conn) -> int:
    """The newest audit row's id (0: none): where a reader of the trail starts."""
    row = await (await conn.execute(QUERIES["stats_event_max_id"])).fetchone()
    return int(row[0]) if row else 0


async def event_ids(conn: Conn, after: int, limit: int) -> list[int]:
    """The ids of the audit rows after ``after``, oldest first, at most ``limit``."""
    cur = await conn.execute(QUERIES["stats_event_ids"], {"after": after, "limit": limit})
    return [int(row[0]) for row in await cur.fetchall()]


async def observations(
    conn: Conn, after: int, upto: int, bounds: Sequence[float]
) -> list[Observation]:
    """The starts and attempt ends of the audit rows (after, upto], bucketed by ``bounds``."""
    cur = await conn.execute(
        QUERIES["stats_task_observations"], {"after": after, "upto": upto, "bounds": list(bounds)}
    )
    return [
        Observation(queue, kind, event, bucket, int(n), float(total))
        for queue, kind, event, bucket, n, total in await cur.fetchall()
    ]


async def overview(conn: Conn, failures: int = 10) -> Overview:
    """Queues, workers, the latest ``failures`` and the stalled count, in one REPEATABLE READ
    transaction so they add up (``pgqueue status``)."""
    async with conn.transaction():
        await conn.execute(QUERIES["stats_set_snapshot"])
        now = await clock.now(conn)
        all_queues = await queues(conn)
        live = await workers.live(conn)
        failed = conn.cursor(row_factory=class_row(RecentFailure))
        await failed.execute(QUERIES["view_failed_recent"], {"limit": failures})
        recent = await failed.fetchall()
        cur = await conn.execute(QUERIES["view_stalled_count"])
        stalled = await cur.fetchone()
    return Overview(now, all_queues, live, recent, int(stalled[0]) if stalled else 0)
