"""``pgqueue.purge()``: finished tasks older than the cut go with their events; live ones stay."""

from __future__ import annotations

from typing import Any

import psycopg

from pgqueue.queue import Queue
from tests.sql.claiming import claim, complete


async def test_purge_leaves_live_tasks_alone(
    queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    done = await queue.enqueue("k", {"n": 1})
    pending = await queue.enqueue("other", {"n": 2})
    (claimed,) = await claim(conn, limit=1)
    assert len(await complete(queue, claimed)) == 1
    running = await queue.enqueue("k", {"n": 3})
    await claim(conn, limit=1)
    await conn.execute(
        "UPDATE pgqueue.tasks SET completed_at = now() - interval '8 days' WHERE id = %s",
        (done.id,),
    )
    cur = await conn.execute("SELECT pgqueue.purge(interval '7 days')")
    assert await cur.fetchone() == (1,)
    left = {t.id for t in (await queue.list()).items}
    assert left == {pending.id, running.id}
    assert await queue.events(done.id) == []
