"""Enqueue many tasks in one statement and one transaction (SPEC §4 batches), a graph of
them included (§10: ``ref`` and ``depends_on_refs`` name items of the same batch)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from pgqueue import otel
from pgqueue.db import tasks as db
from pgqueue.db.errors import MissingDependency
from pgqueue.db.rows import Conn
from pgqueue.enqueue.connect import Connect
from pgqueue.enqueue.created import created_task
from pgqueue.enqueue.owners import with_parent_owners
from pgqueue.enqueue.validate import check_same_task, decode, encode_payload
from pgqueue.errors import Conflict, InvalidInput, NotFound
from pgqueue.gc_pause import gc_paused
from pgqueue.settings import Settings
from pgqueue.tasks import MAX_DEPENDENCIES, NewTask, Status, Task
from pgqueue.webhooks import allowed_hosts, check_target


async def enqueue_many(
    batch: list[NewTask], settings: Settings, connect: Connect, user_id: str | None
) -> list[Task]:
    """Enqueue validated tasks; returns them in input order. ``user_id`` owns the tasks that
    name no owner. Tasks whose idempotency key their owner already used come back as the
    existing tasks. One producer span for the batch."""
    if not batch:
        return []
    with otel.sending(batch) as send:
        return await _enqueue_many(send.tasks, settings, connect, user_id)


async def _enqueue_many(
    batch: list[NewTask], settings: Settings, connect: Connect, user_id: str | None
) -> list[Task]:
    with gc_paused(len(batch)):
        payloads = [
            encode_payload(t.payload, settings.max_payload_bytes, f"tasks[{i}].payload")
            for i, t in enumerate(batch)
        ]
    allow = allowed_hosts(settings)
    for i, t in enumerate(batch):
        if t.callback_url is not None:
            await check_target(t.callback_url, allow, f"tasks[{i}].callback_url")
    ids: list[uuid.UUID | None] = [None] * len(batch)
    if any(t.ref is not None or t.depends_on_refs for t in batch):
        batch, ids = _resolve_refs(batch)
    async with connect() as c:
        if any(t.parent_id is not None or t.depends_on for t in batch):
            batch = await with_parent_owners(c, batch, user_id, ids)
        with gc_paused(len(batch)):
            rows = [_batch_row(t, p) for t, p in zip(batch, payloads, strict=True)]
            encoded = (
                msgspec.json.encode(rows)
                if not any(ids)
                else msgspec.json.encode(
                    [_with_id(row, i) for row, i in zip(rows, ids, strict=True)]
                )
            )
            rows_json = encoded.decode()
        if any(t.depends_on for t in batch) and not any(t.idempotency_key for t in batch):
            async with c.transaction():  # blocked rows are read back in the same snapshot
                return await _insert_many(c, batch, payloads, rows_json, user_id, settings)
        if any(t.idempotency_key is not None for t in batch):
            # replays are read after the INSERT: the same transaction must see both
            async with c.transaction():
                return await _insert_many(c, batch, payloads, rows_json, user_id, settings)
        # one statement is atomic by itself; BEGIN and COMMIT were two more round trips
        return await _insert_many(c, batch, payloads, rows_json, user_id, settings)


async def _insert_many(
    conn: Conn,
    batch: list[NewTask],
    payloads: list[str],
    rows_json: str,
    user_id: str | None,
    settings: Settings,
) -> list[Task]:
    try:
        deps = [d for t in batch for d in t.depends_on]
        inserted = await db.insert_many(conn, rows_json, user_id, deps)  # seq: input order
    except MissingDependency as exc:
        field = _dependency_field(batch, exc.task_id)
        raise NotFound(f"{field}: task {exc.task_id} does not exist") from None
    if len(inserted) == len(batch):
        with gc_paused(len(batch)):
            out = [
                created_task(t, decode(p), row)
                for t, p, row in zip(batch, payloads, inserted, strict=True)
            ]
    else:
        out = await _merge_replays(conn, batch, payloads, inserted, user_id, settings)
    # blocked (or cancelled: a dependency failed): what the database decided, read back
    decided = [row.id for row in inserted if row.status != Status.PENDING]
    if decided:
        fresh = {t.id: t for t in await db.get_many(conn, decided)}
        out = [fresh.get(t.id, t) for t in out]
    return out


def _dependency_field(batch: list[NewTask], missing: str) -> str:
    """The field naming a dependency that vanished before the insert (purged): 404."""
    if len(batch) == 1:
        return "depends_on"
    where = [i for i, t in enumerate(batch) if any(str(d) == missing for d in t.depends_on)]
    return f"tasks[{where[0] if where else 0}].depends_on"


async def _merge_replays(
    conn: Conn,
    batch: list[NewTask],
    payloads: list[str],
    inserted: list[db.Inserted],
    default_owner: str | None,
    settings: Settings,
) -> list[Task]:
    """Input order again when some keys were taken: the inserted rows, and the holders.

    Keys are matched per owner, ``(owner or "", key)`` as the unique index has them."""
    fresh = iter(row for row in inserted if row.idempotency_key is None)  # seq = input order
    by_key: dict[tuple[str, str | None], db.Inserted] = {
        (row.user_id or "", row.idempotency_key): row
        for row in inserted
        if row.idempotency_key is not None
    }

    def scope(task: NewTask) -> tuple[str, str | None]:
        owner = task.user_id if task.user_id is not None else default_owner
        return owner or "", task.idempotency_key

    missing = sorted({scope(t) for t in batch if t.idempotency_key} - set(by_key))
    found = await db.by_idempotency_keys(
        conn, [owner for owner, _ in missing], [key for _, key in missing]
    )
    holders: dict[tuple[str, str | None], Task] = {
        (t.user_id or "", t.idempotency_key): t for t in found
    }
    expired = [k for (_, k), t in holders.items() if _expired(t, settings)]
    if expired:
        raise Conflict(
            f"idempotency_key: keys {expired[:5]} belong to expired tasks; "
            "enqueue them one by one to reuse them"
        )
    out: list[Task] = []
    for new, payload in zip(batch, payloads, strict=True):
        key = new.idempotency_key
        if key is None:
            out.append(created_task(new, decode(payload), next(fresh)))
            continue
        holder = holders.get(scope(new))
        if holder is None:
            row = by_key.get(scope(new))
            if row is None:
                raise Conflict(f"idempotency_key: {key!r} vanished; try again")
            # the first task of the batch with this key was inserted; later ones replay it
            holder = holders[scope(new)] = created_task(new, decode(payload), row)
        check_same_task(holder, new)
        out.append(holder)
    return out


def _expired(task: Task, settings: Settings) -> bool:
    age = datetime.now(task.created_at.tzinfo) - task.created_at
    return age.total_seconds() > settings.idempotency_ttl_s


def _batch_row(task: NewTask, payload: str) -> NewTask:
    """One element of task_insert_many's JSON array: the task with its payload already
    encoded. NewTask encodes only the fields that differ from its defaults."""
    return msgspec.structs.replace(
        task, payload=msgspec.Raw(payload.encode()), ref=None, depends_on_refs=[]
    )


def _with_id(row: NewTask, task_id: uuid.UUID | None) -> Any:
    """A batch row with the id its refs were resolved to (graph batches only)."""
    if task_id is None:
        return row
    encoded = msgspec.json.encode(row)  # '{"kind":...}': kind is always there
    return msgspec.Raw(b'{"id":"' + str(task_id).encode() + b'",' + encoded[1:])


def _resolve_refs(batch: list[NewTask]) -> tuple[list[NewTask], list[uuid.UUID | None]]:
    """A graph in one batch (SPEC §10): each item with a ``ref`` gets its id now, and each
    ``depends_on_refs`` becomes ids in ``depends_on``. A ref must be unique and name an earlier
    item (so the graph has no cycle, and the database inserts a dependency first)."""
    ids: list[uuid.UUID | None] = []
    known: dict[str, uuid.UUID] = {}
    out: list[NewTask] = []
    for i, task in enumerate(batch):
        deps = list(task.depends_on)
        for ref in task.depends_on_refs:
            if ref not in known:
                raise InvalidInput(
                    f"tasks[{i}].depends_on_refs",
                    f"{ref!r} is not the ref of an earlier item of this batch",
                )
            if known[ref] not in deps:
                deps.append(known[ref])
        if len(deps) > MAX_DEPENDENCIES:
            raise InvalidInput(f"tasks[{i}].depends_on", f"at most {MAX_DEPENDENCIES} dependencies")
        task_id = None
        if task.ref is not None:
            if task.ref in known:
                raise InvalidInput(f"tasks[{i}].ref", f"{task.ref!r} is used twice in this batch")
            if task.idempotency_key is not None:
                raise InvalidInput(
                    f"tasks[{i}].idempotency_key",
                    "an item with a ref cannot have an idempotency key (a replay has another id)",
                )
            task_id = known[task.ref] = uuid.uuid4()
        ids.append(task_id)
        out.append(msgspec.structs.replace(task, depends_on=deps, ref=None, depends_on_refs=[]))
    return out, ids
