"""Schedules against a real database: management, exactly-once firing, missed fires.

The clock is injected (``fire_due_schedules(now=...)``), so a day of minutes is tested in
milliseconds; one test runs the real loop against the database clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from pgqueue.db.pool import connect, create_pool
from pgqueue.errors import Conflict, InvalidInput, NotFound
from pgqueue.queue import Queue
from pgqueue.schedules import Schedules, fire_due_schedules, run_scheduler
from pgqueue.schedules.scheduler import scheduler_pass
from pgqueue.settings import Settings
from tests.helpers import counting_statements, wait_for

T0 = datetime(2030, 1, 1, 0, 0, tzinfo=UTC)  # a fixed "now", far from the real clock


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[AsyncConnectionPool]:
    p = create_pool(dsn, max_size=8)
    await p.open(wait=True)
    yield p
    await p.close()


@pytest.fixture
def schedules(pool: AsyncConnectionPool, settings: Settings) -> Schedules:
    return Schedules(pool, settings)


async def set_next(conn: psycopg.AsyncConnection[Any], name: str, at: datetime) -> None:
    await conn.execute("UPDATE pgqueue.schedules SET next_fire_at = %s WHERE name = %s", (at, name))


async def scheduled_tasks(conn: psycopg.AsyncConnection[Any], name: str) -> list[tuple[Any, ...]]:
    """(slot, kind, payload, queue) of each task the schedule made, from its fire records."""
    # one statement, one snapshot: a fire committing meanwhile cannot split the two counts
    cur = await conn.execute(
        "SELECT f.fire_at, t.kind, t.payload, t.queue FROM pgqueue.tasks t"
        " LEFT JOIN pgqueue.schedule_fires f ON f.task_id = t.id AND f.schedule = %s"
        " WHERE %s = ANY(t.tags) ORDER BY t.seq",
        (name, f"schedule:{name}"),
    )
    rows = await cur.fetchall()
    assert all(row[0] is not None for row in rows), rows  # every task has its fire record
    return rows


async def test_create_validates_and_computes_next_fire(
    schedules: Schedules, conn: psycopg.AsyncConnection[Any]
) -> None:
    made = await schedules.create(
        {
            "name": "nightly",
            "cron": "0  3 * * *",
            "timezone": "Europe/Paris",
            "task": {"kind": "report.build", "payload": {"x": 1}, "queue": "reports"},
        }
    )
    assert made.cron == "0 3 * * *"
    assert made.enabled and made.last_fire_at is None
    cur = await conn.execute("SELECT now()")
    row = await cur.fetchone()
    assert row is not None
    assert row[0] < made.next_fire_at <= row[0] + timedelta(days=1)
    assert made.next_fire_at.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris")).hour == 3
    assert [s.name for s in await schedules.list()] == ["nightly"]
    with pytest.raises(Conflict):
        await schedules.create({"name": "nightly", "cron": "* * * * *", "task": {"kind": "k"}})


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"name": "bad name!", "cron": "* * * * *", "task": {"kind": "k"}}, "name"),
        ({"name": "a", "cron": "every day", "task": {"kind": "k"}}, "cron"),
        (
            {"name": "a", "cron": "* * * * *", "timezone": "Nowhere/X", "task": {"kind": "k"}},
            "timezone",
        ),
        ({"name": "a", "cron": "* * * * *", "task": {"payload": {}}}, "task.kind"),
        (
            {"name": "a", "cron": "* * * * *", "task": {"kind": "k", "priority": 5000}},
            "task.priority",
        ),
        (
            {"name": "a", "cron": "* * * * *", "task": {"kind": "k", "idempotency_key": "x"}},
            "task.idempotency_key",
        ),
        ({"name": "a", "cron": "* * * * *", "task": {"kind": "k"}, "colour": "red"}, "colour"),
    ],
)
async def test_create_rejects_invalid_input_naming_the_field(
    schedules: Schedules, spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        await schedules.create(spec)
    assert info.value.field == field


async def test_fires_once_per_slot_and_advances(
    schedules: Schedules, conn: psycopg.AsyncConnection[Any]
) -> None:
    await schedules.create(
        {"name": "every5", "cron": "*/5 * * * *", "task": {"kind": "tick", "payload": {"n": 1}}}
    )
    await set_next(conn, "every5", T0)
    assert await fire_due_schedules(conn, now=T0 - timedelta(seconds=1)) == 0
    assert await fire_due_schedules(conn, now=T0) == 1
    assert await fire_due_schedules(conn, now=T0 + timedelta(minutes=4)) == 0  # not due yet
    assert await fire_due_schedules(conn, now=T0 + timedelta(minutes=5)) == 1
    got = await schedules.get("every5")
    assert got.last_fire_at == T0 + timedelta(minutes=5)
    assert got.next_fire_at == T0 + timedelta(minutes=10)
    tasks = await scheduled_tasks(conn, "every5")
    assert [t[0] for t in tasks] == [T0, T0 + timedelta(minutes=5)]
    assert all(t[1:] == ("tick", {"n": 1}, "default") for t in tasks)
    assert got.last_task_id is not None


async def test_missed_fires_after_downtime_fire_once(
    schedules: Schedules, conn: psycopg.AsyncConnection[Any]
) -> None:
    await schedules.create({"name": "minutely", "cron": "* * * * *", "task": {"kind": "tick"}})
    await set_next(conn, "minutely", T0)
    # Down for three hours and a half: 210 slots missed.
    back = T0 + timedelta(hours=3, minutes=30, seconds=20)
    assert await fire_due_schedules(conn, now=back) == 1
    assert await fire_due_schedules(conn, now=back) == 0
    got = await schedules.get("minutely")
    assert got.next_fire_at == T0 + timedelta(hours=3, minutes=31)  # the next slot after now
    assert len(await scheduled_tasks(conn, "minutely")) == 1


async def test_two_schedulers_racing_fire_each_slot_exactly_once(
    dsn: str, schedules: Schedules, conn: psycopg.AsyncConnection[Any]
) -> None:
    names = [f"s{i}" for i in range(30)]
    for name in names:
        await schedules.create({"name": name, "cron": "* * * * *", "task": {"kind": "tick"}})
        await set_next(conn, name, T0)
    racers = [await connect(dsn) for _ in range(4)]
    try:
        total = 0
        for minute in range(20):
            now = T0 + timedelta(minutes=minute)
            counts = await asyncio.gather(*(fire_due_schedules(c, now=now) for c in racers))
            assert sum(counts) == len(names), (minute, counts)
            total += sum(counts)
    finally:
        for c in racers:
            await c.close()
    cur = await conn.execute(
        "SELECT count(*), count(DISTINCT (f.schedule, f.fire_at)) FROM pgqueue.tasks t"
        " JOIN pgqueue.schedule_fires f ON f.task_id = t.id WHERE t.kind = 'tick'"
    )
    assert await cur.fetchone() == (total, total)
    assert total == 30 * 20


async def test_the_fire_record_guards_a_rewound_schedule(
    schedules: Schedules, conn: psycopg.AsyncConnection[Any]
) -> None:
    """An operator resetting next_fire_at to a slot already fired gets no second task."""
    await schedules.create({"name": "daily", "cron": "0 0 * * *", "task": {"kind": "tick"}})
    await set_next(conn, "daily", T0)
    assert await fire_due_schedules(conn, now=T0) == 1
    first = (await schedules.get("daily")).last_task_id
    await set_next(conn, "daily", T0)
    assert await fire_due_schedules(conn, now=T0) == 0
    assert len(await scheduled_tasks(conn, "daily")) == 1
    got = await schedules.get("daily")
    assert got.next_fire_at == T0 + timedelta(days=1) and got.last_task_id == first


async def test_a_producer_cannot_pre_empt_a_fire_with_the_old_key(
    schedules: Schedules, conn: psycopg.AsyncConnection[Any], queue: Queue
) -> None:
    """Issue 9 #2: planting a task with the predictable key `schedule:<name>:<slot>` (the
    scheduler's de-duplication before) no longer suppresses or hijacks the fire: fires are
    de-duplicated in pgqueue.schedule_fires, which producers cannot write."""
    await schedules.create(
        {"name": "nightly", "cron": "0 0 * * *", "task": {"kind": "tick", "user_id": "root"}}
    )
    await set_next(conn, "nightly", T0)
    for owner in (None, "root", "mallory"):
        await queue.enqueue(
            "evil", idempotency_key=f"schedule:nightly:{T0.isoformat()}", user_id=owner
        )
    assert await fire_due_schedules(conn, now=T0) == 1
    got = await schedules.get("nightly")
    cur = await conn.execute(
        "SELECT kind, user_id FROM pgqueue.tasks WHERE id = %s", (got.last_task_id,)
    )
    assert await cur.fetchone() == ("tick", "root")
    assert len(await scheduled_tasks(conn, "nightly")) == 1


async def test_pause_resume_update_and_delete(
    schedules: Schedules, conn: psycopg.AsyncConnection[Any]
) -> None:
    await schedules.create({"name": "p", "cron": "* * * * *", "task": {"kind": "tick"}})
    await set_next(conn, "p", T0)
    paused = await schedules.pause("p")
    assert not paused.enabled
    assert await fire_due_schedules(conn, now=T0 + timedelta(hours=1)) == 0
    resumed = await schedules.resume("p")
    # Resuming restarts from now (the database clock): what was missed while paused is not fired.
    cur = await conn.execute("SELECT now()")
    row = await cur.fetchone()
    assert row is not None
    assert resumed.enabled and row[0] < resumed.next_fire_at <= row[0] + timedelta(minutes=1)

    changed = await schedules.update("p", {"cron": "0 12 * * 1", "task": {"kind": "other"}})
    assert changed.cron == "0 12 * * 1" and changed.task == {"kind": "other"}
    assert changed.next_fire_at.weekday() == 0 and changed.next_fire_at.hour == 12
    with pytest.raises(InvalidInput) as info:
        await schedules.update("p", {"timezone": "Bad/Zone"})
    assert info.value.field == "timezone"
    await schedules.delete("p")
    with pytest.raises(NotFound):
        await schedules.get("p")
    with pytest.raises(NotFound):
        await schedules.delete("p")
    with pytest.raises(NotFound):
        await schedules.pause("p")


async def test_a_template_the_database_refuses_does_not_block_other_schedules(
    schedules: Schedules, conn: psycopg.AsyncConnection[Any]
) -> None:
    await schedules.create({"name": "good", "cron": "* * * * *", "task": {"kind": "tick"}})
    await schedules.create({"name": "broken", "cron": "* * * * *", "task": {"kind": "tick"}})
    # An operator edits the template in psql into something no enqueue accepts.
    await conn.execute(
        """UPDATE pgqueue.schedules SET task = '{"kind": "tick", "queue": "bad queue!"}'"""
        " WHERE name = 'broken'"
    )
    await conn.execute("UPDATE pgqueue.schedules SET next_fire_at = %s", (T0,))
    assert await fire_due_schedules(conn, now=T0) == 1
    assert len(await scheduled_tasks(conn, "good")) == 1
    broken = await schedules.get("broken")
    assert broken.next_fire_at > T0  # advanced anyway: it does not fail on every pass


async def test_run_scheduler_fires_by_the_database_clock(
    pool: AsyncConnectionPool, schedules: Schedules, conn: psycopg.AsyncConnection[Any], dsn: str
) -> None:
    await schedules.create({"name": "live", "cron": "* * * * *", "task": {"kind": "tick"}})
    await conn.execute("UPDATE pgqueue.schedules SET next_fire_at = now() + interval '200 ms'")
    stop = asyncio.Event()
    settings = Settings.from_env({}, dsn=dsn, poll_s=0.2)
    runners = [asyncio.create_task(run_scheduler(pool, settings, stop)) for _ in range(3)]

    async def fired() -> bool:
        return len(await scheduled_tasks(conn, "live")) >= 1

    await wait_for(fired, timeout=30, what="the schedule to fire")
    stop.set()
    await asyncio.wait_for(asyncio.gather(*runners), timeout=10)
    assert len(await scheduled_tasks(conn, "live")) == 1


async def test_an_idle_pass_is_one_statement_and_a_due_one_fires(
    schedules: Schedules, conn: psycopg.AsyncConnection[Any], settings: Settings
) -> None:
    await schedules.create({"name": "later", "cron": "0 3 * * *", "task": {"kind": "tick"}})
    with counting_statements(settings.dsn) as counter:
        counted = create_pool(counter.dsn, max_size=2)
        await counted.open(wait=True)
        try:
            before, _ = counter.snapshot()
            sleep_s = await scheduler_pass(counted, settings)
            after, texts = counter.snapshot()
            assert after - before == 1, texts  # "when is the next one due?" and nothing else
            assert 0 < sleep_s <= 30
            assert await scheduled_tasks(conn, "later") == []
            await conn.execute("UPDATE pgqueue.schedules SET next_fire_at = now()")
            sleep_s = await scheduler_pass(counted, settings)
        finally:
            await counted.close()
    assert len(await scheduled_tasks(conn, "later")) == 1
    assert 0 < sleep_s <= 30
