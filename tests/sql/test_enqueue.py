"""Enqueue (SPEC §1, §3, transactional enqueue): the producer's promises against PostgreSQL."""

from __future__ import annotations

import asyncio
import gc
import uuid
from datetime import timedelta
from typing import Any, LiteralString

import psycopg
import pytest

from pgqueue.db.pool import connect
from pgqueue.errors import Conflict, InvalidInput, PayloadTooLarge
from pgqueue.gc_pause import MIN_TASKS
from pgqueue.queue import Queue, new_task
from pgqueue.settings import Settings
from pgqueue.tasks import Status


async def test_enqueue_sets_fields_and_defaults(queue: Queue) -> None:
    task = await queue.enqueue(
        "email.send", {"to": "a@b.c"}, priority=5, tags=["signup"], max_retries=5, timeout_s=30
    )
    assert task.status is Status.PENDING
    assert (task.queue, task.kind, task.payload) == ("default", "email.send", {"to": "a@b.c"})
    assert (task.priority, task.max_retries, task.timeout_s, task.tags) == (5, 5, 30, ["signup"])
    assert task.attempts == 0
    assert task.usage == {"input_tokens": 0, "output_tokens": 0, "cost": 0}
    assert task.run_at == task.created_at  # due now, by the database clock
    assert task.created_at.utcoffset() == timedelta(0)


async def test_delay_uses_the_database_clock(queue: Queue) -> None:
    task = await queue.enqueue("later", delay_s=60)
    assert task.run_at - task.created_at == timedelta(seconds=60)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"queue": "bad queue!"}, "queue"),
        ({"queue": "q" * 65}, "queue"),
        ({"priority": 1001}, "priority"),
        ({"priority": -1001}, "priority"),
        ({"max_retries": -1}, "max_retries"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"tags": "not-a-list"}, "tags"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
