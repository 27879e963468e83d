"""pgqueue's side of bench/compare.py: `python pgqueue_bench.py METRIC DSN [ARG]`."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import mark_ready, measure_latency, record_start, report

import pgqueue
from pgqueue.db.migrate import migrate
from pgqueue.db.pool import connect
from pgqueue.settings import Settings
from pgqueue.worker.loop import Worker

app = pgqueue.App()
LOG: Path | None = None


@app.task("noop")
async def noop(ctx: pgqueue.Context, payload: Any) -> None:
    if LOG is not None:
        record_start(LOG, payload["i"])


async def main(metric: str, dsn: str, arg: str | None) -> None:
    global LOG
    conn = await connect(dsn)
    async with conn:
        await migrate(conn)
    settings = Settings.from_env({}, dsn=dsn)
    async with pgqueue.Queue(settings=settings) as q:
        if metric == "enqueue":
            n = int(arg or 3000)
            t0 = time.perf_counter()
            for i in range(n):
                await q.enqueue("noop", {"i": i})
            report(tasks_per_s=n / (time.perf_counter() - t0))
        elif metric == "bulk":
            n = int(arg or 20000)
            t0 = time.perf_counter()
            await q.enqueue_many([{"kind": "noop", "payload": {"i": i}} for i in range(n)])
            report(tasks_per_s=n / (time.perf_counter() - t0))
        elif metric == "drain":
            n = int(arg or 20000)
            await q.enqueue_many([{"kind": "noop", "payload": {"i": i}} for i in range(n)])
            report(tasks_per_s=await drain(settings, n))
        elif metric == "latency":
            log = Path(arg or "/tmp/pgqueue-latency.log")
            await measure_latency(__file__, dsn, log, lambda i: q.enqueue("noop", {"i": i}))
        elif metric == "latency-worker":
            LOG = Path(str(arg))
            worker = Worker(app, settings, concurrency=10)
            task = asyncio.create_task(worker.run())
            await worker.started.wait()
            mark_ready(LOG)
            await task


async def drain(settings: Settings, n: int, concurrency: int = 500) -> float:
    worker = Worker(app, settings, concurrency=concurrency)
    t0 = time.perf_counter()
    task = asyncio.create_task(worker.run())
    while worker.outbox.recorded < n:
        await asyncio.sleep(0.005)
    rate = n / (time.perf_counter() - t0)
    worker.stop()
    await task
    return rate


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
