"""Several worker processes, kill -9, SIGTERM and lost connections: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import psycopg
import pytest

from pgqueue.queue import Queue
from pgqueue.tasks import Status
from tests.helpers import fast_settings, stop_processes, wait_for, worker_process

pytestmark = pytest.mark.slow


@pytest.fixture
async def executions(conn: psycopg.AsyncConnection[Any]) -> psycopg.AsyncConnection[Any]:
    await conn.execute(
        "CREATE TABLE executions (task_id uuid, attempt int, pid int, at timestamptz DEFAULT now())"
    )
    return conn


async def _count(conn: psycopg.AsyncConnection[Any], sql: str, *params: Any) -> int:
    cur = await conn.execute(sql, params)  # type: ignore[arg-type]
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_three_processes_complete_each_task_exactly_once(
    dsn: str, queue: Queue, executions: psycopg.AsyncConnection[Any]
) -> None:
    settings = fast_settings(dsn)
    procs = [
        worker_process(settings, "tests.worker.apps:app", "--concurrency", "20") for _ in range(3)
    ]
    try:
        await queue.enqueue_many([{"kind": "record", "payload": {"i": i}} for i in range(1000)])
        await wait_for(lambda: _all_done(executions, 1000), timeout=90, what="1,000 completions")
    finally:
        codes = stop_processes(procs)
    assert codes == [0, 0, 0]
    assert await _count(executions, "SELECT count(*) FROM executions") == 1000
    assert await _count(executions, "SELECT count(DISTINCT task_id) FROM executions") == 1000
    assert (
        await _count(executions, "SELECT count(DISTINCT pid) FROM executions") == 3
    )  # all took part
    assert await _count(executions, "SELECT count(*) FROM pgqueue.workers") == 0  # all signed off


async def _all_done(conn: psycopg.AsyncConnection[Any], n: int) -> bool:
    return await _count(conn, "SELECT count(*) FROM pgqueue.tasks WHERE status = 'completed'") >= n


async def test_kill_9_mid_task_resumes_from_checkpoint_on_another_worker(
    dsn: str, queue: Queue, executions: psycopg.AsyncConnection[Any]
) -> None:
    settings = fast_settings(dsn, stall_s=2.0)
    victim = worker_process(settings)
    rescuer = None
    try:
        task = await queue.enqueue("steps", {"steps": 12, "step_s": 0.25}, max_retries=3)

        async def checkpointed() -> bool:
            t = await queue.get(task.id)
            return t.checkpoint is not None and t.checkpoint["data"]["done"] >= 3

        await wait_for(checkpointed, timeout=30, what="a few checkpoints")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        saved = (await queue.get(task.id)).checkpoint
        assert saved is not None
        rescuer = worker_process(settings)
        done = await queue.wait(task.id, timeout_s=60)
    finally:
        stop_processes([p for p in (victim, rescuer) if p is not None])
    assert done.status is Status.COMPLETED
    assert done.attempts == 2
    assert done.result["resumed_from"] >= saved["data"]["done"]
    assert rescuer is not None and done.result["pid"] == rescuer.pid
    events = [e.event for e in await queue.events(task.id)]
    assert "requeued" in events  # by the reaper
    assert (await queue.events(task.id))[events.index("requeued")].data["type"] == "stalled"


async def test_sigterm_releases_running_tasks_and_exits_zero(
    dsn: str, queue: Queue, executions: psycopg.AsyncConnection[Any]
) -> None:
    settings = fast_settings(dsn, shutdown_grace_s=1.0)
    proc = worker_process(settings)
    try:
        task = await queue.enqueue("sleep", {"s": 3600})
        await wait_for(lambda: _count(executions, "SELECT count(*) FROM executions"), what="start")
    finally:
        [code] = stop_processes([proc], timeout=30)
    assert code == 0
    released = await queue.get(task.id)
    assert (released.status, released.attempts) == (Status.PENDING, 0)
    assert await _count(executions, "SELECT count(*) FROM pgqueue.workers") == 0


async def test_lost_connections_under_load_lose_nothing(
    dsn: str, queue: Queue, executions: psycopg.AsyncConnection[Any]
) -> None:
    """Kill every worker connection to the database, repeatedly, while 500 tasks drain."""
    settings = fast_settings(dsn, stall_s=3.0)
    procs = [
        worker_process(settings, "tests.worker.apps:app", "--concurrency", "10") for _ in range(2)
    ]
    try:
        await queue.enqueue_many([{"kind": "record", "payload": {"i": i}} for i in range(500)])
        for _ in range(5):
            await asyncio.sleep(0.3)
            await executions.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND application_name <> 'pgqueue-test'"
            )
        await wait_for(lambda: _all_done(executions, 500), timeout=120, what="500 completions")
    finally:
        codes = stop_processes(procs)
    assert codes == [0, 0]
    assert await _count(executions, "SELECT count(DISTINCT task_id) FROM executions") == 500
    # at-least-once: a task whose completion was lost with its connection may have run again
    assert (
        await _count(executions, "SELECT count(*) FROM pgqueue.tasks WHERE status <> 'completed'")
        == 0
    )
