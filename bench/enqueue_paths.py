"""Keyed and unkeyed enqueue, one at a time and in bulk: `python3 bench/enqueue_paths.py DSN`.

The check that idempotency keys scoped by owner (SPEC §3) cost the enqueue paths nothing:
run it before and after a change, against the same server, and compare. Each round uses a new
migrated database; figures are medians over rounds, tasks/s, on stdout as one line each.
Uses the project's own venv (`.venv/bin/python bench/enqueue_paths.py DSN`).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgqueue.db.migrate import migrate
from pgqueue.db.pool import connect
from pgqueue.queue import Queue
from pgqueue.settings import Settings


async def fresh(server: str) -> tuple[str, str]:
    name = f"bench_paths_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(server, dbname=name)
    conn = await connect(dsn)
    async with conn:
        await migrate(conn)
    return name, dsn


def drop(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


async def single(q: Queue, n: int, keyed: bool) -> None:
    for i in range(n):
        key = {"idempotency_key": f"k-{i}"} if keyed else {}
        await q.enqueue("bench", {"i": i}, user_id=f"u{i % 10}", **key)


async def bulk(q: Queue, n: int, keyed: bool) -> None:
    rows = [
        {"kind": "bench", "payload": {"i": i}, "user_id": f"u{i % 10}"}
        | ({"idempotency_key": f"k-{i}"} if keyed else {})
        for i in range(n)
    ]
    await q.enqueue_many(rows)


async def measure(
    server: str, run: Callable[[Queue, int, bool], Awaitable[None]], n: int, keyed: bool
) -> float:
    name, dsn = await fresh(server)
    try:
        async with Queue(settings=Settings.from_env({}, dsn=dsn)) as q:
            await run(q, 50, keyed)  # warm the connection's plans
            start = time.perf_counter()
            await run(q, n, keyed)
            return n / (time.perf_counter() - start)
    finally:
        drop(server, name)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dsn", help="a server where bench_paths_* databases may be created")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--single", type=int, default=2000, help="tasks enqueued one by one")
    parser.add_argument("--bulk", type=int, default=20000, help="tasks in one enqueue_many")
    args = parser.parse_args()
    cases = [
        ("enqueue one by one, no key", single, args.single, False),
        ("enqueue one by one, keyed", single, args.single, True),
        ("enqueue_many, no key", bulk, args.bulk, False),
        ("enqueue_many, keyed", bulk, args.bulk, True),
    ]
    figures: dict[str, list[float]] = {label: [] for label, *_ in cases}
    for _ in range(args.rounds):  # interleaved, so a slow minute hits every case
        for label, run, n, keyed in cases:
            figures[label].append(await measure(args.dsn, run, n, keyed))
    for label, values in figures.items():
        print(
            f"{label}: {statistics.median(values):,.0f} tasks/s "
            f"(min {min(values):,.0f}, max {max(values):,.0f}, {len(values)} rounds)"
        )


if __name__ == "__main__":
    asyncio.run(main())
