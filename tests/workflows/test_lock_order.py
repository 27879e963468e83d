"""Producers inserting dependents of tasks that workers complete in batches, all at once:
no deadlock between an enqueue (which locks its dependencies FOR SHARE, waiting for no one)
(which locks the tasks it ends, then the dependents it unblocks), and no dependent left
blocked once everything it depends on has completed."""

from __future__ import annotations

import asyncio
import random

import psycopg

from pgqueue.db import transitions
from pgqueue.db.transitions import finish
from pgqueue.outcomes import Completed
from pgqueue.queue import Queue
from pgqueue.tasks import Status, TaskId
from tests.helpers import wait_for

ROOTS = 400
PRODUCERS = 6
WORKERS = 4
BATCH = 25


async def test_producers_and_batch_finishes_do_not_deadlock(queue: Queue) -> None:
    rng = random.Random(13)
    roots = await queue.enqueue_many([{"kind": "k", "queue": "roots"} for _ in range(ROOTS)])
    ids = [t.id for t in roots]
    dependents: list[TaskId] = []
    deadlocks: list[BaseException] = []
    finished = asyncio.Event()

    async def produce(n: int) -> None:
        """Batches and single enqueues of dependents on random roots, in random order, and
        on dependents made earlier (so a finish also walks rows a producer locks)."""
        while not finished.is_set():
            try:
                if n % 2:
                    batch = [
                        {"kind": "k", "queue": "leaves",
                         "depends_on": rng.sample(ids, 3) + rng.sample(dependents, 1)
                         if dependents else rng.sample(ids, 3)}
                        for _ in range(10)
                    ]  # fmt: skip
                    made = await queue.enqueue_many(batch)
                else:
                    made = [await queue.enqueue("k", {}, queue="leaves",
                                                depends_on=rng.sample(ids, 4))]  # fmt: skip
            except psycopg.errors.DeadlockDetected as exc:
                deadlocks.append(exc)
                continue
            dependents.extend(t.id for t in made if t.status == Status.BLOCKED)
            await asyncio.sleep(0)

    async def work(n: int) -> None:
        """Claim roots in batches and complete each batch in one statement, shuffled."""
        worker = f"w{n}"
        while True:
            claimed = await transitions.claim(queue.pool, worker, ["roots"], None, BATCH)
            if not claimed:
                return
            rng.shuffle(claimed)
            rows = [finish(t.id, t.attempts, worker, Completed(None)) for t in claimed]
            while True:
                try:
                    await transitions.finish_many(queue.pool, rows)
                    break
                except psycopg.errors.DeadlockDetected as exc:
                    deadlocks.append(exc)

    producers = [asyncio.create_task(produce(n)) for n in range(PRODUCERS)]

    async def producing() -> bool:
        return len(dependents) >= 20

    await wait_for(producing, what="producers to be inserting")
    await asyncio.wait_for(asyncio.gather(*(work(n) for n in range(WORKERS))), timeout=120)
    finished.set()
    await asyncio.wait_for(asyncio.gather(*producers), timeout=60)

    assert deadlocks == [], f"{len(deadlocks)} deadlocks; the first: {deadlocks[0]}"
    assert len(dependents) > 50  # the race really ran
    async with queue.pool.connection() as conn:
        # what an enqueue read while a finish held it is looked at again by the next
        # finish, or else by the reaper (every worker and server runs it every reap_s)
        await conn.execute("SELECT count(*) FROM pgqueue.reap()")
        cur = await conn.execute("SELECT count(*) FROM pgqueue.dependency_checks")
        assert await cur.fetchone() == (0,)
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE status <> 'completed') FROM pgqueue.tasks"
            " WHERE queue = 'roots'"
        )
        assert await cur.fetchone() == (0,)
        # every leaf depends on roots (all completed) and on earlier leaves (never run):
        # blocked exactly when it has a leaf dependency, pending otherwise
        cur = await conn.execute(
            "SELECT count(*) FROM pgqueue.tasks t WHERE t.queue = 'leaves' AND t.status"
            " <> CASE WHEN EXISTS (SELECT 1 FROM pgqueue.tasks d WHERE d.id = ANY(t.depends_on)"
            "  AND d.queue = 'leaves') THEN 'blocked' ELSE 'pending' END::pgqueue.task_status"
        )
        assert await cur.fetchone() == (0,)
        cur = await conn.execute(
            "SELECT count(*) FROM pgqueue.tasks t WHERE t.queue = 'leaves'"
            " AND t.deps_left <> (SELECT count(*) FROM pgqueue.tasks d"
            "  WHERE d.id = ANY(t.depends_on) AND d.status <> 'completed')"
        )
        assert await cur.fetchone() == (0,)


async def test_an_enqueue_does_not_wait_for_a_finish_holding_its_dependency(
    queue: Queue, dsn: str
) -> None:
    """The dependency is being completed by a transaction still open: the enqueue returns at
    once (blocked, reading what was committed), and once that completion commits, the next
    statement that ends any task, or the reaper, unblocks the dependent."""
    dep, other, later = await queue.enqueue_many([{"kind": "k", "queue": "q"}] * 3)
    async with await psycopg.AsyncConnection.connect(dsn) as holder:
        await holder.execute(
            "UPDATE pgqueue.tasks SET status = 'completed', completed_at = now() WHERE id = %s",
            (dep.id,),
        )  # the transaction stays open, holding the row
        child = await asyncio.wait_for(queue.enqueue("k", {}, depends_on=[dep.id]), timeout=5)
        assert child.status == Status.BLOCKED
        await holder.commit()
    assert (await queue.get(child.id)).status == Status.BLOCKED  # its finish missed the edge
    async with queue.pool.connection() as conn:
        await conn.execute(
            "UPDATE pgqueue.tasks SET status = 'cancelled', completed_at = now() WHERE id = %s",
            (other.id,),
        )
    after = await queue.get(child.id)
    assert (after.status, after.deps_left) == (Status.PENDING, 0)

    # the same through the reaper, when no other task ends
    async with await psycopg.AsyncConnection.connect(dsn) as holder:
        await holder.execute(
            "UPDATE pgqueue.tasks SET status = 'completed', completed_at = now() WHERE id = %s",
            (later.id,),
        )
        second = await asyncio.wait_for(queue.enqueue("k", {}, depends_on=[later.id]), 5)
        await holder.commit()
    assert (await queue.get(second.id)).status == Status.BLOCKED
    async with queue.pool.connection() as conn:
        await conn.execute("SELECT count(*) FROM pgqueue.reap()")
        cur = await conn.execute("SELECT count(*) FROM pgqueue.dependency_checks")
        assert await cur.fetchone() == (0,)
    assert (await queue.get(second.id)).status == Status.PENDING
