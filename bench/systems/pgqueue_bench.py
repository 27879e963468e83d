"""pgqueue's side of bench/compare.py: `python pgqueue_bench.py METRIC DSN [ARG…]`.

Besides the shared metrics (enqueue, bulk, drain, latency) two of pgqueue's own:
`producer DSN RATE PROCESSES BATCH CONCURRENCY PROBES` (enqueue → handler start of probe
tasks while producer processes enqueue RATE tasks/s into the same queue) and `produce DSN
RATE BATCH` (one such producer process, run by `producer`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import latency_worker, mark_ready, measure_latency, probe, record_start, report

import pgqueue
from pgqueue.db.migrate import migrate
from pgqueue.db.pool import connect
from pgqueue.settings import Settings
from pgqueue.worker.loop import Worker

app = pgqueue.App()
LOG: Path | None = None
CHUNK = 20_000  # tasks per enqueue_many call when pre-queuing a bigger backlog


@app.task("noop")
async def noop(ctx: pgqueue.Context, payload: Any) -> None:
    if LOG is not None and "i" in payload:  # a probe (a producer's tasks carry no "i")
        record_start(LOG, payload["i"])


async def main(metric: str, dsn: str, *args: str) -> None:
    global LOG
    arg = args[0] if args else None
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
            for start in range(0, n, CHUNK):  # not timed; 20,000 is one call
                count = min(CHUNK, n - start)
                await q.enqueue_many([{"kind": "noop", "payload": {"i": i}} for i in range(count)])
            report(tasks_per_s=await drain(settings, n))
        elif metric == "latency":
            log = Path(arg or "/tmp/pgqueue-latency.log")
            await measure_latency(__file__, dsn, log, lambda i: q.enqueue("noop", {"i": i}))
        elif metric == "latency-worker":
            LOG = Path(str(arg))
            concurrency = int(args[1]) if len(args) > 1 else 10
            worker = Worker(app, settings, concurrency=concurrency)
            task = asyncio.create_task(worker.run())
            await worker.started.wait()
            mark_ready(LOG)
            await task
        elif metric == "producer":
            rate, processes, batch, concurrency, probes = (float(a) for a in args)
            report(
                **await under_producer(
                    q, dsn, rate, int(processes), int(batch), int(concurrency), int(probes)
                )
            )
        elif metric == "produce":
            await produce(q, float(args[0]), int(args[1]))


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


async def produce(q: pgqueue.Queue, rate: float, batch: int, in_flight: int = 8) -> None:
    """Enqueue `rate` no-op tasks/s, `batch` per call (1: `enqueue`, else `enqueue_many`),
    paced by the clock (call k is due at k * batch / rate s), up to `in_flight` calls at
    once, until a line arrives on stdin; then report what was enqueued and how late it fell.
    """
    loop = asyncio.get_running_loop()
    stop = loop.run_in_executor(None, sys.stdin.readline)
    slots = asyncio.Semaphore(in_flight)
    done = [0]
    calls: set[asyncio.Task[None]] = set()

    async def call(k: int) -> None:
        try:
            if batch == 1:
                await q.enqueue("noop", {"n": k})
            else:
                await q.enqueue_many([{"kind": "noop", "payload": {"n": k}}] * batch)
            done[0] += batch
        finally:
            slots.release()

    print("producing", flush=True)
    t0 = loop.time()
    k = 0
    lag = 0.0
    while not stop.done():
        due = t0 + k * batch / rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        await slots.acquire()
        lag = max(lag, loop.time() - due)
        task = asyncio.create_task(call(k))
        calls.add(task)
        task.add_done_callback(calls.discard)
        k += 1
    await asyncio.gather(*calls)
    seconds = loop.time() - t0
    report(tasks=done[0], seconds=seconds, tasks_per_s=done[0] / seconds, max_lag_s=lag)


COUNTS = """SELECT count(*) FILTER (WHERE NOT payload ? 'i'),
                   count(*) FILTER (WHERE status = 'completed'),
                   count(*) FILTER (WHERE status = 'pending')
              FROM pgqueue.tasks"""


async def counts(q: pgqueue.Queue) -> tuple[int, int, int]:
    """Producer tasks so far, completed tasks, pending tasks."""
    async with q.pool.connection() as conn:
        row = await (await conn.execute(COUNTS)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def under_producer(
    q: pgqueue.Queue,
    dsn: str,
    rate: float,
    processes: int,
    batch: int,
    concurrency: int,
    probes: int,
) -> dict[str, float]:
    """Enqueue → handler start of `probes` tasks (the latency protocol of common.py) in the
    queue a worker (concurrency `concurrency`, its own process) is draining while `processes`
    producer processes enqueue `rate` tasks/s in all into the same queue. Besides p50/p99:
    the rate the producers achieved and the rate the worker completed at, both over the
    probe window (read from the table), and the tasks still pending when the probes ended."""
    log = Path(f"/tmp/pgqueue-producer-{os.getpid()}.log")
    async with latency_worker(__file__, dsn, log, str(concurrency)):
        producers = [
            subprocess.Popen(
                [sys.executable, __file__, "produce", dsn, str(rate / processes), str(batch)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(processes)
        ]
        try:
            for p in producers:
                assert p.stdout is not None
                if p.stdout.readline().strip() != "producing":
                    raise RuntimeError("a producer did not start")
            await asyncio.sleep(2.0)  # the worker settles into the producer's stream
            made0, done0, _ = await counts(q)
            t0 = time.perf_counter()
            result = await probe(log, lambda i: q.enqueue("noop", {"i": i}), probes, timeout=120)
            seconds = time.perf_counter() - t0
            made1, done1, pending = await counts(q)
        finally:
            summaries = []
            for p in producers:
                out, _ = p.communicate("stop\n", timeout=60)
                lines = [line for line in out.splitlines() if line.startswith("{")]
                summaries.append(json.loads(lines[-1]) if lines else {})
    result["produced_per_s"] = (made1 - made0) / seconds
    result["completed_per_s"] = (done1 - done0) / seconds
    result["pending_at_end"] = pending
    result["producer_max_lag_s"] = max(s.get("max_lag_s", float("nan")) for s in summaries)
    return result


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], *sys.argv[3:]))
