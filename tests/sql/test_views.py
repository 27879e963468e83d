"""Each operator view returns what its name promises (SPEC §7), read as psql users read it."""

from __future__ import annotations

from typing import Any, LiteralString

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgqueue.db.queries import QUERIES
from pgqueue.queue import Queue
from pgqueue.tasks import Task

Conn = psycopg.AsyncConnection[Any]


async def claim(
    conn: Conn, queue: str = "default", worker: str = "w1", limit: int = 1
) -> list[Task]:
    cur = await conn.execute(
        "SELECT id FROM pgqueue.claim(%s, %s, %s, %s)", (worker, [queue], ["k"], limit)
    )
    return [row[0] for row in await cur.fetchall()]


async def finish(
    conn: Conn,
    task_id: Any,
    status: str,
    error: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
    ago: str = "0 s",
) -> None:
    """End a task the way the worker's statements do (terminal, completed_at set)."""
    await conn.execute(
        "UPDATE pgqueue.tasks SET status = %s, completed_at = now() - %s::interval, error = %s,"
        " usage = coalesce(%s, usage), worker_id = NULL, heartbeat_at = NULL WHERE id = %s",
        (
            status,
            ago,
            Jsonb(error) if error else None,
            Jsonb(usage) if usage else None,
            task_id,
        ),
    )


async def rows(
    conn: Conn, query: LiteralString | sql.Composed, *params: Any
) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query, params or None)
    return await cur.fetchall()


async def test_queue_stats_counts_each_queue_by_status(queue: Queue, conn: Conn) -> None:
    await queue.enqueue_many([{"kind": "k", "queue": "a"} for _ in range(4)])
    ids = await claim(conn, "a", limit=4)
    await finish(conn, ids[0], "completed")
    await finish(conn, ids[1], "failed", {"type": "E", "message": "m"})
    await finish(conn, ids[2], "cancelled")
    for _ in range(3):
        await queue.enqueue("k", queue="a")
    await queue.enqueue("k", queue="a", delay_s=3600)
    await conn.execute(
        "UPDATE pgqueue.tasks SET run_at = now() - interval '10 s'"
        " WHERE status = 'pending' AND queue = 'a' AND run_at <= now()"
    )
    await conn.execute("SELECT pgqueue.pause_queue('idle')")
    stats = {r["queue"]: r for r in await rows(conn, "SELECT * FROM pgqueue.queue_stats")}
    a = stats["a"]
    assert (a["pending"], a["due"], a["running"]) == (4, 3, 1)
    assert (a["completed"], a["failed"], a["cancelled"]) == (1, 1, 1)
    assert a["completed_last_minute"] == 1
    assert 10 <= a["oldest_due_age_s"] < 60
    assert not a["paused"] and a["concurrency_limit"] is None
    idle = stats["idle"]
    assert idle["paused"] and idle["pending"] == 0  # settings alone make a queue visible


async def test_running_tasks_show_worker_runtime_and_heartbeat_age(
    queue: Queue, conn: Conn
) -> None:
    await queue.enqueue("k")
    [task_id] = await claim(conn, worker="host:1:abc")
    await conn.execute(
        "UPDATE pgqueue.tasks SET heartbeat_at = now() - interval '7 s',"
        " started_at = now() - interval '20 s' WHERE id = %s",
        (task_id,),
    )
    await queue.enqueue("k")  # pending: not in the view
    [row] = await rows(conn, "SELECT * FROM pgqueue.running_tasks")
    assert row["id"] == task_id and row["worker_id"] == "host:1:abc" and row["attempt"] == 1
    assert 7 <= row["heartbeat_age_s"] < 30
    assert 20 <= row["runtime_s"] < 60


async def test_stalled_tasks_are_running_tasks_past_the_stall_threshold(
    queue: Queue, conn: Conn
) -> None:
    await queue.enqueue_many([{"kind": "k"}, {"kind": "k", "max_retries": 0}, {"kind": "k"}])
    fresh, exhausted, silent = await claim(conn, limit=3)
    await conn.execute(
        "UPDATE pgqueue.tasks SET heartbeat_at = now() - interval '45 s' WHERE id = ANY(%s)",
        ([exhausted, silent],),
    )
    stalled = {r["id"]: r for r in await rows(conn, "SELECT * FROM pgqueue.stalled_tasks")}
    assert set(stalled) == {exhausted, silent}
    assert stalled[silent]["reaper_will_make_it"] == "pending"
    assert stalled[exhausted]["reaper_will_make_it"] == "failed"
    assert stalled[silent]["worker_alive"] is False  # no heartbeat row for w1
    await conn.execute("SET pgqueue.stall_s = 60")
    assert await rows(conn, "SELECT * FROM pgqueue.stalled_tasks") == []
    await conn.execute("RESET pgqueue.stall_s")
    # What the view promised is what the reaper does.
    cur = await conn.execute("SELECT task_id, status::text FROM pgqueue.reap()")
    assert dict(await cur.fetchall()) == {silent: "pending", exhausted: "failed"}
    assert fresh not in stalled


