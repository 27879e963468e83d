"""Stream positions on the audit trail: the reads behind ``event_id`` and ``since`` (SPEC §5).

``replay`` is the one read: the audit rows after a ``Position`` that a coverage selects, and
the snapshot they were read in. The hub runs it to follow the trail live (coverage:
everything) and to bring a resuming subscriber up to date (coverage: its subscription).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
from psycopg import AsyncConnection

from pgqueue.db import tasks as db_tasks
from pgqueue.db.queries import QUERIES
from pgqueue.events import EventName
from pgqueue.stream import Position, Snapshot
from pgqueue.tasks import Status, Task, TaskId


class EventRow(msgspec.Struct, frozen=True):
    """One audit row as the stream routes it: the change, with its task's queue and owner."""

    id: int
    xid: int
    task_id: TaskId
    event: EventName
    status: Status
    queue: str
    user_id: str | None
    in_b: bool  # visible in the position's snapshot ``b`` (sent before the newer rows)


class Replay(msgspec.Struct, frozen=True):
    snapshot: Snapshot
    rows: list[EventRow]


class Coverage(msgspec.Struct, frozen=True):
    """Which changes a subscription covers: everything, or these tasks and queues; and only
    ``owner``'s tasks when set (a ``user`` token)."""

    everything: bool = False
    task_ids: Sequence[TaskId] = ()
    queues: Sequence[str] = ()
    owner: str | None = None


EVERYTHING = Coverage(everything=True)


async def snapshot(conn: AsyncConnection[Any]) -> Snapshot:
    cur = await conn.execute(QUERIES["stream_snapshot"])
    row = await cur.fetchone()
    assert row is not None
    return Snapshot.parse(row[0])


async def replay(
    conn: AsyncConnection[Any], after: Position, coverage: Coverage, *, limit: int
) -> Replay:
    """Up to ``limit`` rows after ``after`` that ``coverage`` selects, in delivery order."""
    cur = await conn.execute(
        QUERIES["event_replay"],
        {
            "a_xip": [str(x) for x in after.a.xip],
            "a_xmax": str(after.a.xmax),
            "b": after.b.text(),
            "after_id": after.after_id,
            "everything": coverage.everything,
            "task_ids": list(coverage.task_ids),
            "queues": list(coverage.queues),
            "owner": coverage.owner,
            "limit": limit,
        },
    )
    records = await cur.fetchall()
    rows = [
        EventRow(
            id=r[1],
            xid=int(r[2]),
            task_id=r[3],
            event=r[4],
            status=Status(r[5]),
            queue=r[6],
            user_id=r[7],
            in_b=r[8],
        )
        for r in records
        if r[1] is not None
    ]
    return Replay(Snapshot.parse(records[0][0]), rows)


async def horizon(conn: AsyncConnection[Any]) -> int | None:
    """The newest transaction whose audit rows were deleted, if any ever were."""
    cur = await conn.execute(QUERIES["stream_horizon_get"])
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def tasks(conn: AsyncConnection[Any], ids: Iterable[TaskId]) -> dict[TaskId, Task]:
    """The tasks the changes of a read name, by id (a purged one is missing)."""
    return {t.id: t for t in await db_tasks.get_many(conn, list(ids))}
