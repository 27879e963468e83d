"""Keyed and unkeyed enqueue, one at a time and in bulk: `python3 bench/enqueue_paths.py DSN`.

The check that idempotency keys scoped by owner (SPEC §3) cost the enqueue paths nothing:
run it before and after a change, against the same server, and compare. Each round uses a new
migrated database and times the work in chunks (100 single enqueues, or one enqueue_many of
2,000); a line on stdout per case gives the median chunk rate and the best chunk rate, in
tasks/s, over all rounds. On a shared machine the best chunk is the steadier figure: other
load only ever slows a chunk down. Uses the project's own venv
(`.venv/bin/python bench/enqueue_paths.py DSN`).
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


async def single(q: Queue, start: int, n: int, keyed: bool) -> None:
    for i in range(start, start + n):
        key = {"idempotency_key": f"k-{i}"} if keyed else {}
        await q.enqueue("bench", {"i": i}, user_id=f"u{i % 10}", **key)


async def bulk(q: Queue, start: int, n: int, keyed: bool) -> None:
    rows = [
        {"kind": "bench", "payload": {"i": i}, "user_id": f"u{i % 10}"}
        | ({"idempotency_key": f"k-{i}"} if keyed else {})
        for i in range(start, start + n)
    ]
    await q.enqueue_many(rows)


async def measure(
    server: str,
    run: Callable[[Queue, int, int, bool], Awaitable[None]],
    chunk: int,
    chunks: int,
    keyed: bool,
) -> list[float]:
    """Rates (tasks/s) of each chunk, in a new database."""
    name, dsn = await fresh(server)
    try:
        async with Queue(settings=Settings.from_env({}, dsn=dsn)) as q:
            await run(q, -chunk, chunk, keyed)  # warm the connection's plans
            rates = []
            for c in range(chunks):
                start = time.perf_counter()
                await run(q, c * chunk, chunk, keyed)
                rates.append(chunk / (time.perf_counter() - start))
            return rates
    finally:
        drop(server, name)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dsn", help="a server where bench_paths_* databases may be created")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=20, help="timed chunks per round")
    args = parser.parse_args()
    cases = [
        ("enqueue one by one, no key", single, 100, False),
        ("enqueue one by one, keyed", single, 100, True),
        ("enqueue_many of 2,000, no key", bulk, 2000, False),
        ("enqueue_many of 2,000, keyed", bulk, 2000, True),
    ]
    figures: dict[str, list[float]] = {label: [] for label, *_ in cases}
    for _ in range(args.rounds):  # interleaved, so a slow minute hits every case
        for label, run, chunk, keyed in cases:
            figures[label] += await measure(args.dsn, run, chunk, args.chunks, keyed)
    for label, rates in figures.items():
        print(
            f"{label}: median {statistics.median(rates):,.0f} tasks/s, "
            f"best {max(rates):,.0f} ({len(rates)} chunks)"
        )


if __name__ == "__main__":
    asyncio.run(main())
