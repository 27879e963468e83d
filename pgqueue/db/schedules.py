"""Schedules (``sql/queries/schedule.sql``): managed by ``pgqueue.schedules.service`` (CLI and
HTTP), fired by ``pgqueue.schedules.scheduler``. Every time is the database clock's."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from psycopg.rows import class_row

from pgqueue.db.errors import translated
from pgqueue.db.queries import QUERIES
from pgqueue.db.rows import Conn
from pgqueue.schedules.models import Schedule


class DueSchedule(Schedule, frozen=True):
    """A claimed schedule with the clock it was found due by."""

    clock: datetime


async def insert(conn: Conn, fields: dict[str, Any]) -> Schedule | None:
    """A new schedule (``name, cron, timezone, task`` as JSON text, ``enabled``,
    ``next_fire_at``); None when the name is taken."""
    cur = conn.cursor(row_factory=class_row(Schedule))
    with translated():
        await cur.execute(QUERIES["schedule_insert"], fields)
    return await cur.fetchone()


async def get(conn: Conn, name: str, *, for_update: bool = False) -> Schedule | None:
    """One schedule; ``for_update`` locks it for the caller's transaction."""
    cur = conn.cursor(row_factory=class_row(Schedule))
    query = QUERIES["schedule_get_for_update"] if for_update else QUERIES["schedule_get"]
    await cur.execute(query, {"name": name})
    return await cur.fetchone()


async def list_all(conn: Conn) -> list[Schedule]:
    """Every schedule, by name."""
    cur = conn.cursor(row_factory=class_row(Schedule))
    await cur.execute(QUERIES["schedule_list"])
    return await cur.fetchall()


async def update(conn: Conn, fields: dict[str, Any]) -> Schedule | None:
    """Replace a schedule's definition (fields as for ``insert``); None when it is gone."""
    cur = conn.cursor(row_factory=class_row(Schedule))
    with translated():
        await cur.execute(QUERIES["schedule_update"], fields)
    return await cur.fetchone()


async def delete(conn: Conn, name: str) -> bool:
    """Delete a schedule and its record of fires; False when there was none."""
    cur = await conn.execute(QUERIES["schedule_delete"], {"name": name})
    return await cur.fetchone() is not None


async def claim_due(conn: Conn, now: datetime | None, limit: int) -> list[DueSchedule]:
    """Up to ``limit`` enabled schedules due at ``now`` (None: the database's now()), locked
    for the caller's transaction; those another scheduler holds are skipped."""
    cur = conn.cursor(row_factory=class_row(DueSchedule))
    await cur.execute(QUERIES["schedule_claim_due"], {"now": now, "limit": limit})
    return await cur.fetchall()


async def record_fire(conn: Conn, name: str, fire_at: datetime, task_id: uuid.UUID) -> bool:
    """Record that this slot made this task; False when the slot had already fired."""
    cur = await conn.execute(
        QUERIES["schedule_fire_record"], {"name": name, "fire_at": fire_at, "task_id": task_id}
    )
    return await cur.fetchone() is not None


async def fired(
    conn: Conn,
    name: str,
    *,
    fire_at: datetime,
    task_id: uuid.UUID | None,
    already_fired: bool,
    next_fire_at: datetime,
) -> None:
    """Move a fired schedule to its next slot (a slot fired before keeps its last task)."""
    await conn.execute(
        QUERIES["schedule_fired"],
        {
            "name": name,
            "fire_at": fire_at,
            "task_id": task_id,
            "already_fired": already_fired,
            "next_fire_at": next_fire_at,
        },
    )


async def next_due_in(conn: Conn) -> float | None:
    """Seconds until the earliest enabled schedule is due (None: no enabled schedule)."""
    cur = await conn.execute(QUERIES["schedule_next_due_in"])
    row = await cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def disable(conn: Conn, name: str) -> None:
    """Pause a schedule whose expression or time zone can no longer be evaluated."""
    await conn.execute(QUERIES["schedule_disable"], {"name": name})
