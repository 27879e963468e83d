"""Who a new task belongs to when it hangs under others: a ``parent_id`` (SPEC §1) or
``depends_on`` (§10) must name tasks the producer may read, and a child gets its parent's
owner."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import msgspec

from pgqueue.db import tasks as db
from pgqueue.db.rows import Conn
from pgqueue.errors import NotFound
from pgqueue.tasks import NewTask


async def with_parent_owners(
    conn: Conn,
    batch: list[NewTask],
    default_owner: str | None,
    batch_ids: Iterable[uuid.UUID | None] = (),
) -> list[NewTask]:
    """The tasks with their parents' owners, checked.

    A parent must exist, and a task that has an owner (its own ``user_id``, else
    ``default_owner``) may only hang under a task of that owner: otherwise ``NotFound``,
    worded the same whether the parent is missing or someone else's, so the answer tells
    a user nothing about other users' tasks. A task without an owner takes its parent's.
    Costs one query, only for batches that name a parent.
    """
    in_batch = {i for i in batch_ids if i is not None}  # refs: checked as their items
    wanted = sorted(
        {t.parent_id for t in batch if t.parent_id is not None}
        | ({d for t in batch for d in t.depends_on} - in_batch)
    )
    owners = await db.owners(conn, wanted)
    out: list[NewTask] = []
    for i, task in enumerate(batch):
        # depends_on (SPEC §10): tasks the caller may read, worded as for a parent
        owner = task.user_id if task.user_id is not None else default_owner
        for dep in task.depends_on:
            if dep in in_batch:
                continue
            if dep not in owners or (owner is not None and owner != owners[dep]):
                field = "depends_on" if len(batch) == 1 else f"tasks[{i}].depends_on"
                raise NotFound(f"{field}: task {dep} does not exist (or is not this owner's)")
        parent = task.parent_id
        if parent is not None:
            owner = task.user_id if task.user_id is not None else default_owner
            if parent not in owners or (owner is not None and owner != owners[parent]):
                field = "parent_id" if len(batch) == 1 else f"tasks[{i}].parent_id"
                raise NotFound(f"{field}: task {parent} does not exist (or is not this owner's)")
            if owner is None and owners[parent] is not None:
                task = msgspec.structs.replace(task, user_id=owners[parent])
        out.append(task)
    return out
