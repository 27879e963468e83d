"""``PGQUEUE_LOG_FORMAT=json``: every line of a worker process is one JSON object, and the
lines written while a task runs name it (SPEC §15)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import httpx
import msgspec
import pytest

from pgqueue.queue import Queue
from pgqueue.tasks import Status
from tests.helpers import ROOT, wait_for

pytestmark = pytest.mark.slow


async def test_json_log_lines_carry_the_task_and_the_worker(dsn: str, queue: Queue) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGQUEUE_", "OTEL_"))}
    env.update(PGQUEUE_DSN=dsn, PGQUEUE_LOG_FORMAT="json", PYTHONPATH=str(ROOT))
    worker = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pgqueue", "worker", "tests.otel.apps:app"),
        cwd=ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        task = await queue.enqueue("otel.where", {})
        assert (await queue.wait(task.id, timeout_s=60)).status is Status.COMPLETED
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(worker.communicate(), 60)
    assert worker.returncode == 0, err
    lines = [msgspec.json.decode(line) for line in err.decode().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    (started,) = [
        x for x in lines if x["logger"] == "pgqueue.worker.loop" and "queues" in x["message"]
    ]
    worker_id = started["worker_id"]
    assert "task_id" not in started
    (handler,) = [x for x in lines if x["logger"] == "tests.otel.handler"]
    assert handler == {
        "time": handler["time"],
        "level": "INFO",
        "logger": "tests.otel.handler",
        "message": f"running {task.id}",
        "task_id": str(task.id),
        "kind": "otel.where",
        "queue": "default",
        "attempt": 1,
        "worker_id": worker_id,
    }


async def test_an_unknown_log_format_is_refused() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    env.update(PGQUEUE_LOG_FORMAT="xml", PYTHONPATH=str(ROOT))
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pgqueue", "migrate"),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"PGQUEUE_LOG_FORMAT" in err


async def test_serve_logs_json_too(dsn: str) -> None:
    from tests.packaging.conftest import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGQUEUE_", "OTEL_"))}
    env.update(PGQUEUE_DSN=dsn, PYTHONPATH=str(ROOT))
    port = free_port()
    serve = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pgqueue", "--log-format", "json", "serve", "--insecure"),
        *("--port", str(port)),
        cwd=ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(ready, timeout=60, what="serve to be ready")
    finally:
        serve.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(serve.communicate(), 60)
    lines = [msgspec.json.decode(line) for line in err.decode().splitlines() if line.strip()]
    assert any("without auth" in x["message"] for x in lines), lines
