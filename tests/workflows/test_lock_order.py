"""Producers, batch finishes, cancels, retries by hand and heartbeats racing over random
dependency graphs (SPEC §10, issue 13): no deadlock anywhere, and no dependent left blocked
once its dependencies completed.

Every path that locks several task rows takes them in one order (docs/architecture.md, "Lock
order"); a path that does not shows up here as ``deadlock_detected``, raised to a producer or
a finisher, or counted by the server (``pg_stat_database.deadlocks`` covers every statement of
the test's database, heartbeats and triggers included). The graphs are random: dependencies
on running, pending, blocked, waiting-to-be-claimed and finished tasks, fan-in, dependents of
dependents, and graphs inside one batch (``depends_on_refs``).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Awaitable
from typing import Any, TypeVar

import psycopg
import psycopg.errors

from pgqueue.db import heartbeats, transitions
from pgqueue.db.transitions import finish
from pgqueue.errors import Conflict
from pgqueue.outcomes import Completed, Failed, Outcome
from pgqueue.queue import Queue
from pgqueue.settings import Settings
from pgqueue.tasks import Task, TaskId
from tests.helpers import wait_for

T = TypeVar("T")
QUEUE = "race"
FAIL = Failed(error={"type": "E", "message": "no", "retryable": False}, retryable=False)


class Race:
    """The shared state of one race: every task made, and every deadlock anyone saw."""

    def __init__(self, queue: Queue, seed: int) -> None:
        self.queue = queue
        self.rng = random.Random(seed)
        self.ids: list[uuid.UUID] = []
        self.deadlocks: list[str] = []
        self.producing = True  # producers, cancels and retries run while this holds
        self.draining = True  # finishers run while this holds
        self.fail_share = 0.0  # the share of finished tasks that fail (for good)
        self.finished = 0

    async def guarded(self, what: str, call: Awaitable[T]) -> T | None:
        """``await call``; a deadlock is recorded (and the call given up), nothing else hidden.
        A ``Conflict`` (cancel a finished task, retry one retried meanwhile) is None too."""
        try:
            return await call
        except Conflict:
            return None
        except psycopg.errors.DeadlockDetected as exc:
            self.deadlocks.append(f"{what}: {exc}")
            return None

    def summary(self) -> str:
        """How many deadlocks each path saw, and the first one's message."""
        paths = Counter(d.split(":", 1)[0] for d in self.deadlocks)
        return f"{len(self.deadlocks)} deadlocks {dict(paths)}; the first: {self.deadlocks[0]}"

    def recent(self, k: int) -> list[uuid.UUID]:
        """``k`` distinct tasks among the newest (mostly unfinished: the race is hot there)
        and, now and then, any older one."""
        window = self.ids[-150:]
        picked = set(self.rng.sample(window, min(k, len(window))))
        if self.ids and self.rng.random() < 0.3:
            picked.add(self.rng.choice(self.ids))
        return sorted(picked, key=lambda _: self.rng.random())

    async def produce(self, n: int) -> None:
        """Odd producers enqueue batches (with graphs inside), even ones single tasks."""
        while self.producing:
            if n % 2:
                batch: list[dict[str, Any]] = []
                for i in range(self.rng.randint(2, 12)):
                    item: dict[str, Any] = {
                        "kind": "k", "queue": QUEUE, "ref": f"r{i}",
                        "depends_on": self.recent(self.rng.randint(0, 4)),
                    }  # fmt: skip
                    if i and self.rng.random() < 0.5:
                        item["depends_on_refs"] = [f"r{self.rng.randrange(i)}"]
                    batch.append(item)
                made = await self.guarded("enqueue_many", self.queue.enqueue_many(batch))
            else:
                deps = self.recent(self.rng.randint(1, 5))
                one = await self.guarded(
                    "enqueue", self.queue.enqueue("k", {}, queue=QUEUE, depends_on=deps)
                )
                made = [one] if one is not None else None
            if made:
                self.ids.extend(t.id for t in made)
            await asyncio.sleep(0)

    async def work(self, n: int) -> None:
        """Claim up to 25 tasks, heartbeat them while a concurrent heartbeat loop does too,
        and finish them in one statement, in a random order."""
        worker = f"w{n}"
        held: dict[TaskId, Task] = {}
        beating = asyncio.create_task(self.beat(worker, held))
        try:
            while self.draining:
                claimed = await transitions.claim(self.queue.pool, worker, [QUEUE], None, 25)
                if not claimed:
                    await asyncio.sleep(0.01)
                    continue
                held.update((t.id, t) for t in claimed)
                await asyncio.sleep(0)
                self.rng.shuffle(claimed)
                outcomes: list[Outcome] = [
                    FAIL if self.rng.random() < self.fail_share else Completed(None)
                    for _ in claimed
                ]
                rows = [
                    finish(t.id, t.attempts, worker, o)
                    for t, o in zip(claimed, outcomes, strict=True)
                ]
                while await self.guarded(
                    "finish_many", transitions.finish_many(self.queue.pool, rows)
                ) is None:  # fmt: skip
                    pass  # a deadlock (recorded): the same outcomes again
                for t in claimed:
                    held.pop(t.id, None)
                self.finished += len(claimed)
        finally:
            beating.cancel()

    async def beat(self, worker: str, held: dict[TaskId, Task]) -> None:
        """The worker's heartbeat, as often as it can: the rows it locks are those a finish
        of the same worker ends."""
        while True:
            running = list(held.values())
            if running:
                async with self.queue.pool.connection() as conn:
                    await self.guarded("heartbeat", heartbeats.beat_tasks(conn, worker, running))
            await asyncio.sleep(0.002)

    async def cancel_some(self) -> None:
        """Cancel random recent tasks (a blocked or pending one is cancelled with everything
        blocked below it)."""
        while self.producing:
            if self.ids:
                victim = self.rng.choice(self.ids[-150:])
                await self.guarded("cancel", self.queue.cancel(victim))  # finished: Conflict
            await asyncio.sleep(0.005)

    async def retry_some(self) -> None:
        """Retry random failed or cancelled tasks by hand (back to blocked on their
        unfinished dependencies)."""
        while self.producing:
            await self.retry_ended(limit=3)
            await asyncio.sleep(0.005)

    async def retry_ended(self, limit: int) -> int:
        async with self.queue.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id FROM pgqueue.tasks WHERE status IN ('failed', 'cancelled')"
                " ORDER BY random() LIMIT %s",
                (limit,),
            )
            ended = [row[0] for row in await cur.fetchall()]
        for task_id in ended:
            await self.guarded("retry", self.queue.retry(task_id))
        return len(ended)


