"""Tasks as producers and operators see them (``sql/queries/task_enqueue.sql``,
``task_read.sql``, ``task_control.sql``): insert, read, list, cancel, retry and signal.

Every function runs on the connection it is given, a pooled one or a caller's own (whose
row factory may be anything: each statement picks its own). Values the database refuses
leave as pgqueue errors (``db/errors.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from psycopg import AsyncCursor
from psycopg.pq import TransactionStatus
from psycopg.rows import RowMaker, tuple_row

from pgqueue.db.errors import translated
from pgqueue.db.queries import QUERIES
from pgqueue.db.rows import Conn, event_row, task_row
from pgqueue.gc_pause import gc_paused
from pgqueue.tasks import Event, NewTask, Status, Task, TaskId


class Inserted(NamedTuple):
    """What an insert's ``RETURNING`` gives: only what the database decided (the caller knows
    the rest, see ``pgqueue.enqueue.created``)."""

    id: TaskId
    seq: int
    run_at: datetime
    created_at: datetime
    user_id: str | None
    idempotency_key: str | None
    status: str  # pending, or what the dependencies decided (blocked, cancelled)


def _inserted_row(cursor: AsyncCursor[Any]) -> RowMaker[Inserted]:
    return Inserted._make


class Signalled(NamedTuple):
    """``pgqueue.send_signal``'s answer: the task, whether this call stored the signal, and
    whether the payload is the one stored (the first of a name stands)."""

    task: Task
    stored: bool
    same: bool


_TASK_STATUS_AT = list(Task.__struct_fields__).index("status")


async def lock_dependencies(conn: Conn, ids: Sequence[uuid.UUID]) -> None:
    """Lock an enqueue's dependencies until its transaction ends, all at once, never
    waiting while holding one (``sql/queries/task_dependencies.sql``)."""
    await conn.execute(QUERIES["task_lock_dependencies"], {"ids": sorted(set(ids))})


async def insert(conn: Conn, task: NewTask, payload: str) -> Inserted | None:
    """Insert one validated task (``payload`` already JSON); None when its owner's
    idempotency key is taken (the caller reads the holder). Its dependencies are locked
    first, in the same transaction (a transaction of its own on an autocommit connection)."""
    if not task.depends_on:
        return await _insert(conn, task, payload)
    if conn.info.transaction_status != TransactionStatus.IDLE:  # the caller's transaction
        await lock_dependencies(conn, task.depends_on)
        return await _insert(conn, task, payload)
    async with conn.transaction():
        await lock_dependencies(conn, task.depends_on)
        return await _insert(conn, task, payload)


async def _insert(conn: Conn, task: NewTask, payload: str) -> Inserted | None:
    cur = conn.cursor(row_factory=_inserted_row)
    with translated():
        await cur.execute(
            QUERIES["task_insert"],
            {
                "kind": task.kind,
                "payload": payload,
                "queue": task.queue,
                "priority": task.priority,
                "run_at": task.run_at,
                "delay_s": task.delay_s,
                "max_retries": task.max_retries,
                "timeout_s": task.timeout_s,
                "backoff_base_s": task.backoff_base_s,
                "backoff_max_s": task.backoff_max_s,
                "idempotency_key": task.idempotency_key,
                "user_id": task.user_id,
                "tags": task.tags,
                "parent_id": task.parent_id,
                "traceparent": task.traceparent,
                "depends_on": task.depends_on,
                "callback_url": task.callback_url,
            },
        )
    return await cur.fetchone()


async def insert_many(
    conn: Conn, rows_json: str, user_id: str | None, dependencies: Sequence[uuid.UUID] = ()
) -> list[Inserted]:
    """Insert a batch given as one JSON array of ``NewTask`` rows in one statement, in input
    order (``seq``); rows whose key their owner already used are skipped. ``user_id`` owns
    the rows that name no owner. ``dependencies``: every ``depends_on`` of the batch, locked
    first; the caller runs this in a transaction when there are any."""
    if dependencies:
        await lock_dependencies(conn, dependencies)
    cur = conn.cursor(row_factory=_inserted_row)
    with translated():
        await cur.execute(QUERIES["task_insert_many"], {"tasks": rows_json, "user_id": user_id})
    # The rows are all here once execute returns: fetchall only builds them (no wait).
    with gc_paused(cur.rowcount):
        return sorted(await cur.fetchall(), key=lambda row: row.seq)


async def by_idempotency_keys(
    conn: Conn, owners: Sequence[str], keys: Sequence[str | None]
) -> list[Task]:
    """The tasks holding these ``(coalesce(owner, ''), key)`` pairs, matched pairwise."""
    cur = conn.cursor(row_factory=task_row)
    await cur.execute(
        QUERIES["task_get_by_idempotency_keys"], {"owners": list(owners), "keys": list(keys)}
    )
    return await cur.fetchall()


async def release_idempotency_key(conn: Conn, owner: str | None, key: str, ttl_s: float) -> bool:
    """Free the owner's ``key`` if its holder is older than ``ttl_s``; True when freed."""
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute(
        QUERIES["task_release_idempotency_key"], {"user_id": owner, "key": key, "ttl_s": ttl_s}
    )
    return await cur.fetchone() is not None


