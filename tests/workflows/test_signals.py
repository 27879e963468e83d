"""Signals (SPEC §11): a wait ends the attempt (waiting, slot freed, attempt given back), a
signal makes the task pending and the re-run gets the payload; sent early it is kept; a timeout
through the database clock raises SignalTimeout; replays and conflicts; psql, CLI and HTTP;
a worker killed after wait_for_signal loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal as os_signal
import subprocess
import sys
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.errors import Conflict
from pgqueue.queue import Queue
from pgqueue.settings import Settings
from pgqueue.tasks import Status
from pgqueue.worker.handlers import App
from pgqueue.worker.remote import RemoteWorker
from tests.api.conftest import Api
from tests.helpers import running_worker, wait_for, worker_process

Conn = psycopg.AsyncConnection[Any]

app = App()
runs: list[tuple[int, Any]] = []


@app.task("approve", max_retries=0)
async def approve(ctx: pgqueue.Context, payload: dict[str, Any]) -> Any:
    await ctx.checkpoint("before-wait", {"runs": len(runs)})
    try:
        got = await ctx.wait_for_signal("approval", timeout_s=payload.get("timeout_s"))
    except pgqueue.SignalTimeout:
        runs.append((ctx.attempt, "timeout"))
        return {"approved": False}
    runs.append((ctx.attempt, got))
    return {"approved": got}


async def status_of(queue: Queue, task_id: Any, status: Status) -> bool:
    return (await queue.get(task_id)).status == status


async def test_wait_then_signal(queue: Queue, settings: Settings) -> None:
    runs.clear()
    async with running_worker(app, settings):
        task = await queue.enqueue("approve", {})
        await wait_for(lambda: status_of(queue, task.id, Status.WAITING), what="waiting")
        waiting = await queue.get(task.id)
        # max_retries=0: a wait that used up the attempt could never run again
        assert (waiting.attempts, waiting.worker_id) == (0, None)
        assert waiting.waiting_for == {"signal": "approval"}
        assert (await queue.signal(task.id, "approval", {"ok": 1})).status == Status.PENDING
        done = await queue.wait(task.id, timeout_s=30)
    assert (done.status, done.result) == (Status.COMPLETED, {"approved": {"ok": 1}})
    assert runs == [(1, {"ok": 1})]
    events = [e.event for e in await queue.events(task.id)]
    assert events[:4] == ["created", "started", "checkpoint", "waiting"]
    assert "signalled" in events and events[-1] == "completed"
    # the same signal again: accepted as a replay; another payload: the first stands
    with pytest.raises(Conflict, match=r"finished|completed"):
        await queue.signal(task.id, "approval", {"ok": 1})


async def test_a_signal_sent_before_the_wait_is_kept(queue: Queue, settings: Settings) -> None:
    runs.clear()
    task = await queue.enqueue("approve", {})
    await queue.signal(task.id, "approval", "early")
    sent = await queue.send_signal(task.id, "approval", "early")
    assert sent.replayed
    with pytest.raises(Conflict, match="first payload stands"):
        await queue.signal(task.id, "approval", "other")
    async with running_worker(app, settings):
        done = await queue.wait(task.id, timeout_s=30)
    assert done.result == {"approved": "early"} and runs == [(1, "early")]


async def test_a_timeout_by_the_database_clock(
    queue: Queue, settings: Settings, conn: Conn
) -> None:
    runs.clear()
    async with running_worker(app, settings):
        task = await queue.enqueue("approve", {"timeout_s": 1.0})
        done = await queue.wait(task.id, timeout_s=60)
    assert (done.status, done.result) == (Status.COMPLETED, {"approved": False})
    assert runs == [(1, "timeout")]
    assert "wait_timed_out" in [e.event for e in await queue.events(task.id)]


async def test_psql_and_cli(queue: Queue, settings: Settings, conn: Conn) -> None:
    task = await queue.enqueue("approve", {})
    cur = await conn.execute("SELECT (pgqueue.signal(%s, 'approval', '{\"a\": 1}')).id", (task.id,))
    assert (await cur.fetchone()) == (task.id,)
    with pytest.raises(psycopg.errors.UniqueViolation):
        await conn.execute("SELECT pgqueue.signal(%s, 'approval', '2')", (task.id,))
    other = await queue.enqueue("approve", {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pgqueue", "signal", str(other.id), "approval", '{"b": 2}',
        env={**os.environ, "PGQUEUE_DSN": settings.dsn}, stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and str(other.id) in out.decode()
    cur = await conn.execute(
        "SELECT task_id, payload FROM pgqueue.signals ORDER BY sent_at, task_id"
    )
    assert {r[0]: r[1] for r in await cur.fetchall()} == {task.id: {"a": 1}, other.id: {"b": 2}}


async def test_waiting_tasks_hold_nothing(queue: Queue, settings: Settings, conn: Conn) -> None:
    """A waiting task holds no slot: a worker with one slot runs other work meanwhile."""
    runs.clear()
    async with running_worker(app, settings, concurrency=1):
        waits = [await queue.enqueue("approve", {}) for _ in range(3)]
        for t in waits:
            await wait_for(lambda t=t: status_of(queue, t.id, Status.WAITING), what="waiting")
        cur = await conn.execute("SELECT count(*), min(signal) FROM pgqueue.waiting_tasks")
        assert (await cur.fetchone()) == (3, "approval")
        for t in waits:
            await queue.signal(t.id, "approval", True)
        for t in waits:
            assert (await queue.wait(t.id, timeout_s=30)).status == Status.COMPLETED


async def test_signal_over_http(api: Api, queue: Queue) -> None:
    async with api.http(api.tokens.alice) as alice, api.http(api.tokens.bob) as bob:
        task = (await alice.post("/tasks", json={"kind": "approve"})).json()
        r = await bob.post(f"/tasks/{task['id']}/signal", json={"name": "approval"})
        assert r.status_code == 404
        r = await alice.post(f"/tasks/{task['id']}/signal", json={"name": "approval", "payload": 1})
        assert r.status_code == 202 and r.json()["id"] == task["id"]
        r = await alice.post(f"/tasks/{task['id']}/signal", json={"name": "approval", "payload": 1})
        assert r.status_code == 200 and r.headers["Signal-Replayed"] == "true"
        r = await alice.post(f"/tasks/{task['id']}/signal", json={"name": "approval", "payload": 2})
        assert r.status_code == 409 and "first payload" in r.json()["detail"]
        r = await alice.post(f"/tasks/{task['id']}/signal", json={"name": "bad name"})
        assert r.status_code == 400 and "name" in r.json()["detail"]
        await queue.cancel(task["id"])
        r = await alice.post(f"/tasks/{task['id']}/signal", json={"name": "late"})
        assert r.status_code == 409
        # Client.signal, and a remote worker's wait (POST /tasks/{id}/wait)
        runs.clear()
        async with api.client(api.tokens.alice) as client, api.client(api.tokens.worker) as wc:
            t2 = await client.submit("approve", {})
            remote = RemoteWorker(app, wc, concurrency=2, claim_wait_s=1.0)
            runner = asyncio.create_task(remote.run())
            try:
                await wait_for(lambda: status_of(queue, t2.id, Status.WAITING), what="waiting")
                await client.signal(t2.id, "approval", "remote")
                done = await client.wait(t2.id, timeout_s=30)
            finally:
                remote.stop()
                await asyncio.wait_for(runner, 30)
    assert done.result == {"approved": "remote"}


async def test_a_worker_killed_before_recording_the_wait(queue: Queue, settings: Settings) -> None:
    task = await queue.enqueue("crashy", {})
    first = worker_process(settings, "tests.workflows.crashapp:app")
    try:
        assert await asyncio.to_thread(first.wait, 60) == -os_signal.SIGKILL
    finally:
        first.kill()
    second = worker_process(settings, "tests.workflows.crashapp:app")  # its reaper finds it
    try:
        await wait_for(lambda: status_of(queue, task.id, Status.WAITING), timeout=90)
        await queue.signal(task.id, "go", "now")
        done = await queue.wait(task.id, timeout_s=60)
    finally:
        second.terminate()
        await asyncio.to_thread(second.wait, 30)
    # the crashed attempt counted (a stall), the wait gave its attempt back
    assert (done.status, done.result, done.attempts) == (Status.COMPLETED, "now", 2)


async def test_a_signal_sent_while_the_attempt_ends_is_not_missed(queue: Queue) -> None:
    """The signal lands after the handler looked for it and before the wait is recorded: the
    statement recording the wait sees it and the task is pending at once, attempt given back."""
    from pgqueue.db import transitions
    from pgqueue.outcomes import Waiting

    task = await queue.enqueue("approve", {}, max_retries=0)
    (claimed,) = await transitions.claim(queue.pool, "w1", ["default"], None, 1)
    await queue.signal(task.id, "approval", "meanwhile")  # the task is still running
    row = transitions.finish(task.id, claimed.attempts, "w1", Waiting("approval", 30.0))
    await transitions.finish_many(queue.pool, [row])
    got = await queue.get(task.id)
    assert (got.status, got.attempts, got.waiting_for) == (Status.PENDING, 0, None)
    assert [e.event for e in await queue.events(task.id)][-2:] == ["waiting", "signalled"]
