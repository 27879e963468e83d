"""A cancel wins (SPEC §2) against a real local worker: once cancel_requested is set, a
retryable failure, a timeout, a release at shutdown or a stall ends the task cancelled, and it
is never run again.

The cancel is requested "silently" (triggers off for that one statement, so no NOTIFY reaches
the worker, and heartbeats are slow): this is the race where the attempt ends before its
worker hears of the cancel, which used to put the task back to pending and run it again.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import psycopg

import pgqueue
from pgqueue.queue import Queue
from pgqueue.tasks import Status, TaskId
from tests.helpers import fast_settings, running_worker, wait_for, worker_process

Conn = psycopg.AsyncConnection[Any]

app = pgqueue.App()
started: dict[str, asyncio.Event] = {}
go: dict[str, asyncio.Event] = {}


def _event(table: dict[str, asyncio.Event], name: str) -> asyncio.Event:
    return table.setdefault(name, asyncio.Event())


@app.task("fail_when_told")
async def fail_when_told(ctx: pgqueue.Context, payload: dict[str, Any]) -> None:
    _event(started, payload["name"]).set()
    await _event(go, payload["name"]).wait()
    raise RuntimeError("a retryable failure")


@app.task("wait_forever", timeout_s=3)
async def wait_forever(ctx: pgqueue.Context, payload: dict[str, Any]) -> None:
    _event(started, payload["name"]).set()
    await asyncio.sleep(3600)


async def request_cancel_silently(conn: Conn, task_id: TaskId) -> None:
    """Set cancel_requested without telling the worker (no trigger, so no NOTIFY)."""
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "UPDATE pgqueue.tasks SET cancel_requested = true WHERE id = %s", (task_id,)
        )


async def runs_of(conn: Conn, task_id: TaskId) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM pgqueue.events WHERE task_id = %s AND event = 'started'", (task_id,)
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_a_retryable_failure_after_a_cancel_request_ends_cancelled(
    queue: Queue, conn: Conn, dsn: str
) -> None:
    settings = fast_settings(dsn, heartbeat_s=30.0, stall_s=60.0)
    async with running_worker(app, settings):
        task = await queue.enqueue("fail_when_told", {"name": "retry"}, max_retries=5)
        await asyncio.wait_for(_event(started, "retry").wait(), 20)
        await request_cancel_silently(conn, task.id)
        _event(go, "retry").set()
        done = await queue.wait(task.id, timeout_s=20)
        assert done.status is Status.CANCELLED, done
        await asyncio.sleep(settings.poll_s)  # a claim would have had its chance
    assert done.error is not None and done.error["attempt_error"]["type"] == "RuntimeError"
    assert await runs_of(conn, task.id) == 1


async def test_a_timeout_after_a_cancel_request_ends_cancelled(
    queue: Queue, conn: Conn, dsn: str
) -> None:
    settings = fast_settings(dsn, heartbeat_s=30.0, stall_s=60.0)
    async with running_worker(app, settings):
        task = await queue.enqueue("wait_forever", {"name": "timeout"}, max_retries=5)
        await asyncio.wait_for(_event(started, "timeout").wait(), 20)
        await request_cancel_silently(conn, task.id)
        done = await queue.wait(task.id, timeout_s=20)
    assert done.status is Status.CANCELLED, done
    assert done.error is not None and done.error["attempt_error"]["type"] == "timeout"
    assert await runs_of(conn, task.id) == 1


async def test_a_release_at_shutdown_after_a_cancel_request_ends_cancelled(
    queue: Queue, conn: Conn, dsn: str
) -> None:
    settings = fast_settings(dsn, heartbeat_s=30.0, stall_s=60.0, shutdown_grace_s=0.2)
    async with running_worker(app, settings):
        task = await queue.enqueue("fail_when_told", {"name": "release"})
        await asyncio.wait_for(_event(started, "release").wait(), 20)
        await request_cancel_silently(conn, task.id)
    done = await queue.get(task.id)
    assert done.status is Status.CANCELLED, done
    assert done.attempts == 1 and await runs_of(conn, task.id) == 1


async def test_a_stalled_task_whose_cancel_was_requested_ends_cancelled(
    queue: Queue, conn: Conn, dsn: str
) -> None:
    """kill -9 of the worker process: the reaper, not a worker, ends the attempt."""
    await conn.execute("CREATE TABLE executions (task_id uuid, attempt int, pid int)")
    settings = fast_settings(dsn, heartbeat_s=0.5, stall_s=2.0)
    proc = worker_process(settings)
    try:
        task = await queue.enqueue("sleep", {"s": 60}, max_retries=5)

        async def is_running() -> bool:
            return (await queue.get(task.id)).status is Status.RUNNING

        await wait_for(is_running, timeout=30, what="the task to start")
        await request_cancel_silently(conn, task.id)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

        async def reaped() -> bool:
            await conn.execute("SELECT * FROM pgqueue.reap(interval '2 seconds')")
            return (await queue.get(task.id)).status.terminal

        await wait_for(reaped, timeout=30, interval=0.5, what="the reaper")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = await queue.get(task.id)
    assert done.status is Status.CANCELLED and await runs_of(conn, task.id) == 1
