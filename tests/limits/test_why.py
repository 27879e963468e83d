"""``why``: each reason of SPEC §12 appears exactly when its rule holds the task back, from
``pgqueue.why()`` (what Queue.why, the API and the CLI read)."""

from __future__ import annotations

from typing import Any

import psycopg

from pgqueue.limits import Reason
from pgqueue.queue import Queue
from pgqueue.tasks import Task
from tests.sql.test_operator_cli import pgqueue_cli


async def claim(conn: psycopg.AsyncConnection[Any], queue: str, n: int = 1) -> list[Any]:
    cur = await conn.execute("SELECT id FROM pgqueue.claim('w', %s, NULL, %s)", ([queue], n))
    return [row[0] for row in await cur.fetchall()]


async def reasons(queue: Queue, task: Task) -> dict[str, Reason]:
    return {r.code: r for r in (await queue.why(task.id)).reasons}


async def serve(conn: psycopg.AsyncConnection[Any], queue: str, kind: str = "k") -> None:
    """A live worker row for queue and kind (so `no_worker` does not apply)."""
    await conn.execute(
        "INSERT INTO pgqueue.workers (id, host, pid, queues, kinds, concurrency)"
        " VALUES (%s, 'h', 1, %s, %s, 1)",
        (f"w-{queue}-{kind}", [queue], [kind]),
    )


async def test_each_reason_appears_when_its_rule_holds(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    for q in ("sched", "paused", "conc", "peruser", "rate", "budget", "breaker", "line"):
        await serve(conn, q)

    later = await queue.enqueue("k", queue="sched", delay_s=600)
    assert set(await reasons(queue, later)) == {"scheduled"}
    assert (await reasons(queue, later))["scheduled"].run_at == later.run_at

    paused = await queue.enqueue("k", queue="paused")
    await conn.execute("SELECT pgqueue.pause_queue('paused')")
    assert set(await reasons(queue, paused)) == {"queue_paused"}

    await conn.execute("SELECT pgqueue.set_queue_limit('conc', 1)")
    await queue.enqueue("k", queue="conc")
    second = await queue.enqueue("k", queue="conc")
    assert set(await reasons(queue, second)) == {"backlog"}  # next after the first
    assert len(await claim(conn, "conc", 5)) == 1
    assert set(await reasons(queue, second)) == {"concurrency_limit"}

    await conn.execute("SELECT pgqueue.set_per_user_concurrency('peruser', 1)")
    await queue.enqueue("k", queue="peruser", user_id="u")
    mine = await queue.enqueue("k", queue="peruser", user_id="u")
    theirs = await queue.enqueue("k", queue="peruser", user_id="v")
    assert len(await claim(conn, "peruser")) == 1
    assert set(await reasons(queue, mine)) == {"per_user_limit"}
    assert "per_user_limit" not in await reasons(queue, theirs)

    await conn.execute("SELECT pgqueue.set_rate_limit('rate', 1, 600)")
    await queue.enqueue("k", queue="rate")
    limited = await queue.enqueue("k", queue="rate")
    assert len(await claim(conn, "rate", 5)) == 1
    why = await reasons(queue, limited)
    assert set(why) == {"rate_limited"}
    assert why["rate_limited"].frees_at is not None

    broke = await queue.enqueue("k", queue="breaker")
    await conn.execute("SELECT pgqueue.set_circuit_breaker('breaker', 1, 600)")
    (first,) = await claim(conn, "breaker")
    await conn.execute(
        "UPDATE pgqueue.tasks SET status = 'failed', completed_at = now(), worker_id = NULL,"
        ' heartbeat_at = NULL, error = \'{"type": "E"}\' WHERE id = %s',
        (first,),
    )
    held = await queue.enqueue("k", queue="breaker")
    assert broke.id == first
    why = await reasons(queue, held)
    assert set(why) == {"circuit_open"} and why["circuit_open"].until is not None
    assert await claim(conn, "breaker") == []  # the claim agrees

    await conn.execute("SELECT pgqueue.set_user_limits('spender', 0, NULL, NULL)")
    broke_user = await queue.enqueue("k", queue="budget", user_id="spender")
    assert set(await reasons(queue, broke_user)) == {"budget_exhausted"}
    assert await claim(conn, "budget") == []

    await conn.execute("SELECT pgqueue.set_user_limits('solo', NULL, NULL, 1)")
    await queue.enqueue("k", queue="line", user_id="solo")
    solo = await queue.enqueue("k", queue="line", user_id="solo")
    assert len(await claim(conn, "line", 5)) == 1
    assert set(await reasons(queue, solo)) == {"per_user_limit"}

    unserved = await queue.enqueue("other.kind", queue="line")
    assert "no_worker" in await reasons(queue, unserved)

    ahead = [await queue.enqueue("k", queue="line") for _ in range(3)]
    why = await reasons(queue, ahead[-1])
    assert why["backlog"].ahead == 4  # solo's held task, the unserved one and two more

    cur = await conn.execute("SELECT queue, reason, tasks FROM pgqueue.held_back")
    held = set(await cur.fetchall())
    assert held == {
        ("paused", "queue_paused", 1),
        ("conc", "concurrency_limit", 1),
        ("peruser", "per_user_limit", 1),
        ("rate", "rate_limited", 1),
        ("breaker", "circuit_open", 1),
        ("budget", "budget_exhausted", 1),
        ("line", "per_user_limit", 1),
    }

    (started,) = await claim(conn, "sched") or [None]
    assert started is None  # not due: the claim agrees with `scheduled`
    running_id = (await claim(conn, "line"))[0]
    assert (await queue.why(running_id)).reasons == []


async def test_why_from_the_cli(dsn: str, queue: Queue) -> None:
    task = await queue.enqueue("k", queue="nobody", delay_s=60)
    out = pgqueue_cli(dsn, "why", str(task.id))
    assert out.returncode == 0, out.stderr
    assert "scheduled" in out.stdout and "no_worker" in out.stdout
    bad = pgqueue_cli(dsn, "why", "not-a-uuid")
    assert bad.returncode == 2 and "id" in bad.stderr
