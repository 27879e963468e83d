"""Procrastinate's side of bench/compare.py (worker concurrency 50, LISTEN/NOTIFY on)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procrastinate
import psycopg
from common import mark_ready, measure_latency, record_start, report

LOG: Path | None = None


def build(dsn: str) -> tuple[procrastinate.App, procrastinate.tasks.Task]:  # type: ignore[type-arg]
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop(i: int = 0) -> None:
        if LOG is not None:
            record_start(LOG, i)

    return app, noop


async def main(metric: str, dsn: str, arg: str | None) -> None:
    global LOG
    app, noop = build(dsn)
    async with app.open_async():
        if metric != "latency-worker":
            with contextlib.suppress(Exception):  # already applied in this database
                await app.schema_manager.apply_schema_async()
        if metric == "enqueue":
            n = int(arg or 3000)
            t0 = time.perf_counter()
            for i in range(n):
                await noop.defer_async(i=i)
            report(tasks_per_s=n / (time.perf_counter() - t0))
        elif metric == "bulk":
            n = int(arg or 20000)
            t0 = time.perf_counter()
            await noop.batch_defer_async(*[{"i": i} for i in range(n)])
            report(tasks_per_s=n / (time.perf_counter() - t0))
        elif metric == "drain":
            n = int(arg or 3000)
            await noop.batch_defer_async(*[{"i": i} for i in range(n)])
            # Timed until no job is left to do, as for the other systems.
            watch = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
            t0 = time.perf_counter()
            runner = asyncio.create_task(app.run_worker_async(concurrency=50, wait=False))
            while True:
                cur = await watch.execute(
                    "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
                )
                row = await cur.fetchone()
                if row is not None and row[0] == 0:
                    break
                await asyncio.sleep(0.005)
            report(tasks_per_s=n / (time.perf_counter() - t0))
            await runner
        elif metric == "latency":
            log = Path(arg or "/tmp/procrastinate-latency.log")

            async def enqueue(i: int) -> None:
                await noop.defer_async(i=i)

            await measure_latency(__file__, dsn, log, enqueue)
        elif metric == "latency-worker":
            LOG = Path(str(arg))
            mark_ready(LOG)
            await app.run_worker_async(concurrency=10)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
