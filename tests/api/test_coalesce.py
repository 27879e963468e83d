"""Concurrent single enqueues share a statement (pgqueue/api/coalesce.py), and each request
still gets its own task, its own owner and its own error — over real HTTP and on a real Queue."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg
import pytest

from pgqueue.api.coalesce import EnqueueCoalescer
from pgqueue.errors import PayloadTooLarge
from pgqueue.queue import Queue
from pgqueue.tasks import Task
from tests.api.conftest import Api


async def test_tasks_submitted_together_share_one_statement(queue: Queue) -> None:
    coalescer = EnqueueCoalescer(queue)
    new = [queue.new_task({"kind": "k", "payload": {"i": i}}) for i in range(20)]
    created = await asyncio.gather(*(coalescer.submit(t) for t in new))
    assert coalescer.statements == 1  # all 20 arrived in one loop turn
    assert [t.payload for t in created] == [{"i": i} for i in range(20)]
    assert len({t.id for t in created}) == 20
    for task in created:  # what the database holds is what each caller got
        assert (await queue.get(task.id)) == task


async def test_one_refused_task_gets_its_own_error_and_the_rest_are_enqueued(
    queue: Queue,
) -> None:
    coalescer = EnqueueCoalescer(queue)
    big = "x" * (queue.settings.max_payload_bytes + 10)
    new = [queue.new_task({"kind": "k", "payload": {"i": i}}) for i in range(10)]
    new[3] = queue.new_task({"kind": "k", "payload": big})
    outcomes = await asyncio.gather(*(coalescer.submit(t) for t in new), return_exceptions=True)
    assert coalescer.statements == 1 + 10  # the batch was refused, then one at a time
    error = outcomes[3]
    assert isinstance(error, PayloadTooLarge)
    assert str(error).startswith("payload")  # named as for a single task, not tasks[3]
    created = [o for i, o in enumerate(outcomes) if i != 3]
    assert all(isinstance(o, Task) for o in created)
    page = await queue.list(limit=100)
    assert len(page.items) == 9


async def test_tasks_with_an_idempotency_key_never_join_a_batch(queue: Queue) -> None:
    with pytest.raises(ValueError, match="idempotency key"):
        await EnqueueCoalescer(queue).submit(
            queue.new_task({"kind": "k", "idempotency_key": "once"})
        )


async def test_concurrent_posts_are_committed_together(api: Api, dsn: str) -> None:
    """While inserts are held up (the table locked), requests pile up and go in together."""
    with psycopg.connect(dsn) as locker:
        locker.execute("LOCK TABLE pgqueue.tasks IN SHARE MODE")  # blocks INSERT until commit
        async with api.http(api.tokens.alice) as alice:
            posts = [
                asyncio.create_task(alice.post("/tasks", json={"kind": "k", "payload": {"i": i}}))
                for i in range(40)
            ]
            await asyncio.sleep(1.0)  # all 40 reach the server, at most 4 statements wait
            locker.commit()
            replies = await asyncio.gather(*posts)
    assert [r.status_code for r in replies] == [201] * 40
    assert [r.json()["payload"] for r in replies] == [{"i": i} for i in range(40)]
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT created_at) FROM pgqueue.tasks")
        count, transactions = row.fetchone() or (0, 0)
    # created_at is the transaction's start: 40 tasks in a handful of transactions
    assert count == 40 and transactions <= 10, transactions


async def test_concurrent_posts_keep_owner_payload_and_errors(api: Api) -> None:
    """60 requests at once from two users, an oversize and a NUL payload among them."""
    big = "x" * (api.settings.max_payload_bytes + 10)
    async with api.http(api.tokens.alice) as alice, api.http(api.tokens.bob) as bob:

        async def post(i: int) -> httpx.Response:
            body: dict[str, Any] = {"kind": "k", "payload": {"i": i}, "user_id": "mallory"}
            if i == 7:
                body["payload"] = big
            if i == 8:
                body["payload"] = "nul \u0000 byte"  # JSON can carry it, jsonb cannot
            return await (alice if i % 2 == 0 else bob).post("/tasks", json=body)

        replies = await asyncio.gather(*(post(i) for i in range(60)))
        assert replies[7].status_code == 413, replies[7].text
        assert replies[7].json()["detail"].startswith("payload")
        assert replies[8].status_code == 400, replies[8].text
        for i, reply in enumerate(replies):
            if i in (7, 8):
                continue
            assert reply.status_code == 201, (i, reply.text)
            task = reply.json()
            assert task["payload"] == {"i": i}
            assert task["user_id"] == ("alice" if i % 2 == 0 else "bob")
            assert "Idempotent-Replayed" not in reply.headers
        # each user sees exactly their own
        mine = (await alice.get("/tasks", params={"limit": 500})).json()["items"]
        assert sorted(t["payload"]["i"] for t in mine) == [i for i in range(0, 60, 2) if i != 8]
        theirs = (await bob.get("/tasks", params={"limit": 500})).json()["items"]
        assert sorted(t["payload"]["i"] for t in theirs) == [i for i in range(1, 60, 2) if i != 7]
