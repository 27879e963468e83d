"""The worker core's edges, for real: one LISTEN connection per process (SPEC §2, issue 10),
shared by the worker and the Queue its handlers use; channels added at run time."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

import pgqueue
from pgqueue.db.listener import Listener
from pgqueue.queue import Queue
from pgqueue.tasks import Status
from tests.helpers import fast_settings, running_worker, wait_for

Conn = psycopg.AsyncConnection[Any]

app = pgqueue.App()
waiting = asyncio.Event()
release = asyncio.Event()


@app.task("core.child")
async def child(ctx: pgqueue.Context, payload: Any) -> str:
    await release.wait()
    return "done"


@app.task("core.parent")
async def parent(ctx: pgqueue.Context, payload: Any) -> int:
    await ctx.enqueue("core.child", {})
    waiting.set()
    children = await ctx.wait_children(timeout_s=30)
    return len(children)


async def listen_backends(conn: Conn, channel: str = "") -> int:
    """Connections to this test's database whose last statement was a LISTEN (on channel)."""
    cur = await conn.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query ILIKE 'LISTEN %%' || %s || '%%'",
        (channel,),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_wait_children_shares_the_workers_listen_connection(
    queue: Queue, conn: Conn, dsn: str
) -> None:
    waiting.clear()
    release.clear()
    async with running_worker(app, fast_settings(dsn), concurrency=2):
        task = await queue.enqueue("core.parent")
        await asyncio.wait_for(waiting.wait(), 20)

        async def listening_for_events() -> int:
            return await listen_backends(conn, "pgqueue_events")

        await wait_for(listening_for_events, what="a LISTEN on pgqueue_events")
        assert await listen_backends(conn) == 1
        release.set()
        done = await queue.wait(task.id, timeout_s=30)
    assert (done.status, done.result) == (Status.COMPLETED, 1)


async def test_channels_are_added_at_run_time_on_one_connection(dsn: str, conn: Conn) -> None:
    listener = Listener(dsn)
    await listener.start()
    try:
        got: dict[str, list[str]] = {"one": [], "two": []}
        listener.subscribe("one", got["one"].append)
        await listener.listen("one")
        await conn.execute("NOTIFY one, 'a'")
        listener.subscribe("two", got["two"].append)
        await listener.listen("two")
        await conn.execute("NOTIFY two, 'b'")
        await conn.execute("NOTIFY one, 'c'")

        async def delivered() -> bool:
            return got == {"one": ["a", "c"], "two": ["b"]}

        await wait_for(delivered, what="notifications on both channels")
        assert await listen_backends(conn) == 1
    finally:
        await listener.stop()
