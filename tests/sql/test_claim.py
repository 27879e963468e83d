"""Claim (SPEC §2, §7): claim order, what is due, SKIP LOCKED, paused queues and limits."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from pgqueue.db.migrate import migrate
from pgqueue.db.pool import connect
from pgqueue.queue import Queue
from pgqueue.tasks import Status
from tests.sql.claiming import claim


async def test_claim_order_priority_then_run_at_then_insertion(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    low = await queue.enqueue("k", {"n": "low"}, priority=-5)
    first = await queue.enqueue("k", {"n": "first"})
    second = await queue.enqueue("k", {"n": "second"})
    high = await queue.enqueue("k", {"n": "high"}, priority=10)
    older = await queue.enqueue("k", {"n": "older"})
    await conn.execute(
        "UPDATE pgqueue.tasks SET run_at = run_at - interval '1 minute' WHERE id = %s", (older.id,)
    )
    claimed = await claim(conn)
    assert [t.id for t in claimed] == [high.id, older.id, first.id, second.id, low.id]
    assert all(t.status is Status.RUNNING and t.attempts == 1 for t in claimed)
    assert all(t.lease == "1:w1" for t in claimed)


async def test_claim_commits_asynchronously_without_leaking_the_setting(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    # task_claim turns synchronous_commit off for its own transaction only: a connection
    # that claims and then enqueues must enqueue durably.
    await conn.execute("SET synchronous_commit = remote_apply")  # whatever the server's is
    await queue.enqueue("k")
    assert len(await claim(conn)) == 1
    cur = await conn.execute("SHOW synchronous_commit")
    assert await cur.fetchone() == ("remote_apply",)


async def test_claim_never_compiles_jit_and_plans_once(conn: psycopg.AsyncConnection[Any]) -> None:
    """The generic plan's estimate of the due-row scan grows with the backlog (it cannot know
    p_limit); past jit_above_cost every claim compiled JIT code again (claim.sql). Both
    settings survive migrate's CREATE OR REPLACE."""
    await migrate(conn)
    cur = await conn.execute("SELECT proconfig FROM pg_proc WHERE oid = 'pgqueue.claim'::regproc")
    assert await cur.fetchone() == (["plan_cache_mode=force_generic_plan", "jit=off"],)


async def test_batch_claim_order_ties_follow_insertion(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    batch = await queue.enqueue_many([{"kind": "k", "payload": {"i": i}} for i in range(50)])
    claimed = await claim(conn, limit=50)
    assert [t.id for t in claimed] == [t.id for t in batch]


async def test_delayed_and_other_tasks_are_not_claimed(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    await queue.enqueue("k", delay_s=3600)
    await queue.enqueue("k", queue="elsewhere")
    await queue.enqueue("unknown.kind")
    assert await claim(conn) == []
    due = await queue.enqueue("k")
    assert [t.id for t in await claim(conn)] == [due.id]


async def test_claims_never_wait_for_each_other(dsn: str, queue: Queue) -> None:
    """Two claimers in open transactions get disjoint tasks at once (SKIP LOCKED)."""
    await queue.enqueue_many([{"kind": "k"} for _ in range(10)])
    a, b = await connect(dsn, autocommit=False), await connect(dsn, autocommit=False)
    async with a, b:
        first = await claim(a, limit=6, worker="a")  # transaction stays open: rows locked
        second = await asyncio.wait_for(claim(b, limit=6, worker="b"), timeout=5)
        assert len(first) == 6 and len(second) == 4
        assert not {t.id for t in first} & {t.id for t in second}


async def test_paused_queue_and_concurrency_limit(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    await queue.enqueue_many([{"kind": "k", "queue": "llm"} for _ in range(10)])
    await conn.execute("INSERT INTO pgqueue.queues (name, paused) VALUES ('llm', true)")
    assert await claim(conn, queues=["llm"]) == []
    await conn.execute("UPDATE pgqueue.queues SET paused = false, concurrency_limit = 3")
    assert len(await claim(conn, queues=["llm"], worker="a")) == 3
    assert await claim(conn, queues=["llm"], worker="b") == []