async def test_bad_input_names_the_field_and_writes_nothing(
    queue: Queue, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        await queue.enqueue("k", {}, **fields)
    assert field in str(info.value)
    assert (await queue.list()).items == []


async def test_bad_kind_is_rejected(queue: Queue) -> None:
    with pytest.raises(InvalidInput, match="kind"):
        await queue.enqueue("no spaces allowed")


async def test_oversize_payload_is_rejected(dsn: str) -> None:
    settings = Settings.from_env({}, dsn=dsn, max_payload_bytes=100)
    async with Queue(settings=settings) as q:
        with pytest.raises(PayloadTooLarge, match="payload"):
            await q.enqueue("k", {"blob": "x" * 200})
        assert (await q.list()).items == []


async def test_idempotent_enqueue_returns_the_existing_task(queue: Queue) -> None:
    first = await queue.enqueue("email.send", {"to": "a"}, idempotency_key="welcome-42")
    again = await queue.submit(
        new_task({"kind": "email.send", "payload": {"to": "a"}, "idempotency_key": "welcome-42"})
    )
    assert again.replayed
    assert again.task.id == first.id


@pytest.mark.parametrize(
    "change", [{"payload": {"to": "b"}}, {"kind": "other"}, {"queue": "other"}]
)
async def test_same_key_different_task_conflicts(queue: Queue, change: dict[str, Any]) -> None:
    await queue.enqueue("email.send", {"to": "a"}, idempotency_key="k1")
    fields: dict[str, Any] = {"kind": "email.send", "payload": {"to": "a"}, **change}
    kind = fields.pop("kind")
    with pytest.raises(Conflict, match="idempotency_key"):
        await queue.enqueue(kind, idempotency_key="k1", **fields)


async def test_expired_key_creates_a_new_task(dsn: str, conn: psycopg.AsyncConnection[Any]) -> None:
    settings = Settings.from_env({}, dsn=dsn, idempotency_ttl_s=60)
    async with Queue(settings=settings) as q:
        old = await q.enqueue("k", idempotency_key="daily")
        await conn.execute(
            "UPDATE pgqueue.tasks SET created_at = now() - interval '2 minutes' WHERE id = %s",
            (old.id,),
        )
        new = await q.enqueue("k", idempotency_key="daily")
        assert new.id != old.id
        assert (await q.get(old.id)).idempotency_key is None


async def test_racing_producers_create_exactly_one_task(dsn: str, settings: Settings) -> None:
    """30 producers on 30 connections enqueue the same key at once: one task, 29 replays."""
    queues = [Queue(settings=settings) for _ in range(30)]
    for q in queues:
        await q.open()
    try:
        gate = asyncio.Event()

        async def produce(q: Queue) -> Any:
            await gate.wait()
            return await q.submit(
                new_task({"kind": "race", "payload": {"n": 1}, "idempotency_key": "the-one"})
            )

        racers = [asyncio.create_task(produce(q)) for q in queues]
        await asyncio.sleep(0.1)
        gate.set()
        results = await asyncio.gather(*racers)
    finally:
        for q in queues:
            await q.close()
    assert len({r.task.id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    conn = await connect(dsn)
    async with conn:
        cur = await conn.execute("SELECT count(*) FROM pgqueue.tasks")
        assert (await cur.fetchone()) == (1,)


async def test_transactional_enqueue_rolls_back_with_the_caller(queue: Queue, dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as mine:
        task = await queue.enqueue("k", {"n": 1}, conn=mine)
        await mine.rollback()
    assert (await queue.list()).items == []
    async with await psycopg.AsyncConnection.connect(dsn) as mine:
        task = await queue.enqueue("k", {"n": 2}, conn=mine)
        # not visible to others before the caller commits
        assert (await queue.list()).items == []
        await mine.commit()
    assert [t.id for t in (await queue.list()).items] == [task.id]


async def test_enqueue_many_keeps_input_order_and_replays_keys(queue: Queue) -> None:
    existing = await queue.enqueue("k", {"i": "old"}, idempotency_key="dup")
    tasks = await queue.enqueue_many(
        [{"kind": "k", "payload": {"i": i}} for i in range(3)]
        + [{"kind": "k", "payload": {"i": "old"}, "idempotency_key": "dup"}]
        + [{"kind": "k", "payload": {"i": 3}, "priority": 7}]
    )
    assert [t.payload["i"] for t in tasks] == [0, 1, 2, "old", 3]
    assert tasks[3].id == existing.id
    assert tasks[4].priority == 7


async def test_enqueued_tasks_are_what_the_database_holds(queue: Queue) -> None:
    # enqueue builds its answer from the input and the few columns the INSERT returns;
    # it must be the very row a later read gets.
    # (the parent is ann's: a child must have its parent's owner)
    parent = await queue.enqueue("k", {"nested": {"b": [1, 2.5, None], "a": "x"}}, user_id="ann")
    fields: dict[str, Any] = {
        "queue": "q.1",
        "priority": -3,
        "delay_s": 30,
        "max_retries": 0,
        "timeout_s": 1.5,
        "backoff_base_s": 2,
        "backoff_max_s": 9,
        "idempotency_key": "same-row",
        "user_id": "ann",
        "tags": ["a", "b"],
        "parent_id": parent.id,
    }
    one = await queue.enqueue("k", {"z": 1, "a": [True]}, **fields)
    many = await queue.enqueue_many(
        [{"kind": "k", "payload": i} for i in (None, 0, "s", [1])]
        + [
            {"kind": "k", **fields, "idempotency_key": "other"},
            {"kind": "k", "payload": {"a": [True], "z": 1}, **fields},
        ],
        user_id="bob",
    )
    for task in [parent, one, *many]:
        assert task == await queue.get(task.id)
    assert many[-1].id == one.id  # the replayed key
    assert [t.user_id for t in many] == ["bob"] * 4 + ["ann", "ann"]


async def test_a_large_batch_comes_back_whole_with_the_collector_back_on(queue: Queue) -> None:
    # big enough for pgqueue.gc_pause to hold the collector off while it builds the batch
    n = MIN_TASKS + 1
    tasks = await queue.enqueue_many([{"kind": "k", "payload": {"i": i}} for i in range(n)])
    assert gc.isenabled()
    assert [t.payload for t in tasks] == [{"i": i} for i in range(n)]
    assert [t.seq for t in tasks] == sorted(t.seq for t in tasks)
    assert tasks[-1] == await queue.get(tasks[-1].id)


async def test_enqueue_many_is_all_or_nothing(queue: Queue) -> None:
    with pytest.raises(InvalidInput):
        await queue.enqueue_many([{"kind": "ok"}, {"kind": "ok", "priority": 5000}])
    assert (await queue.list()).items == []


@pytest.mark.parametrize("many", [False, True])
async def test_a_value_the_database_refuses_is_invalid_input_not_a_driver_error(
    queue: Queue, many: bool
) -> None:
    """Valid JSON that jsonb refuses: ``Queue`` callers get ``InvalidInput`` (what HTTP
    reports as a 400), never a raw psycopg error (db/errors.py translates it)."""

    async def refused() -> object:
        if many:
            return await queue.enqueue_many([{"kind": "ok", "payload": "a\u0000b"}])
        return await queue.enqueue("ok", "a\u0000b")

    with pytest.raises(InvalidInput) as caught:
        await refused()
    assert not isinstance(caught.value, psycopg.Error)
    assert isinstance(caught.value.__cause__, psycopg.errors.DataError)
    assert (await queue.list()).items == []


async def test_plain_sql_insert_and_enqueue_function(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    await conn.execute(
        "INSERT INTO pgqueue.tasks (kind, payload) VALUES ('from.psql', '{\"a\": 1}')"
    )
    cur = await conn.execute(
        "SELECT id, status FROM pgqueue.enqueue('from.fn', '{}', priority => 3, idempotency_key => 'x')"
    )
    row = await cur.fetchone()
    assert row is not None and row[1] == "pending"
    cur = await conn.execute(
        "SELECT id FROM pgqueue.enqueue('from.fn', '{}', priority => 3, idempotency_key => 'x')"
    )
    assert await cur.fetchone() == (row[0],)
    with pytest.raises(psycopg.errors.UniqueViolation, match="idempotency key"):
        await conn.execute("SELECT pgqueue.enqueue('other.kind', '{}', idempotency_key => 'x')")
    kinds = sorted(t.kind for t in (await queue.list()).items)
    assert kinds == ["from.fn", "from.psql"]


async def test_enqueue_function_scopes_keys_and_parents_by_owner(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    """pgqueue.enqueue() from psql follows SPEC §3 and §1 parent_id like Python and HTTP."""

    async def enqueue(args: LiteralString, *params: Any) -> tuple[Any, ...]:
        cur = await conn.execute(
            "SELECT id, user_id FROM pgqueue.enqueue('k', " + args + ")", params or None
        )
        row = await cur.fetchone()
        assert row is not None
        return tuple(row)

    alice = await enqueue("user_id => 'alice', idempotency_key => 'x'")
    bob = await enqueue("user_id => 'bob', idempotency_key => 'x'")
    nobody = await enqueue("idempotency_key => 'x'")
    assert len({alice[0], bob[0], nobody[0]}) == 3
    assert await enqueue("user_id => 'bob', idempotency_key => 'x'") == bob
    # a conflict names the caller's own task only
    with pytest.raises(psycopg.errors.UniqueViolation) as caught:
        await conn.execute(
            "SELECT pgqueue.enqueue('k', '{\"n\": 1}', user_id => 'bob', idempotency_key => 'x')"
        )
    assert str(bob[0]) in str(caught.value) and str(alice[0]) not in str(caught.value)
    child = await enqueue("parent_id => %s", alice[0])
    assert child[1] == "alice"
    refused: list[tuple[LiteralString, uuid.UUID]] = [
        (", user_id => 'bob'", alice[0]),  # someone else's parent
        ("", uuid.uuid4()),  # no such task
    ]
    for extra, parent in refused:
        with pytest.raises(psycopg.errors.NoDataFound, match="parent task"):
            await enqueue("parent_id => %s" + extra, parent)


async def test_a_parent_made_in_the_callers_transaction_is_found(queue: Queue, dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as mine:
        parent = await queue.enqueue("k", user_id="ann", conn=mine)
        child = await queue.enqueue("k", parent_id=parent.id, conn=mine)
        await mine.commit()
    assert (await queue.get(child.id)).user_id == "ann"


async def test_database_rejects_invalid_rows_from_psql(conn: psycopg.AsyncConnection[Any]) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="tasks_priority_range"):
        await conn.execute("INSERT INTO pgqueue.tasks (kind, priority) VALUES ('k', 5000)")
    with pytest.raises(psycopg.errors.CheckViolation, match="tasks_completed_at_iff_terminal"):
        await conn.execute("INSERT INTO pgqueue.tasks (kind, status) VALUES ('k', 'completed')")


@pytest.mark.parametrize(
    ("column", "longest"), [("kind", 128), ("queue", 64)], ids=["kind", "queue"]
)
async def test_database_checks_names_like_the_api(
    conn: psycopg.AsyncConnection[Any], column: str, longest: int
) -> None:
    insert = "INSERT INTO pgqueue.tasks (kind, queue) VALUES (%(kind)s, %(queue)s)"
    ok = "aZ09_.:-" * (longest // 8)
    await conn.execute(insert, {"kind": "k", "queue": "q", column: ok})
    for bad in ["", ok + "x", "has space", "new\nline", "ünï"]:
        with pytest.raises(psycopg.errors.CheckViolation, match=f"tasks_{column}_valid"):
            await conn.execute(insert, {"kind": "k", "queue": "q", column: bad})
