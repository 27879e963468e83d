"""Handlers the worker-process tests run. Each records its executions in the test database
(table ``executions``, created by the test), so tests can count how often a task really ran."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import msgspec
import psycopg

import pgqueue

app = pgqueue.App()

_conn: psycopg.AsyncConnection[Any] | None = None


async def record(ctx: pgqueue.Context) -> None:
    global _conn
    if _conn is None or _conn.closed:
        # no prepared statements: tests/topology runs these handlers through PgBouncer
        _conn = await psycopg.AsyncConnection.connect(
            os.environ["PGQUEUE_DSN"], autocommit=True, prepare_threshold=None
        )
    await _conn.execute(
        "INSERT INTO executions (task_id, attempt, pid) VALUES (%s, %s, %s)",
        (ctx.task_id, ctx.attempt, os.getpid()),
    )


@app.task("record")
async def record_task(ctx: pgqueue.Context, payload: dict[str, Any]) -> dict[str, Any]:
    await record(ctx)
    return {"pid": os.getpid()}


class StepsPayload(msgspec.Struct):
    steps: int
    step_s: float = 0.2


@app.task("steps")
async def steps(ctx: pgqueue.Context, payload: StepsPayload) -> dict[str, Any]:
    """Long work in steps, checkpointing after each: a later attempt resumes where it was."""
    await record(ctx)
    start = ctx.checkpoint_data["done"] if ctx.checkpoint_data else 0
    for step in range(start, payload.steps):
        await asyncio.sleep(payload.step_s)
        await ctx.checkpoint(f"step-{step + 1}", {"done": step + 1, "pid": os.getpid()})
    return {"resumed_from": start, "pid": os.getpid()}


@app.task("sleep")
async def sleep(ctx: pgqueue.Context, payload: dict[str, Any]) -> dict[str, Any]:
    await record(ctx)
    await asyncio.sleep(float(payload.get("s", 1.0)))
    return {"slept": payload.get("s", 1.0)}
