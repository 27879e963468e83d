"""The worker in-process (SPEC §2): outcomes, retries, timeouts, cancel, wake-ups, shutdown."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.queue import Queue
from pgqueue.settings import Settings
from pgqueue.tasks import Status
from tests.helpers import counting_statements, fast_settings, running_worker, wait_for

app = pgqueue.App()
started: dict[str, asyncio.Event] = {}


class UnfixableError(Exception):
    pass


@app.task("echo")
async def echo(ctx: pgqueue.Context, payload: dict[str, Any]) -> dict[str, Any]:
    await ctx.progress(50, "halfway", data={"seen": payload})
    ctx.add_usage(input_tokens=1200, output_tokens=300, cost=0.004)
    return {"echo": payload, "attempt": ctx.attempt}


@app.task("flaky")
async def flaky(ctx: pgqueue.Context, payload: dict[str, Any]) -> str:
    ctx.add_usage(input_tokens=10)
    if ctx.attempt < payload["succeed_on"]:
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    return "finally"


@app.task("permanent")
async def permanent(ctx: pgqueue.Context, payload: dict[str, Any]) -> None:
    raise pgqueue.Permanent("bad address")


@app.task("listed", permanent=[UnfixableError])
async def listed(ctx: pgqueue.Context, payload: dict[str, Any]) -> None:
    raise UnfixableError("declared permanent by the handler")


@app.task("snooze")
async def snooze(ctx: pgqueue.Context, payload: dict[str, Any]) -> str:
    if ctx.attempt == 1:
        raise pgqueue.Retry("not yet", in_s=payload["in_s"])
    return "woke up"


@app.task("hang", timeout_s=0.3)
async def hang(ctx: pgqueue.Context, payload: dict[str, Any]) -> None:
    await asyncio.sleep(3600)


@app.task("block")
async def block(ctx: pgqueue.Context, payload: dict[str, Any]) -> str:
    started.setdefault(payload["name"], asyncio.Event()).set()
    await asyncio.sleep(payload.get("s", 3600))
    return "finished"


@app.task("sync")
def sync_handler(ctx: pgqueue.Context, payload: dict[str, Any]) -> int:
    time.sleep(0.01)  # a blocking call: runs in a thread, not on the loop
    return int(payload["n"]) * 2


@app.task("typed")
async def typed(ctx: pgqueue.Context, payload: dict[str, int]) -> int:
    return sum(payload.values())


@pytest.fixture
def fast(dsn: str) -> Settings:
    return fast_settings(dsn)


async def test_handler_result_progress_and_usage_are_recorded(queue: Queue, fast: Settings) -> None:
    async with running_worker(app, fast):
        task = await queue.enqueue("echo", {"x": 1})
        done = await queue.wait(task.id, timeout_s=10)
    assert done.status is Status.COMPLETED
    assert done.result == {"echo": {"x": 1}, "attempt": 1}
    assert done.progress == {"percent": 50, "message": "halfway", "data": {"seen": {"x": 1}}}
    assert done.usage == {"input_tokens": 1200, "output_tokens": 300, "cost": 0.004}
    assert done.worker_id is None and done.completed_at is not None
    assert [e.event for e in await queue.events(task.id)] == [
        "created",
        "started",
        "progress",
        "completed",
    ]


async def test_retries_with_backoff_then_success(queue: Queue, fast: Settings) -> None:
    async with running_worker(app, fast):
        task = await queue.enqueue("flaky", {"succeed_on": 3}, max_retries=3)
        done = await queue.wait(task.id, timeout_s=15)
    assert (done.status, done.attempts, done.result) == (Status.COMPLETED, 3, "finally")
    assert done.usage["input_tokens"] == 30  # summed over attempts
    events = await queue.events(task.id)
    retries = [e for e in events if e.event == "retry_scheduled"]
    assert len(retries) == 2
    assert retries[0].data["error"]["message"] == "attempt 1 fails"


async def test_exhausted_retries_end_failed(queue: Queue, fast: Settings) -> None:
    async with running_worker(app, fast):
        task = await queue.enqueue("flaky", {"succeed_on": 99}, max_retries=2)
        done = await queue.wait(task.id, timeout_s=15)
    assert (done.status, done.attempts) == (Status.FAILED, 3)  # max_retries + 1 starts
    assert done.error is not None
    assert done.error["type"] == "RuntimeError" and done.error["retryable"] is True
    assert "Traceback" in done.error["traceback"]


async def test_backoff_delays_the_next_attempt(queue: Queue, dsn: str) -> None:
    settings = fast_settings(dsn, backoff_base_s=1.0, backoff_max_s=1.0)
    async with running_worker(app, settings):
        task = await queue.enqueue("flaky", {"succeed_on": 2})
        await wait_for(lambda: _status(queue, task.id, Status.PENDING, attempts=1), what="retry")
        pending = await queue.get(task.id)
        delay = (pending.run_at - pending.updated_at).total_seconds()
        assert 0.75 <= delay <= 1.25  # 1 s with +/- 25 % jitter, by the database clock
        done = await queue.wait(task.id, timeout_s=10)
    assert done.status is Status.COMPLETED


@pytest.mark.parametrize("kind", ["permanent", "listed"])
async def test_permanent_errors_are_not_retried(queue: Queue, fast: Settings, kind: str) -> None:
    async with running_worker(app, fast):
        task = await queue.enqueue(kind, max_retries=5)
        done = await queue.wait(task.id, timeout_s=10)
    assert (done.status, done.attempts) == (Status.FAILED, 1)
    assert done.error is not None and done.error["retryable"] is False


async def test_invalid_payload_is_permanent(queue: Queue, fast: Settings) -> None:
    async with running_worker(app, fast):
        good = await queue.enqueue("typed", {"a": 1, "b": 2})
        bad = await queue.enqueue("typed", {"a": "not a number"})
        assert (await queue.wait(good.id, timeout_s=10)).result == 3
        failed = await queue.wait(bad.id, timeout_s=10)
    assert (failed.status, failed.attempts) == (Status.FAILED, 1)
    assert failed.error is not None and failed.error["type"] == "invalid_payload"


async def test_retry_snoozes_for_the_asked_delay(queue: Queue, fast: Settings) -> None:
    async with running_worker(app, fast):
        task = await queue.enqueue("snooze", {"in_s": 1.0})
        await wait_for(lambda: _status(queue, task.id, Status.PENDING, attempts=1), what="snooze")
        snoozed = await queue.get(task.id)
        assert abs((snoozed.run_at - snoozed.updated_at).total_seconds() - 1.0) < 0.05
        done = await queue.wait(task.id, timeout_s=10)
    assert (done.status, done.result, done.attempts) == (Status.COMPLETED, "woke up", 2)


async def test_timeout_is_a_retryable_failure(queue: Queue, fast: Settings) -> None:
    async with running_worker(app, fast):
        task = await queue.enqueue("hang", max_retries=1)
        done = await queue.wait(task.id, timeout_s=15)
    assert (done.status, done.attempts) == (Status.FAILED, 2)
    assert done.error is not None and done.error["type"] == "timeout"
    events = [e.event for e in await queue.events(task.id)]
    assert events.count("retry_scheduled") == 1


async def test_task_timeout_overrides_none(queue: Queue, fast: Settings) -> None:
    async with running_worker(app, fast):
        task = await queue.enqueue("block", {"name": "t-timeout"}, timeout_s=0.2, max_retries=0)
        done = await queue.wait(task.id, timeout_s=10)
    assert done.status is Status.FAILED and done.error is not None
    assert done.error["type"] == "timeout"


async def test_sync_handlers_run_in_threads(queue: Queue, fast: Settings) -> None:
    async with running_worker(app, fast, concurrency=5):
        tasks = await queue.enqueue_many([{"kind": "sync", "payload": {"n": i}} for i in range(10)])
        results = [(await queue.wait(t.id, timeout_s=10)).result for t in tasks]
    assert results == [i * 2 for i in range(10)]


async def test_cancel_pending_and_running(queue: Queue, fast: Settings) -> None:
    pending = await queue.enqueue("block", {"name": "never"}, delay_s=3600)
    cancelled = await queue.cancel(pending.id)
    assert cancelled.status is Status.CANCELLED
    async with running_worker(app, fast):
        task = await queue.enqueue("block", {"name": "cancel-me"})
        await wait_for(lambda: _status(queue, task.id, Status.RUNNING), what="start")
        flagged = await queue.cancel(task.id)
        assert flagged.cancel_requested and flagged.status is Status.RUNNING
        done = await queue.wait(task.id, timeout_s=10)
    assert done.status is Status.CANCELLED
    events = await queue.events(task.id)
    assert [e.event for e in events[-2:]] == ["cancel_requested", "cancelled"]
    # told through NOTIFY, not the heartbeat poll: stopped well within a second (database clock)
    assert (events[-1].at - events[-2].at).total_seconds() < 1.0


async def test_wakeup_within_a_second_of_a_plain_sql_insert(
    queue: Queue, fast: Settings, conn: psycopg.AsyncConnection[Any]
) -> None:
    settings = fast_settings(fast.dsn, poll_s=30.0)  # a poll cannot be what wakes it
    async with running_worker(app, settings):
        await asyncio.sleep(0.2)  # let the worker go idle
        await conn.execute("INSERT INTO pgqueue.tasks (kind, payload) VALUES ('echo', '{}')")
        task = (await queue.list()).items[0]
        done = await queue.wait(task.id, timeout_s=10)
    assert done.status is Status.COMPLETED
    assert done.started_at is not None
    assert (done.started_at - done.created_at).total_seconds() < 1.0


async def test_future_task_starts_when_due_without_notify(queue: Queue, fast: Settings) -> None:
    settings = fast_settings(fast.dsn, poll_s=30.0)
    async with running_worker(app, settings):
        await asyncio.sleep(0.3)  # the scenario: an idle worker, asleep until its 30 s poll
        task = await queue.enqueue("echo", {}, delay_s=1.0)
        done = await queue.wait(task.id, timeout_s=10)
    assert done.started_at is not None
    late = (done.started_at - done.run_at).total_seconds()
    assert 0 <= late < 1.0  # the worker slept until run_at, not until the next poll


async def test_an_idle_worker_asks_when_the_next_task_is_due_only_after_a_change(
    queue: Queue, fast: Settings
) -> None:
    """It polls (a claim every poll_s: the fallback for a missed NOTIFY) but keeps the
    next-due probe's answer until a wake-up says something changed; then it asks again and
    still starts the new task when due."""
    with counting_statements(fast.dsn) as counter:
        settings = fast_settings(counter.dsn, poll_s=0.2, heartbeat_s=5.0, stall_s=15.0, reap_s=5.0)
        async with running_worker(app, settings):
            await asyncio.sleep(0.5)  # idle: claimed nothing, asked once
            total0, texts0 = counter.snapshot()
            await asyncio.sleep(2.0)
            total1, texts1 = counter.snapshot()
            task = await queue.enqueue("echo", {}, delay_s=0.5)  # NOTIFY: ask again
            done = await queue.wait(task.id, timeout_s=10)
            _, texts2 = counter.snapshot()
    probes = sum(n for text, n in (texts1 - texts0).items() if text.startswith("SELECT least("))
    assert probes == 0
    assert total1 - total0 >= 5  # ~10 claims in 2 s: it still polls
    assert sum(n for text, n in (texts2 - texts1).items() if text.startswith("SELECT least(")) >= 1
    assert done.started_at is not None
    assert 0 <= (done.started_at - done.run_at).total_seconds() < 1.0


async def test_a_task_made_due_sooner_without_a_notify_starts_within_the_poll(
    queue: Queue, fast: Settings, conn: psycopg.AsyncConnection[Any]
) -> None:
    """The idle worker's remembered next-due time only wakes it sooner: a task an operator
    moves forward in psql (no event, so no NOTIFY) is still claimed by the next poll."""
    settings = fast_settings(fast.dsn, poll_s=1.0)
    async with running_worker(app, settings):
        task = await queue.enqueue("echo", {}, delay_s=3600)  # remembered: due in an hour
        await asyncio.sleep(0.5)
        await conn.execute(
            "UPDATE pgqueue.tasks SET run_at = now() + interval '200 ms' WHERE id = %s",
            (task.id,),
        )
        done = await queue.wait(task.id, timeout_s=10)
    assert done.status is Status.COMPLETED and done.started_at is not None
    # within the 1 s poll (and slack for a busy machine), not the hour it was remembered as
    assert (done.started_at - done.run_at).total_seconds() < 2.0


async def test_graceful_shutdown_releases_unfinished_tasks(queue: Queue, dsn: str) -> None:
    settings = fast_settings(dsn, shutdown_grace_s=0.5)
    async with running_worker(app, settings) as worker:
        quick = await queue.enqueue("block", {"name": "quick", "s": 0.1})
        slow = await queue.enqueue("block", {"name": "slow"})
        await wait_for(lambda: _status(queue, slow.id, Status.RUNNING), what="start")
        await wait_for(lambda: _status(queue, quick.id, Status.COMPLETED), what="quick")
        worker_id = worker.id
    released = await queue.get(slow.id)
    assert (released.status, released.attempts, released.worker_id) == (Status.PENDING, 0, None)
    assert [e.event for e in await queue.events(slow.id)][-1] == "requeued"
    async with queue.pool.connection() as c:
        cur = await c.execute("SELECT count(*) FROM pgqueue.workers WHERE id = %s", (worker_id,))
        assert await cur.fetchone() == (0,)


async def test_workers_only_claim_kinds_they_handle(queue: Queue, fast: Settings) -> None:
    other = pgqueue.App()

    @other.task("only.here")
    async def only_here(ctx: pgqueue.Context, payload: Any) -> str:
        return "here"

    async with running_worker(app, fast), running_worker(other, fast):
        a = await queue.enqueue("only.here")
        b = await queue.enqueue("echo")
        assert (await queue.wait(a.id, timeout_s=10)).result == "here"
        assert (await queue.wait(b.id, timeout_s=10)).status is Status.COMPLETED


async def _status(queue: Queue, task_id: Any, status: Status, attempts: int | None = None) -> bool:
    task = await queue.get(task_id)
    return task.status is status and (attempts is None or task.attempts == attempts)


@app.task("sync.progress")
def sync_progress(ctx: pgqueue.Context, payload: dict[str, Any]) -> str:
    ctx.progress_sync(40, "from a thread")
    ctx.checkpoint_sync("t", {"n": 1})
    return "ok"


async def test_sync_handlers_report_progress_and_checkpoints(queue: Queue, fast: Settings) -> None:
    async with running_worker(app, fast):
        task = await queue.enqueue("sync.progress")
        done = await queue.wait(task.id, timeout_s=10)
    assert done.result == "ok"
    assert done.progress == {"percent": 40, "message": "from a thread"}
    assert done.checkpoint is not None and done.checkpoint["data"] == {"n": 1}


async def test_queue_applies_the_handlers_defaults(dsn: str) -> None:
    defaults = pgqueue.App()

    @defaults.task("mail", queue="emails", max_retries=7, timeout_s=12)
    async def mail(ctx: pgqueue.Context, payload: Any) -> None:
        return None

    async with Queue(settings=Settings.from_env({}, dsn=dsn), app=defaults) as q:
        task = await q.enqueue("mail", {"to": "x"})
        explicit = await q.enqueue("mail", {"to": "y"}, queue="urgent", max_retries=1)
        (batched,) = await q.enqueue_many([{"kind": "mail"}])
    assert (task.queue, task.max_retries, task.timeout_s) == ("emails", 7, 12)
    assert (explicit.queue, explicit.max_retries) == ("urgent", 1)
    assert batched.queue == "emails"


@app.task("nul")
async def nul(ctx: pgqueue.Context, payload: dict[str, Any]) -> str:
    return "a\u0000b"  # valid JSON, refused by jsonb


async def test_an_unstorable_result_fails_only_its_task(queue: Queue, fast: Settings) -> None:
    async with running_worker(app, fast):
        bad = await queue.enqueue("nul")
        good = await queue.enqueue("echo", {"ok": True})
        failed = await queue.wait(bad.id, timeout_s=10)
        done = await queue.wait(good.id, timeout_s=10)
    assert failed.status is Status.FAILED
    assert failed.error is not None and failed.error["type"] == "unrecordable_outcome"
    assert done.status is Status.COMPLETED


async def test_a_running_worker_fires_due_schedules(
    queue: Queue, fast: Settings, conn: psycopg.AsyncConnection[Any]
) -> None:
    """The scheduler runs inside every worker: a due schedule becomes a task that runs."""
    from pgqueue.schedules.service import Schedules

    schedules = Schedules(queue.pool, fast)
    await schedules.create(
        {"name": "nightly", "cron": "0 3 * * *", "task": {"kind": "echo", "payload": {"n": 1}}}
    )
    # it is "3 am" now: the slot is due (as after a night of downtime)
    await conn.execute("UPDATE pgqueue.schedules SET next_fire_at = now() - interval '1 minute'")
    async with running_worker(app, fast):

        async def fired() -> list[Any]:
            return [
                t for t in (await queue.list(kind="echo")).items if t.status is Status.COMPLETED
            ]

        (task,) = await wait_for(fired, timeout=20, what="the schedule's task to run")
    assert task.payload == {"n": 1}
    assert "schedule:nightly" in task.tags
    cur = await conn.execute(
        "SELECT task_id FROM pgqueue.schedule_fires WHERE schedule = 'nightly'"
    )
    assert await cur.fetchall() == [(task.id,)]  # de-duplicated where no producer writes


async def test_a_limited_queue_moves_on_as_soon_as_a_slot_commits(
    queue: Queue, fast: Settings, conn: psycopg.AsyncConnection[Any]
) -> None:
    """With limit 1 the next task starts when the previous completion commits, not at a poll."""
    await conn.execute("SELECT pgqueue.set_queue_limit('default', 1)")
    settings = fast_settings(fast.dsn, poll_s=30.0)
    async with running_worker(app, settings, concurrency=4):
        tasks = await queue.enqueue_many([{"kind": "echo", "payload": {"i": i}} for i in range(3)])
        done = [await queue.wait(t.id, timeout_s=10) for t in tasks]
    assert [t.status for t in done] == [Status.COMPLETED] * 3
    # One at a time, by the audit trail: a claim waits for the queue's lock, so its event is
    # written after the previous completion's. (started_at/completed_at are transaction start
    # times and may overlap even when the limit held.)
    cur = await conn.execute(
        "SELECT event FROM pgqueue.events WHERE event IN ('started', 'completed') ORDER BY id"
    )
    running, most = 0, 0
    for (event,) in await cur.fetchall():
        running += 1 if event == "started" else -1
        most = max(most, running)
    assert most == 1


@app.task("child.double")
async def child_double(ctx: pgqueue.Context, payload: dict[str, Any]) -> int:
    return int(payload["n"]) * 2


@app.task("parent.fanout")
async def parent_fanout(ctx: pgqueue.Context, payload: dict[str, Any]) -> int:
    if ctx.checkpoint_token != "spawned":  # a retried parent must not spawn twice
        for n in payload["numbers"]:
            await ctx.enqueue("child.double", {"n": n})
        await ctx.checkpoint("spawned")
    children = await ctx.wait_children(timeout_s=20)
    assert all(c.status is Status.COMPLETED for c in children)
    return sum(c.result for c in children)


async def test_a_parent_enqueues_children_and_waits_for_them(queue: Queue, fast: Settings) -> None:
    async with running_worker(app, fast, concurrency=5):
        parent = await queue.enqueue("parent.fanout", {"numbers": [1, 2, 3]}, user_id="alice")
        done = await queue.wait(parent.id, timeout_s=30)
    assert (done.status, done.result) == (Status.COMPLETED, 12)
    children = (await queue.list(parent_id=parent.id)).items
    assert sorted(c.payload["n"] for c in children) == [1, 2, 3]
    assert {c.user_id for c in children} == {"alice"}  # children belong to the parent's owner


@app.task("noop")
async def noop(ctx: pgqueue.Context, payload: Any) -> None:
    return None


async def test_claims_wait_for_outcomes_to_be_written(
    queue: Queue, conn: psycopg.AsyncConnection[Any], settings: Settings
) -> None:
    """A worker whose outcomes are slow to record stops claiming: the database never holds
    more than twice its concurrency as running. (Claiming on every finished handler, 27,500
    of 40,000 no-ops were "running" at once and the reaper requeued finished tasks.)"""
    # Recording a completion costs 2 ms a row here, claiming stays fast.
    await conn.execute(
        """CREATE FUNCTION slow_completion() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN PERFORM pg_sleep(0.002); RETURN NEW; END $$;
           CREATE TRIGGER slow_completion BEFORE UPDATE ON pgqueue.tasks FOR EACH ROW
               WHEN (NEW.status = 'completed') EXECUTE FUNCTION slow_completion();"""
    )
    await queue.enqueue_many([{"kind": "noop"} for _ in range(1000)])
    most = 0
    async with running_worker(app, fast_settings(settings.dsn, stall_s=30.0), concurrency=20):

        async def drained() -> bool:
            nonlocal most
            cur = await conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'running'),"
                "       count(*) FILTER (WHERE status = 'completed') FROM pgqueue.tasks"
            )
            row = await cur.fetchone()
            assert row is not None
            most = max(most, row[0])
            return bool(row[1] == 1000)

        await wait_for(drained, timeout=120, interval=0.01, what="1,000 tasks completed")
    assert 0 < most <= 40
    cur = await conn.execute("SELECT count(*) FROM pgqueue.events WHERE event = 'requeued'")
    assert await cur.fetchone() == (0,)


async def test_heartbeats_keep_a_task_longer_than_the_stall_time(
    queue: Queue, conn: psycopg.AsyncConnection[Any], dsn: str
) -> None:
    settings = fast_settings(dsn, heartbeat_s=0.3, stall_s=1.5, reap_s=0.3)
    async with running_worker(app, settings):
        task = await queue.enqueue("block", {"name": "long", "s": 3.0})
        done = await queue.wait(task.id, timeout_s=30)
    assert (done.status, done.attempts) == (Status.COMPLETED, 1)
    cur = await conn.execute("SELECT count(*) FROM pgqueue.events WHERE event = 'requeued'")
    assert await cur.fetchone() == (0,)
