"""``pgqueue worker --processes P``: P real worker processes, one replaced after kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgqueue.cli.processes import without_processes_flag
from pgqueue.queue import Queue
from pgqueue.settings import Settings
from pgqueue.tasks import Status
from tests.helpers import ROOT, fast_settings, wait_for

pytestmark = pytest.mark.slow

PGQUEUE = [sys.executable, "-m", "pgqueue"]
SUPERVISED = ["--processes", "2", "--concurrency", "5"]


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    env.update(
        PGQUEUE_DSN=settings.dsn,
        PGQUEUE_HEARTBEAT_S=str(settings.heartbeat_s),
        PGQUEUE_STALL_S=str(settings.stall_s),
        PGQUEUE_SHUTDOWN_GRACE_S=str(settings.shutdown_grace_s),
        PYTHONPATH=str(ROOT),
    )
    return env


@pytest.fixture
def supervised(dsn: str) -> Iterator[subprocess.Popen[bytes]]:
    """``pgqueue worker --processes 2`` in a session of its own (cleanup kills the group)."""
    proc = subprocess.Popen(
        [*PGQUEUE, "--log-level", "WARNING", "worker", "tests.worker.apps:app", *SUPERVISED],
        cwd=ROOT,
        env=_env(fast_settings(dsn)),
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _parent_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


async def _worker_pids(conn: psycopg.AsyncConnection[Any]) -> set[int]:
    cur = await conn.execute(
        "SELECT pid FROM pgqueue.workers WHERE host = %s", (socket.gethostname(),)
    )
    return {row[0] for row in await cur.fetchall()}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_a_killed_child_is_replaced_tasks_complete_and_sigterm_stops_all(
    supervised: subprocess.Popen[bytes], queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    await conn.execute("CREATE TABLE executions (task_id uuid, attempt int, pid int)")
    first = await wait_for(lambda: _two(conn), timeout=60, what="two worker processes heartbeating")
    assert {_parent_of(pid) for pid in first} == {supervised.pid}
    victim, survivor = sorted(first)
    os.kill(victim, signal.SIGKILL)

    async def replaced() -> set[int]:
        return (await _worker_pids(conn)) - first

    (newcomer,) = await wait_for(replaced, timeout=60, what="a replacement worker process")
    assert _parent_of(newcomer) == supervised.pid

    tasks = await queue.enqueue_many([{"kind": "record", "payload": {"i": i}} for i in range(40)])
    done = [await queue.wait(t.id, timeout_s=60) for t in tasks]
    assert {t.status for t in done} == {Status.COMPLETED}
    assert {t.result["pid"] for t in done} <= {survivor, newcomer}

    supervised.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(supervised.wait, 60) == 0
    assert _gone(survivor) and _gone(newcomer)
    # both signed off; only the killed one's row is left, for the reaper
    assert await _worker_pids(conn) == {victim}


async def _two(conn: psycopg.AsyncConnection[Any]) -> set[int] | None:
    pids = await _worker_pids(conn)
    return pids if len(pids) == 2 else None


def test_a_child_that_cannot_start_stops_the_supervisor_with_its_status() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(  # no PGQUEUE_DSN: every child exits 2 at once
        [sys.executable, "-m", "pgqueue", "worker", "pgqueue.demo:app", "--processes", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "PGQUEUE_DSN" in done.stderr


def test_one_worker_id_for_several_processes_is_refused() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    env.update(PYTHONPATH=str(ROOT), PGQUEUE_DSN="postgresql://unused")
    done = subprocess.run(
        [*PGQUEUE, "worker", "pgqueue.demo:app", "--processes", "2", "--worker-id", "w1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "worker_id" in done.stderr


def test_children_run_the_same_command_without_processes() -> None:
    argv = ["worker", "a:app", "--processes", "3", "--concurrency", "4", "--processes=2"]
    assert without_processes_flag(argv) == ["worker", "a:app", "--concurrency", "4"]


async def test_children_shut_down_when_the_supervisor_is_killed(
    supervised: subprocess.Popen[bytes], conn: psycopg.AsyncConnection[Any]
) -> None:
    children = await wait_for(
        lambda: _two(conn), timeout=60, what="two worker processes heartbeating"
    )
    supervised.send_signal(signal.SIGKILL)
    supervised.wait(timeout=30)

    async def all_gone() -> bool:
        return all(_gone(pid) for pid in children)

    await wait_for(all_gone, timeout=60, what="the orphaned workers to stop")
    assert await _worker_pids(conn) == set()  # they shut down gracefully: rows removed
