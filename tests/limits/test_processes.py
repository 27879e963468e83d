"""SPEC §12 limits, held by the claim across several real `pgqueue worker` processes.

Each test would fail if its promise broke: the rate limit is checked on the audit trail's
`started` events (stamped by the claim's transaction, the clock the limit counts with), the
caps by sampling what runs while the workers race."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from pgqueue.queue import Queue
from pgqueue.tasks import Status
from tests.helpers import fast_settings, stop_processes, wait_for, worker_process

pytestmark = pytest.mark.slow

APP = "tests.limits.apps:app"


@contextlib.asynccontextmanager
async def workers(
    dsn: str, n: int, *args: str
) -> AsyncGenerator[list[subprocess.Popen[bytes]], None]:
    settings = fast_settings(dsn)
    procs = [worker_process(settings, APP, *args) for _ in range(n)]
    try:
        yield procs
    finally:
        stop_processes(procs)


async def scalar(conn: psycopg.AsyncConnection[Any], sql: str, *params: Any) -> Any:
    cur = await conn.execute(sql, params)  # type: ignore[arg-type]
    row = await cur.fetchone()
    return row[0] if row else None


async def count_status(conn: psycopg.AsyncConnection[Any], status: str, queue: str) -> int:
    return int(
        await scalar(
            conn,
            "SELECT count(*) FROM pgqueue.tasks WHERE status = %s AND queue = %s",
            status,
            queue,
        )
    )


class Sampler:
    """Reads a number every few milliseconds while workers run; keeps the largest."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], sql: str) -> None:
        self.conn, self.sql, self.most = conn, sql, 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.most = max(self.most, int(await scalar(self.conn, self.sql) or 0))
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> Sampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def done(conn: psycopg.AsyncConnection[Any], queue: str, n: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return await count_status(conn, "completed", queue) >= n

    return probe


async def test_rate_limit_holds_across_four_worker_processes(
    dsn: str, queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    n, per_s = 10, 1.0
    await conn.execute("SELECT pgqueue.set_rate_limit('llm', %s, %s)", (n, per_s))
    await queue.enqueue_many([{"kind": "noop", "queue": "llm"} for _ in range(40)])
    async with workers(dsn, 4, "--queues", "llm", "--concurrency", "20"):
        await wait_for(done(conn, "llm", 40), timeout=90, what="40 rate-limited completions")
    cur = await conn.execute(
        "SELECT e.at, e.worker_id FROM pgqueue.events e WHERE e.event = 'started' ORDER BY e.at"
    )
    starts = await cur.fetchall()
    assert len(starts) == 40
    at = [row[0] for row in starts]
    # at most n starts in any per_s window: the (i+n)-th start is per_s after the i-th
    gaps = [at[i + n] - at[i] for i in range(len(at) - n)]
    assert min(gaps) >= timedelta(seconds=per_s), min(gaps)
    # and the limit is what paced them (40 at 10/s need three more windows), not idleness
    assert at[-1] - at[0] < timedelta(seconds=10)


async def test_per_user_concurrency_and_max_running_hold_across_processes(
    dsn: str, queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    await conn.execute("SELECT pgqueue.set_per_user_concurrency('agents', 2)")
    await conn.execute("SELECT pgqueue.set_user_limits('capped', NULL, NULL, 1)")
    tasks = [
        {"kind": "sleep", "queue": "agents", "payload": {"s": 0.2}, "user_id": f"u{u}"}
        for u in range(3)
        for _ in range(6)
    ]
    # 'capped' may run one task at a time across both of its queues
    tasks += [
        {"kind": "sleep", "queue": q, "payload": {"s": 0.2}, "user_id": "capped"}
        for q in ("agents", "other")
        for _ in range(3)
    ]
    await queue.enqueue_many(tasks)
    per_user = (
        "SELECT coalesce(max(c), 0) FROM (SELECT count(*) AS c FROM pgqueue.tasks"
        " WHERE status = 'running' AND queue = 'agents' GROUP BY user_id) x"
    )
    capped = "SELECT count(*) FROM pgqueue.tasks WHERE status = 'running' AND user_id = 'capped'"
    sampler_conn = await psycopg.AsyncConnection.connect(conn.info.dsn, autocommit=True)
    sampler_conn2 = await psycopg.AsyncConnection.connect(conn.info.dsn, autocommit=True)
    async with (
        sampler_conn,
        sampler_conn2,
        Sampler(sampler_conn, per_user) as most_per_user,
        Sampler(sampler_conn2, capped) as most_capped,
        workers(dsn, 4, "--queues", "agents,other", "--concurrency", "10"),
    ):
        await wait_for(done(conn, "agents", 21), timeout=90, what="agents drained")
        await wait_for(done(conn, "other", 3), timeout=90, what="other drained")
    assert most_per_user.most == 2  # reached, never passed
    assert most_capped.most == 1


async def test_fair_queue_serves_a_one_task_user_within_one_claim(
    dsn: str, queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    await conn.execute("SELECT pgqueue.set_fair('chat', true)")
    await queue.enqueue_many(
        [{"kind": "sleep", "queue": "chat", "payload": {"s": 0.05}, "user_id": "big"}] * 30
    )
    small = await queue.enqueue("sleep", {"s": 0.05}, queue="chat", user_id="small")
    # each process claims one task at a time: only the claim's order decides
    async with workers(dsn, 2, "--queues", "chat", "--concurrency", "1"):
        await wait_for(done(conn, "chat", 31), timeout=90, what="chat drained")
    cur = await conn.execute(
        "SELECT e.task_id FROM pgqueue.events e WHERE e.event = 'started' ORDER BY e.id"
    )
    order = [row[0] for row in await cur.fetchall()]
    assert order.index(small.id) <= 1, order.index(small.id)  # behind at most one claim


async def test_circuit_breaker_opens_probes_and_closes(
    dsn: str, queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    await conn.execute("CREATE TABLE switch (failing boolean)")
    await conn.execute("INSERT INTO switch VALUES (true)")
    await conn.execute("SELECT pgqueue.set_circuit_breaker('down', 3, 3)")
    await queue.enqueue_many([{"kind": "flaky", "queue": "down", "max_retries": 0}] * 10)
    breaker = "SELECT open_until FROM pgqueue.breakers WHERE queue = 'down' AND kind = 'flaky'"
    async with workers(dsn, 2, "--queues", "down", "--concurrency", "1"):

        async def opened() -> Any:
            return await scalar(conn, breaker)

        first_open = await wait_for(opened, timeout=60, what="the breaker to open")

        async def settled() -> bool:  # what was in flight when it opened ends (and fails)
            return await count_status(conn, "running", "down") == 0

        await wait_for(settled, timeout=30, what="in-flight attempts to end")
        failed = await count_status(conn, "failed", "down")
        # claimed before the third failure was recorded: each process may have had one running
        # and one finished with its outcome still unwritten
        assert 3 <= failed <= 6
        assert await count_status(conn, "pending", "down") == 10 - failed
        waiting = await scalar(
            conn, "SELECT id FROM pgqueue.tasks WHERE queue = 'down' AND status = 'pending' LIMIT 1"
        )
        codes = [r.code for r in (await queue.why(waiting)).reasons]
        assert "circuit_open" in codes

        async def reopened() -> Any:
            until = await scalar(conn, breaker)
            return until is not None and until > first_open

        await wait_for(reopened, timeout=30, what="the failed probe to re-open the breaker")
        assert await count_status(conn, "failed", "down") == failed + 1  # one probe only

        await conn.execute("UPDATE switch SET failing = false")
        await wait_for(
            done(conn, "down", 10 - failed - 1), timeout=60, what="the rest, once closed"
        )
    assert await scalar(conn, breaker) is None  # closed
    assert await count_status(conn, "failed", "down") == failed + 1


async def test_budget_stop_and_resume(
    dsn: str, queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    await conn.execute("SELECT pgqueue.set_user_limits('ann', 1.0, NULL, NULL)")
    async with workers(dsn, 2, "--queues", "llm", "--concurrency", "5"):
        long = [
            await queue.enqueue("sleep", {"s": 60}, queue="llm", user_id="ann", max_retries=3)
            for _ in range(2)
        ]

        async def running() -> bool:
            states = [(await queue.get(t.id)).status for t in long]
            return states == [Status.RUNNING] * len(long)

        await wait_for(running, timeout=30, what="ann's long tasks to run")
        spends = [
            await queue.enqueue("spend", {"cost": 0.6}, queue="llm", user_id="ann")
            for _ in range(2)
        ]
        for t in spends:
            assert (await queue.wait(t.id, timeout_s=30)).status is Status.COMPLETED
        for t in long:  # crossed the budget: stopped, failed, not retried
            stopped = await queue.wait(t.id, timeout_s=30)
            assert stopped.status is Status.FAILED, stopped
            assert stopped.error is not None and stopped.error["type"] == "budget_exceeded"
            assert stopped.attempts == 1
        held = await queue.enqueue("noop", {}, queue="llm", user_id="ann")
        other = await queue.enqueue("noop", {}, queue="llm", user_id="bob")
        assert (await queue.wait(other.id, timeout_s=30)).status is Status.COMPLETED
        assert (await queue.get(held.id)).status is Status.PENDING
        assert "budget_exhausted" in [r.code for r in (await queue.why(held.id)).reasons]

        await conn.execute("SELECT pgqueue.set_user_limits('ann', 10.0, NULL, NULL)")
        assert (await queue.wait(held.id, timeout_s=10)).status is Status.COMPLETED
    spent = await scalar(conn, "SELECT sum(cost) FROM pgqueue.usage_by_day WHERE user_id = 'ann'")
    assert float(spent) == pytest.approx(1.2)
