"""The operator commands as a shell user runs them: real processes against a real database."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import psycopg

from pgqueue.queue import Queue
from tests.helpers import ROOT


def pgqueue_cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pgqueue", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_status_once_shows_queues_workers_and_failures(
    dsn: str, queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    await queue.enqueue("k", queue="llm")  # claimed below: running
    failed = await queue.enqueue("k", queue="llm")
    await queue.enqueue("k", queue="llm")  # due
    await conn.execute("SELECT pgqueue.claim('w', '{llm}', '{k}', 1)")
    await conn.execute(
        "UPDATE pgqueue.tasks SET status = 'failed', completed_at = now(), worker_id = NULL,"
        ' heartbeat_at = NULL, error = \'{"type": "RateLimited", "message": "429"}\''
        " WHERE id = %s",
        (failed.id,),
    )
    await conn.execute("SELECT pgqueue.set_queue_limit('llm', 5)")
    out = pgqueue_cli(dsn, "status", "--once")
    assert out.returncode == 0, out.stderr
    assert "1 due  ·  1 running  ·  1 failed" in out.stdout
    llm = next(line for line in out.stdout.splitlines() if line.startswith("llm"))
    assert llm.split()[:5] == ["llm", "active", "concurrency", "5", "1"]
    assert "RateLimited: 429" in out.stdout
    assert "(no live workers)" in out.stdout


async def test_queue_commands_change_the_queue_settings(
    dsn: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    assert (
        pgqueue_cli(dsn, "queue", "limit", "llm", "3").stdout.strip()
        == "queue llm: active, limit 3"
    )
    assert pgqueue_cli(dsn, "queue", "pause", "llm").stdout.strip() == "queue llm: paused, limit 3"
    cur = await conn.execute(
        "SELECT paused, concurrency_limit FROM pgqueue.queues WHERE name = 'llm'"
    )
    assert await cur.fetchone() == (True, 3)
    pgqueue_cli(dsn, "queue", "resume", "llm")
    pgqueue_cli(dsn, "queue", "limit", "llm", "none")
    cur = await conn.execute(
        "SELECT paused, concurrency_limit FROM pgqueue.queues WHERE name = 'llm'"
    )
    assert await cur.fetchone() == (False, None)
    bad = pgqueue_cli(dsn, "queue", "limit", "llm", "-1")
    assert bad.returncode == 2 and "n:" in bad.stderr


async def test_schedule_commands_round_trip(dsn: str, conn: psycopg.AsyncConnection[Any]) -> None:
    added = pgqueue_cli(
        dsn,
        "schedule",
        "add",
        "digest",
        "0 7 * * 1-5",
        "digest.build",
        '{"team": "core"}',
        "--timezone",
        "Europe/Berlin",
        "--queue",
        "reports",
    )
    assert added.returncode == 0, added.stderr
    listed = pgqueue_cli(dsn, "schedule", "list").stdout
    assert "digest" in listed and "Europe/Berlin" in listed and "enabled" in listed
    assert "paused" in pgqueue_cli(dsn, "schedule", "pause", "digest").stdout
    cur = await conn.execute("SELECT enabled, task FROM pgqueue.schedules WHERE name = 'digest'")
    assert await cur.fetchone() == (
        False,
        {"kind": "digest.build", "payload": {"team": "core"}, "queue": "reports"},
    )
    assert "enabled" in pgqueue_cli(dsn, "schedule", "resume", "digest").stdout
    assert pgqueue_cli(dsn, "schedule", "remove", "digest").returncode == 0
    missing = pgqueue_cli(dsn, "schedule", "remove", "digest")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad = pgqueue_cli(dsn, "schedule", "add", "x", "99 * * * *", "k")
    assert bad.returncode == 2 and "cron:" in bad.stderr


async def test_purge_command_deletes_old_finished_tasks_only(
    dsn: str, queue: Queue, conn: psycopg.AsyncConnection[Any]
) -> None:
    old = await queue.enqueue("k")
    live = await queue.enqueue("k")
    await conn.execute(
        "UPDATE pgqueue.tasks SET status = 'completed', completed_at = now() - interval '8 days'"
        " WHERE id = %s",
        (old.id,),
    )
    out = pgqueue_cli(dsn, "purge", "--older-than", "7d")
    assert out.stdout.strip() == "deleted 1 finished tasks older than 7d"
    cur = await conn.execute("SELECT id FROM pgqueue.tasks")
    assert [r[0] for r in await cur.fetchall()] == [live.id]
