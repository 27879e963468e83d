"""The floor under every queue: `python rawsql_bench.py METRIC DSN [N]`, plain SQL, no queue.

The same client shape as the queues' scripts (one asyncio psycopg connection, autocommit,
sequential awaits) against a bare table with one index, no audit, no notification:
- enqueue: N single-row INSERTs, each its own durable commit — what any queue's single
  enqueue is bounded by on this server (the WAL flush of every commit);
- bulk: one INSERT ... SELECT FROM unnest of N rows;
- drain: claim-and-finish 100 rows per statement (FOR UPDATE SKIP LOCKED), no Python work
  per task — the issue's "raw SQL, pgbench" column.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from common import report

SCHEMA = """
CREATE TABLE jobs (id bigserial PRIMARY KEY, kind text NOT NULL, payload jsonb NOT NULL,
                   status text NOT NULL DEFAULT 'todo');
CREATE INDEX jobs_todo_idx ON jobs (id) WHERE status = 'todo';
"""
DRAIN = """
UPDATE jobs SET status = 'done'
 WHERE id IN (SELECT id FROM jobs WHERE status = 'todo' ORDER BY id LIMIT 100
              FOR UPDATE SKIP LOCKED)
"""


async def bulk(conn: psycopg.AsyncConnection[tuple[object, ...]], n: int) -> None:
    await conn.execute(
        "INSERT INTO jobs (kind, payload)"
        " SELECT 'noop', jsonb_build_object('i', i) FROM unnest(%s::int[]) AS i",
        (list(range(n)),),
    )


async def main(metric: str, dsn: str, n: int) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(SCHEMA)
        t0 = time.perf_counter()
        if metric == "enqueue":
            for i in range(n):
                await conn.execute(
                    "INSERT INTO jobs (kind, payload) VALUES ('noop', %s)", (f'{{"i": {i}}}',)
                )
        elif metric == "bulk":
            await bulk(conn, n)
        elif metric == "drain":
            await bulk(conn, n)
            t0 = time.perf_counter()
            while (await conn.execute(DRAIN)).rowcount:
                pass
        else:
            raise SystemExit(f"raw SQL has no {metric!r} benchmark")
        report(tasks_per_s=n / (time.perf_counter() - t0))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