async def bad_dependents(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
    """Tasks whose dependency bookkeeping is wrong. At rest, every blocked task has exactly
    one edge per dependency not completed and ``deps_left`` counts them; every unfinished
    task without such a dependency is not blocked; no edge remains from a dependency that
    completed."""
    cur = await conn.execute(
        """
        SELECT t.id, t.status::text, t.deps_left,
               (SELECT count(*) FROM pgqueue.tasks d
                 WHERE d.id = ANY(t.depends_on) AND d.status <> 'completed') AS open_deps,
               (SELECT count(*) FROM pgqueue.task_deps e WHERE e.task_id = t.id) AS edges
          FROM pgqueue.tasks t
         WHERE t.status IN ('blocked', 'pending')
        """
    )
    bad: list[tuple[Any, ...]] = []
    for row in await cur.fetchall():
        _, status, deps_left, open_deps, edges = row
        if status == "blocked" and not (deps_left == open_deps == edges and open_deps > 0):
            bad.append(row)
        if status == "pending" and (open_deps or edges or deps_left):
            bad.append(row)
    cur = await conn.execute(
        "SELECT e.depends_on, e.task_id FROM pgqueue.task_deps e JOIN pgqueue.tasks d"
        " ON d.id = e.depends_on WHERE d.status = 'completed'"
    )
    bad.extend(await cur.fetchall())
    # a blocked task under a failed or cancelled dependency was cancelled with it, unless it
    # was retried by hand after that dependency ended (its 'requeued' comes later in the trail)
    cur = await conn.execute(
        """
        SELECT t.id, d.id FROM pgqueue.tasks t JOIN pgqueue.tasks d ON d.id = ANY(t.depends_on)
         WHERE t.status = 'blocked' AND d.status IN ('failed', 'cancelled')
           AND NOT EXISTS (
               SELECT 1 FROM pgqueue.events r
                WHERE r.task_id = t.id AND r.event = 'requeued'
                  AND r.id > (SELECT max(x.id) FROM pgqueue.events x
                               WHERE x.task_id = d.id
                                 AND (x.event IN ('failed', 'cancelled')
                                      OR x.event = 'created' AND x.status IN ('failed', 'cancelled'))))
        """
    )
    bad.extend(await cur.fetchall())
    return bad


async def server_deadlocks(dsn: str) -> int:
    """Deadlocks the server detected in this database: every backend's count is flushed when
    it exits, so this waits for the test's other sessions to be gone."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:

        async def others_gone() -> bool:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            row = await cur.fetchone()
            return row is not None and row[0] == 0

        await wait_for(others_gone, timeout=30, what="the test's sessions to end")
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        cur = await conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def run_race(
    dsn: str, seed: int, *, roots: int, producers: int, finishers: int, chaos: bool
) -> Race:
    """Race producers against batch finishes until 4 times ``roots`` tasks exist, then drain
    everything (retrying what failed) and check the bookkeeping at rest and at the end."""
    settings = Settings.from_env({}, dsn=dsn, pool_size=producers + 2 * finishers + 4)
    async with Queue(settings=settings) as queue:
        race = Race(queue, seed)
        race.fail_share = 0.1 if chaos else 0.0
        made = await queue.enqueue_many([{"kind": "k", "queue": QUEUE} for _ in range(roots)])
        race.ids.extend(t.id for t in made)
        workers = [asyncio.create_task(race.work(n)) for n in range(finishers)]
        busy = [asyncio.create_task(race.produce(n)) for n in range(producers)]
        if chaos:
            busy += [
                asyncio.create_task(race.cancel_some()),
                asyncio.create_task(race.retry_some()),
            ]

        async def enough() -> bool:
            return len(race.ids) >= 4 * roots

        await wait_for(enough, timeout=120, what="producers to make their tasks")
        race.producing = False
        await asyncio.wait_for(asyncio.gather(*busy), timeout=60)
        # at rest (the finishers paused): the bookkeeping is exact
        race.draining = False
        await asyncio.wait_for(asyncio.gather(*workers), timeout=60)
        async with queue.pool.connection() as conn:
            assert await bad_dependents(conn) == []

        # then nothing stays blocked: finish everything, retry by hand what failed or was
        # cancelled, until every task completed
        race.fail_share = 0.0
        race.draining = True
        workers = [asyncio.create_task(race.work(n)) for n in range(finishers)]

        async def all_completed() -> bool:
            async with queue.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT count(*) FILTER (WHERE status <> 'completed'),"
                    " (SELECT count(*) FROM pgqueue.task_deps) FROM pgqueue.tasks"
                )
                row = await cur.fetchone()
            if row == (0, 0):
                return True
            await race.retry_ended(limit=1000)
            return False

        await wait_for(all_completed, timeout=120, interval=0.2, what="every task to complete")
        race.draining = False
        await asyncio.wait_for(asyncio.gather(*workers), timeout=60)
    return race


async def test_producers_and_batch_finishes_do_not_deadlock(dsn: str) -> None:
    race = await run_race(dsn, 13, roots=300, producers=6, finishers=4, chaos=False)
    assert race.deadlocks == [], race.summary()
    assert await server_deadlocks(dsn) == 0
    assert len(race.ids) >= 1200 and race.finished >= len(race.ids)  # the race really ran


async def test_cancels_retries_and_failures_racing_finishes_do_not_deadlock(dsn: str) -> None:
    """Failures and cancels end whole subgraphs (cancelled down the graph) while retries by
    hand put them back to blocked and producers hang new dependents under them."""
    race = await run_race(dsn, 14, roots=200, producers=4, finishers=3, chaos=True)
    assert race.deadlocks == [], race.summary()
    assert await server_deadlocks(dsn) == 0
    assert len(race.ids) >= 800
