"""Shared test tools: waiting on conditions, and running workers in-process or as processes."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pgqueue.settings import Settings
from pgqueue.worker.handlers import App
from pgqueue.worker.loop import Worker

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent

# A pooled DSN (PgBouncer, tests/topology) -> the direct DSN its processes LISTEN on, so the
# suites re-run through a pooler get PGQUEUE_LISTEN_DSN set like a real deployment.
LISTEN_DSNS: dict[str, str] = {}


async def wait_for(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        await asyncio.sleep(interval)


def fast_settings(dsn: str, **overrides: Any) -> Settings:
    """Short heartbeats and stalls so crash tests finish in seconds, not minutes."""
    values: dict[str, Any] = {
        "dsn": dsn,
        "listen_dsn": LISTEN_DSNS.get(dsn, ""),
        "heartbeat_s": 0.5,
        "stall_s": 3.0,
        "reap_s": 0.5,
        "poll_s": 1.0,
        "shutdown_grace_s": 5.0,
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.2,
    }
    values.update(overrides)
    return Settings.from_env({}, **values)


@contextlib.asynccontextmanager
async def running_worker(
    app: App, settings: Settings, **options: Any
) -> AsyncGenerator[Worker, None]:
    """A Worker in this process, claiming by the time the block starts, stopped after it."""
    worker = Worker(app, settings, **options)
    task = asyncio.create_task(worker.run())
    started = asyncio.ensure_future(worker.started.wait())
    await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED, timeout=30)
    if task.done():
        task.result()  # raise the worker's startup error
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=60)


def worker_process(
    settings: Settings, app: str = "tests.worker.apps:app", *args: str
) -> subprocess.Popen[bytes]:
    """``pgqueue worker`` as a separate OS process, configured through its environment."""
    env = {
        **os.environ,
        "PGQUEUE_DSN": settings.dsn,
        "PGQUEUE_LISTEN_DSN": settings.listen_dsn,
        "PGQUEUE_HEARTBEAT_S": str(settings.heartbeat_s),
        "PGQUEUE_STALL_S": str(settings.stall_s),
        "PGQUEUE_REAP_S": str(settings.reap_s),
        "PGQUEUE_POLL_S": str(settings.poll_s),
        "PGQUEUE_SHUTDOWN_GRACE_S": str(settings.shutdown_grace_s),
        "PGQUEUE_BACKOFF_BASE_S": str(settings.backoff_base_s),
        "PGQUEUE_BACKOFF_MAX_S": str(settings.backoff_max_s),
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "--log-level", "WARNING", "worker", app, *args],
        cwd=ROOT,
        env=env,
    )


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout: float = 60.0) -> list[int]:
    """SIGTERM every process and return their exit codes; one still alive after ``timeout``
    is killed (code -9), so a hung process fails its test and never outlives it."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + timeout
    codes: list[int] = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            codes.append(-9)
    return codes


class StatementCount(Protocol):
    """What the tests use of bench/statement_counter.py's ``StatementCounter``."""

    dsn: str

    def snapshot(self) -> tuple[int, Counter[str]]: ...


@contextlib.contextmanager
def counting_statements(dsn: str) -> Generator[StatementCount, None, None]:
    """The benchmarks' wire-level statement counter (a TCP proxy) in front of ``dsn``: connect
    to its ``.dsn``; ``snapshot()`` gives the statements so far and their texts."""
    spec = importlib.util.spec_from_file_location(
        "statement_counter", ROOT / "bench" / "statement_counter.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    counter: Any = module.StatementCounter(dsn)
    with counter:
        yield counter
