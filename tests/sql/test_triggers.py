"""The trigger functions (sql/functions/triggers.sql): every change audited and published on
NOTIFY in few notifications, with the settings the bodies need, re-applied by migrate."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import psycopg
import pytest

from pgqueue.db.migrate import migrate
from pgqueue.db.queries import QUERIES
from pgqueue.db.sql_files import sql_dir
from pgqueue.db.transitions import finish, finish_many
from pgqueue.events import EVENTS, WAKEUP, TaskChange, decode_changes
from pgqueue.outcomes import Cancelled, Failed
from pgqueue.queue import Queue
from pgqueue.tasks import Status, Usage
from tests.sql.claiming import claim


async def test_every_transition_is_audited(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    task = await queue.enqueue("k")
    await claim(conn)
    params = {"id": task.id, "attempt": 1, "worker_id": "w1"}
    await conn.execute(QUERIES["task_progress"], {**params, "progress": '{"percent": 50}'})
    await conn.execute(QUERIES["task_checkpoint"], {**params, "token": "t1", "data": '{"s": 1}'})
    failed = Failed(
        error={"type": "E", "message": "m", "retryable": True},
        retryable=True,
        retry_in_s=0,
        usage=Usage(input_tokens=10, output_tokens=2, cost=0.5),
    )
    await finish_many(queue.pool, [finish(task.id, 1, "w1", failed)])
    await claim(conn)
    await queue.cancel(task.id)
    await finish_many(queue.pool, [finish(task.id, 2, "w1", Cancelled())])
    await queue.retry(task.id)
    events = [e.event for e in await queue.events(task.id)]
    assert events == [
        "created",
        "started",
        "progress",
        "checkpoint",
        "retry_scheduled",
        "started",
        "cancel_requested",
        "cancelled",
        "requeued",
    ]
    final = await queue.get(task.id)
    assert final.usage == {"input_tokens": 10, "output_tokens": 2, "cost": 0.5}
    assert final.checkpoint is not None and final.checkpoint["token"] == "t1"


async def test_bulk_insert_does_not_flood_notifications(dsn: str, queue: Queue) -> None:
    """10,000 rows in one statement: one wake-up and ~10000/60 event notifications, not 20,000."""
    got: dict[str, int] = {WAKEUP: 0, EVENTS: 0}
    listener = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    async with listener:
        await listener.execute(f"LISTEN {WAKEUP}")
        await listener.execute(f"LISTEN {EVENTS}")
        await queue.enqueue_many([{"kind": "k", "payload": {"i": i}} for i in range(10_000)])
        await queue.enqueue("k", {"marker": True})  # the last notification we wait for
        changes = 0
        async for n in listener.notifies(timeout=30):
            got[n.channel] += 1
            if n.channel == EVENTS:
                changes += len(msgspec.json.decode(n.payload))
            if changes >= 10_001 and got[WAKEUP] >= 2:
                break
    assert changes == 10_001  # every change is published...
    assert got[EVENTS] <= 10_000 // 60 + 2  # ...in few notifications
    assert got[WAKEUP] == 2  # one per statement and queue


async def test_published_changes_decode_whatever_the_owner_is_called(
    dsn: str, queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    """The triggers build the payload as text: a user id needing JSON escapes must survive."""
    owner = 'ann "the admin" \\ o\'brien\n\u00fc\u2603'
    listener = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    async with listener:
        await listener.execute(f"LISTEN {EVENTS}")
        task = await queue.enqueue("k", user_id=owner, queue="q.1:a-b_c")
        await claim(conn, queues=["q.1:a-b_c"])
        changes: list[TaskChange] = []
        async for n in listener.notifies(timeout=30):
            changes += decode_changes(n.payload)
            if len(changes) == 2:
                break
    assert [(c.task_id, c.event, c.status, c.queue, c.user_id) for c in changes] == [
        (task.id, "created", Status.PENDING, "q.1:a-b_c", owner),
        (task.id, "started", Status.RUNNING, "q.1:a-b_c", owner),
    ]


@pytest.mark.parametrize("migrated_again", [False, True])
async def test_trigger_functions_never_plan_nested_loops(
    conn: psycopg.AsyncConnection[Any], migrated_again: bool
) -> None:
    """Cached one-row plans made bulk writes quadratic (61 s for 20,000 rows); see
    triggers.sql. The settings survive migrate's CREATE OR REPLACE of the bodies, also when
    it runs again on a migrated database."""
    if migrated_again:
        await migrate(conn)
    cur = await conn.execute(
        "SELECT proname, proconfig FROM pg_proc WHERE proname IN ('on_tasks_insert', 'on_tasks_update')"
    )
    configs = dict(await cur.fetchall())
    # (TimeZone=UTC: the JSON times they write must not depend on the session, see 0009)
    assert configs == {
        "on_tasks_insert": ["enable_nestloop=off", "TimeZone=UTC"],
        "on_tasks_update": ["enable_nestloop=off", "TimeZone=UTC"],
    }


def test_every_function_is_defined_in_one_functions_file() -> None:
    """Each ``CREATE OR REPLACE FUNCTION`` of sql/functions/ appears in exactly one file."""
    pattern = re.compile(r"^CREATE OR REPLACE FUNCTION (pgqueue\.\w+)\(", re.MULTILINE)
    seen: dict[str, list[str]] = {}
    for path in sorted((sql_dir() / "functions").glob("*.sql")):
        for name in pattern.findall(path.read_text()):
            seen.setdefault(name, []).append(path.name)
    assert {"pgqueue.on_tasks_insert", "pgqueue.claim"} <= set(seen)
    assert {name: files for name, files in seen.items() if len(files) > 1} == {}
