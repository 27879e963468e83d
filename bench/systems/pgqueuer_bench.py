"""PGQueuer's side of bench/compare.py; its drain is the best of batch_size 10, 100 and 500."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from common import mark_ready, measure_latency, record_start, report
from pgqueuer.adapters.drivers.psycopg import PsycopgDriver
from pgqueuer.adapters.persistence.queries import Queries
from pgqueuer.core.qm import QueueManager


async def connect(dsn: str) -> psycopg.AsyncConnection:  # type: ignore[type-arg]
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)


BATCH_SIZES = (10, 100, 500)


async def drain(dsn: str, queries: Queries, n: int, batch_size: int) -> float:
    """Enqueue n no-ops and time one QueueManager draining them with this batch size, on a
    fresh install (the log and statistics tables of an earlier drain would weigh on it)."""
    await queries.uninstall()
    await queries.install()
    await queries.enqueue(["noop"] * n, [str(i).encode() for i in range(n)], [0] * n)
    qm = QueueManager(Queries(PsycopgDriver(await connect(dsn))))

    @qm.entrypoint("noop")
    async def noop(job: object) -> None:
        return None

    # Timed until the table is empty (PGQueuer deletes finished jobs), not until
    # run(mode=drain) returns: that exit waits seconds after the last job.
    watch = await connect(dsn)
    t0 = time.perf_counter()
    runner = asyncio.create_task(qm.run(batch_size=batch_size))
    while True:
        row = await (await watch.execute("SELECT count(*) FROM pgqueuer")).fetchone()
        if row is not None and row[0] == 0:
            break
        await asyncio.sleep(0.005)
    rate = n / (time.perf_counter() - t0)
    qm.shutdown.set()
    await runner
    await watch.close()
    return rate


async def main(metric: str, dsn: str, arg: str | None) -> None:
    queries = Queries(PsycopgDriver(await connect(dsn)))
    if metric != "latency-worker":
        with contextlib.suppress(psycopg.errors.DuplicateObject):
            await queries.install()
    if metric == "enqueue":
        n = int(arg or 3000)
        t0 = time.perf_counter()
        for i in range(n):
            await queries.enqueue("noop", str(i).encode())
        report(tasks_per_s=n / (time.perf_counter() - t0))
    elif metric == "bulk":
        n = int(arg or 20000)
        t0 = time.perf_counter()
        await queries.enqueue(["noop"] * n, [str(i).encode() for i in range(n)], [0] * n)
        report(tasks_per_s=n / (time.perf_counter() - t0))
    elif metric == "drain":
        # PGQueuer at its best: each batch size drains the same n in turn (the table is empty
        # after each, PGQueuer deletes finished jobs) and the best rate is the figure.
        n = int(arg or 20000)
        rates = {size: await drain(dsn, queries, n, size) for size in BATCH_SIZES}
        best = max(rates, key=lambda size: rates[size])
        report(
            tasks_per_s=rates[best],
            best_batch_size=best,
            **{f"batch_{size}_tasks_per_s": rate for size, rate in rates.items()},
        )
    elif metric == "latency":
        log = Path(arg or "/tmp/pgqueuer-latency.log")

        async def enqueue(i: int) -> None:
            await queries.enqueue("noop", str(i).encode())

        await measure_latency(__file__, dsn, log, enqueue)
    elif metric == "latency-worker":
        log = Path(str(arg))
        qm = QueueManager(Queries(PsycopgDriver(await connect(dsn))))

        @qm.entrypoint("noop")
        async def timed(job: object) -> None:
            record_start(log, int(job.payload.decode()))  # type: ignore[attr-defined]

        mark_ready(log)
        await qm.run(batch_size=10)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