async def test_failed_tasks_unpack_the_error_and_can_be_retried_in_bulk(
    queue: Queue, conn: Conn
) -> None:
    tasks = [await queue.enqueue("k") for _ in range(3)]
    await claim(conn, limit=3)
    await finish(
        conn, tasks[0].id, "failed", {"type": "RateLimited", "message": "429 from API"}, ago="2 s"
    )
    await finish(
        conn, tasks[1].id, "failed", {"type": "ValueError", "message": "bad input"}, ago="1 s"
    )
    await finish(conn, tasks[2].id, "completed")
    failed = await rows(conn, "SELECT * FROM pgqueue.failed_tasks")
    assert [r["id"] for r in failed] == [tasks[1].id, tasks[0].id]  # newest first
    assert failed[1]["error_type"] == "RateLimited" and failed[1]["error_message"] == "429 from API"
    cur = await conn.execute(
        "SELECT pgqueue.retry(id) FROM pgqueue.failed_tasks WHERE error_message LIKE '%429%'"
    )
    assert len(await cur.fetchall()) == 1
    assert (await queue.get(tasks[0].id)).status == "pending"
    assert [r["id"] for r in await rows(conn, "SELECT * FROM pgqueue.failed_tasks")] == [
        tasks[1].id
    ]


async def test_worker_status_shows_liveness_and_running_count(queue: Queue, conn: Conn) -> None:
    for wid in ("live", "silent"):
        await conn.execute(
            QUERIES["worker_register"],
            {
                "id": wid,
                "host": "h",
                "pid": 1,
                "queues": ["default"],
                "kinds": ["k"],
                "concurrency": 4,
            },
        )
    await conn.execute(
        "UPDATE pgqueue.workers SET heartbeat_at = now() - interval '90 s' WHERE id = 'silent'"
    )
    await queue.enqueue_many([{"kind": "k"}, {"kind": "k"}])
    await claim(conn, worker="live", limit=2)
    status = {r["id"]: r for r in await rows(conn, "SELECT * FROM pgqueue.worker_status")}
    assert status["live"]["alive"] and status["live"]["running_tasks"] == 2
    assert status["live"]["heartbeat_age_s"] < 30
    assert not status["silent"]["alive"] and status["silent"]["running_tasks"] == 0
    assert status["silent"]["heartbeat_age_s"] >= 90


async def test_usage_by_user_sums_tokens_and_cost_by_user_queue_and_day(
    queue: Queue, conn: Conn
) -> None:
    spec = [
        ("alice", "llm", 100, 10, 0.5),
        ("alice", "llm", 50, 5, 0.25),
        ("alice", "web", 1, 1, 0.01),
        ("bob", "llm", 7, 3, 1.0),
    ]
    for user, q, inp, out, cost in spec:
        t = await queue.enqueue("k", queue=q, user_id=user)
        await finish(
            conn, t.id, "completed", usage={"input_tokens": inp, "output_tokens": out, "cost": cost}
        )
    # An old task of alice's lands on its own day.
    old = await queue.enqueue("k", queue="llm", user_id="alice")
    await conn.execute(
        "UPDATE pgqueue.tasks SET created_at = now() - interval '2 days',"
        ' usage = \'{"input_tokens": 1000, "output_tokens": 0, "cost": 9}\' WHERE id = %s',
        (old.id,),
    )
    got = await rows(
        conn,
        "SELECT user_id, queue, day, tasks, input_tokens, output_tokens, cost::float8"
        " FROM pgqueue.usage_by_user ORDER BY user_id, queue, day",
    )
    today = (await rows(conn, "SELECT (now() AT TIME ZONE 'UTC')::date AS d"))[0]["d"]
    assert [
        (r["user_id"], r["queue"], r["tasks"], r["input_tokens"], r["output_tokens"], r["cost"])
        for r in got
    ] == [
        ("alice", "llm", 1, 1000, 0, 9.0),
        ("alice", "llm", 2, 150, 15, 0.75),
        ("alice", "web", 1, 1, 1, 0.01),
        ("bob", "llm", 1, 7, 3, 1.0),
    ]
    assert got[1]["day"] == today and (today - got[0]["day"]).days == 2


@pytest.mark.parametrize(
    "view",
    [
        "queue_stats",
        "running_tasks",
        "stalled_tasks",
        "failed_tasks",
        "worker_status",
        "usage_by_user",
    ],
)
async def test_each_view_answers_on_an_empty_database(conn: Conn, view: str) -> None:
    query = sql.SQL("SELECT * FROM pgqueue.{}").format(sql.Identifier(view))
    assert await rows(conn, query) == []
