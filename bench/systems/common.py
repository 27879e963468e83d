"""Shared by the per-system benchmark scripts: timing, the latency protocol, output."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path


def report(**values: float) -> None:
    """One JSON line on stdout: what the orchestrator reads."""
    print(json.dumps(values), flush=True)


def record_start(log: Path, i: int) -> None:
    """Called first thing in a latency handler: when task i started, by this machine's clock."""
    with log.open("a") as f:
        f.write(f"{i} {time.time()}\n")


@contextlib.asynccontextmanager
async def latency_worker(script: str, dsn: str, log: Path, *extra: str) -> AsyncIterator[None]:
    """The system's worker in its own process (`script latency-worker DSN LOG [extra…]`),
    started, ready and settled into its idle wait for the `with` block; stopped after it."""
    log.unlink(missing_ok=True)
    ready = log.with_suffix(".ready")
    ready.unlink(missing_ok=True)
    worker = subprocess.Popen([sys.executable, script, "latency-worker", dsn, str(log), *extra])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError("latency worker did not start")
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # let it settle into its idle wait
        yield
    finally:
        worker.terminate()
        worker.wait(timeout=30)


async def probe(
    log: Path,
    enqueue: Callable[[int], Awaitable[None]],
    n: int = 300,
    gap: float = 0.02,
    timeout: float = 30,
) -> dict[str, float]:
    """Enqueue n probe tasks one at a time, `gap` seconds apart, wait until each handler has
    logged its start (record_start), and return enqueue-commit to handler-start p50/p99 ms."""
    committed: dict[int, float] = {}
    for i in range(n):
        await enqueue(i)
        committed[i] = time.time()
        await asyncio.sleep(gap)
    deadline = time.monotonic() + timeout
    while len(log.read_text().splitlines() if log.exists() else []) < n:
        if time.monotonic() > deadline:
            ran = len(log.read_text().splitlines()) if log.exists() else 0
            raise RuntimeError(f"{ran} of {n} latency tasks ran within {timeout} s")
        await asyncio.sleep(0.05)
    started = {int(a): float(b) for a, b in (line.split() for line in log.read_text().splitlines())}
    lat = sorted((started[i] - committed[i]) * 1000 for i in range(n))
    return {"p50_ms": statistics.median(lat), "p99_ms": lat[int(len(lat) * 0.99) - 1]}


async def measure_latency(
    script: str, dsn: str, log: Path, enqueue: Callable[[int], Awaitable[None]], n: int = 300
) -> None:
    """Start the system's worker in its own process, enqueue n tasks one at a time (pausing
    between them so the worker is idle each time) and report enqueue-commit to handler-start."""
    async with latency_worker(script, dsn, log):
        result = await probe(log, enqueue, n)
    report(**result)


def mark_ready(log: Path) -> None:
    log.with_suffix(".ready").write_text("ok")
