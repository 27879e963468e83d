"""`pgqueue queue …` limits, `pgqueue limits` and `pgqueue status` as a shell user runs them."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.sql.test_operator_cli import pgqueue_cli


async def test_queue_limit_commands(dsn: str, conn: psycopg.AsyncConnection[Any]) -> None:
    steps = [
        (("rate-limit", "llm", "100/60"), "queue llm: active, limit none, rate 100/60s"),
        (("per-user", "llm", "2"), "queue llm: active, limit none, rate 100/60s, per-user 2"),
        (("fair", "llm", "on"), "per-user 2, fair"),
        (("breaker", "llm", "5/30"), "fair, breaker 5/30s"),
    ]
    for args, expected in steps:
        out = pgqueue_cli(dsn, "queue", *args)
        assert out.returncode == 0, out.stderr
        assert expected in out.stdout, out.stdout
    status = pgqueue_cli(dsn, "status", "--once")
    assert "rate 100/60s, per-user 2, fair, breaker 5/30s" in status.stdout, status.stdout
    for args in (("rate-limit", "llm", "none"), ("fair", "llm", "off"), ("breaker", "llm", "none")):
        assert pgqueue_cli(dsn, "queue", *args).returncode == 0
    cur = await conn.execute(
        "SELECT rate_limit_tasks, per_user_concurrency, fair, breaker_failures"
        " FROM pgqueue.queues WHERE name = 'llm'"
    )
    assert await cur.fetchone() == (None, 2, False, None)
    for args, field in [
        (("rate-limit", "llm", "fast"), "rate"),
        (("rate-limit", "llm", "0/1"), "rate-limit"),
        (("fair", "llm", "maybe"), "on_off"),
        (("breaker", "llm", "3/0"), "breaker"),
        (("per-user", "llm", "-2"), "n"),
    ]:
        bad = pgqueue_cli(dsn, "queue", *args)
        assert bad.returncode == 2 and field in bad.stderr, (args, bad.stderr)


async def test_limits_command(dsn: str, conn: psycopg.AsyncConnection[Any]) -> None:
    assert "(no user has limits)" in pgqueue_cli(dsn, "limits").stdout
    out = pgqueue_cli(dsn, "limits", "set", "ann", "--cost-per-day", "5", "--max-running", "3")
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("ann"))
    assert row.split() == ["ann", "5", "-", "3"]
    await conn.execute(
        "INSERT INTO pgqueue.usage_daily (user_id, day, cost) VALUES"
        " ('ann', (now() AT TIME ZONE 'UTC')::date, 1.5)"
    )
    shown = pgqueue_cli(dsn, "limits", "show", "ann").stdout
    assert "ann: spent 1.5 today, 1.5 this month (UTC); 0 running" in shown
    assert "ann" in pgqueue_cli(dsn, "limits").stdout
    bad = pgqueue_cli(dsn, "limits", "set", "ann", "--cost-per-day", "-1")
    assert bad.returncode == 2 and "cost_per_day" in bad.stderr
