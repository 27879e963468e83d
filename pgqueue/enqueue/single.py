"""Enqueue one task: one INSERT, and on a taken idempotency key the holder as the answer
(SPEC §3: a key replays only a task of the same owner)."""

from __future__ import annotations

from pgqueue import otel
from pgqueue.db import tasks as db
from pgqueue.db.errors import MissingDependency
from pgqueue.db.rows import Conn
from pgqueue.enqueue.connect import Connect
from pgqueue.enqueue.created import created_task
from pgqueue.enqueue.owners import with_parent_owners
from pgqueue.enqueue.validate import Enqueued, check_same_task, decode, encode_payload
from pgqueue.errors import Conflict, InvalidInput, NotFound
from pgqueue.settings import Settings
from pgqueue.tasks import NewTask, Status, Task
from pgqueue.webhooks import allowed_hosts, check_target


async def submit(task: NewTask, settings: Settings, connect: Connect) -> Enqueued:
    """Enqueue a validated task and say whether it was an idempotent replay.

    A ``parent_id`` must exist and the child gets its owner (``NotFound`` otherwise, see
    ``owners.with_parent_owners``). A producer span wraps it; the task carries its
    traceparent.
    """
    with otel.sending([task]) as send:
        enqueued = await _submit(send.tasks[0], settings, connect)
        send.created([enqueued.task])
    return enqueued


async def _submit(task: NewTask, settings: Settings, connect: Connect) -> Enqueued:
    payload = encode_payload(task.payload, settings.max_payload_bytes)
    if task.ref is not None or task.depends_on_refs:
        raise InvalidInput("depends_on_refs", "ref and depends_on_refs are for batches only")
    if task.callback_url is not None:
        await check_target(task.callback_url, allowed_hosts(settings))
    async with connect() as c:
        if task.parent_id is not None or task.depends_on:
            task = (await with_parent_owners(c, [task], None))[0]
        for _ in range(10):  # a key released or deleted under our feet: try again
            try:
                inserted = await db.insert(c, task, payload)
            except MissingDependency as exc:
                raise NotFound(f"depends_on: task {exc.task_id} does not exist") from None
            if inserted is not None:
                if inserted.status != Status.PENDING:  # blocked, or a dependency failed
                    return Enqueued((await db.get_many(c, [inserted.id]))[0], replayed=False)
                return Enqueued(created_task(task, decode(payload), inserted), replayed=False)
            assert task.idempotency_key is not None  # only a key can conflict
            holder = await _key_holder(c, task.user_id, task.idempotency_key, settings)
            if holder is None:
                continue
            check_same_task(holder, task)
            return Enqueued(holder, replayed=True)
    raise Conflict(f"idempotency_key: {task.idempotency_key!r} is contended; try again")


async def _key_holder(conn: Conn, owner: str | None, key: str, settings: Settings) -> Task | None:
    """The owner's task holding ``key``; None when it expired and let go of the key."""
    if await db.release_idempotency_key(conn, owner, key, settings.idempotency_ttl_s):
        return None  # the old holder expired and let go of the key: insert again
    holders = await db.by_idempotency_keys(conn, [owner or ""], [key])
    return holders[0] if holders else None