async def owners(conn: Conn, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str | None]:
    """``{task id: owner}`` of those of ``ids`` that exist (parents and dependencies)."""
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute(QUERIES["task_parent_owners"], {"ids": list(ids)})
    return {row[0]: row[1] for row in await cur.fetchall()}


async def get(conn: Conn, task_id: TaskId) -> Task | None:
    cur = conn.cursor(row_factory=task_row)
    await cur.execute(QUERIES["task_get"], {"id": task_id})
    return await cur.fetchone()


async def get_many(conn: Conn, ids: Sequence[uuid.UUID]) -> list[Task]:
    """The tasks of ``ids`` that exist, in no particular order."""
    cur = conn.cursor(row_factory=task_row)
    await cur.execute(QUERIES["task_get_many"], {"ids": list(ids)})
    return await cur.fetchall()


async def list_newest(
    conn: Conn,
    *,
    before_seq: int | None,
    status: Status | None,
    queue: str | None,
    kind: str | None,
    tag: str | None,
    user_id: str | None,
    parent_id: TaskId | None,
    limit: int,
) -> list[Task]:
    """Up to ``limit`` tasks older than ``before_seq``, newest first; None filters match any."""
    cur = conn.cursor(row_factory=task_row)
    await cur.execute(
        QUERIES["task_list"],
        {
            "before_seq": before_seq,
            "status": status,
            "queue": queue,
            "kind": kind,
            "tag": tag,
            "user_id": user_id,
            "parent_id": parent_id,
            "limit": limit,
        },
    )
    return await cur.fetchall()


async def events(conn: Conn, task_id: TaskId) -> list[Event]:
    """The task's audit trail, oldest first."""
    cur = conn.cursor(row_factory=event_row)
    await cur.execute(QUERIES["task_events"], {"id": task_id})
    return await cur.fetchall()


async def cancel(conn: Conn, task_id: TaskId) -> Task:
    """``pgqueue.cancel``: ``NotFound``, or ``Conflict`` when the task is finished."""
    return await _control(conn, "task_cancel", task_id)


async def retry(conn: Conn, task_id: TaskId) -> Task:
    """``pgqueue.retry``: ``NotFound``, or ``Conflict`` unless failed or cancelled."""
    return await _control(conn, "task_retry", task_id)


async def _control(conn: Conn, query: str, task_id: TaskId) -> Task:
    cur = conn.cursor(row_factory=task_row)
    with translated(not_found=f"task {task_id} does not exist"):
        await cur.execute(QUERIES[query], {"id": task_id})
    task = await cur.fetchone()
    assert task is not None  # the function returns the row or raises
    return task


async def signal(conn: Conn, task_id: TaskId, name: str, payload: str) -> Signalled:
    """``pgqueue.send_signal`` (SPEC §11): ``NotFound``, or ``Conflict`` when finished."""
    cur = conn.cursor(row_factory=tuple_row)
    with translated(not_found=f"task {task_id} does not exist"):
        await cur.execute(QUERIES["task_signal"], {"id": task_id, "name": name, "payload": payload})
    row = await cur.fetchone()
    assert row is not None
    *values, stored, same = row
    values[_TASK_STATUS_AT] = Status(values[_TASK_STATUS_AT])
    return Signalled(Task(*values), bool(stored), bool(same))
