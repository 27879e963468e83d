"""Handlers the limits tests run in real worker processes.

``flaky`` fails while the test's ``switch`` table says so (the circuit breaker's downstream);
``spend`` reports a cost; ``sleep`` holds a slot for a while."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import psycopg

import pgqueue

app = pgqueue.App()

_conn: psycopg.AsyncConnection[Any] | None = None


async def _db() -> psycopg.AsyncConnection[Any]:
    global _conn
    if _conn is None or _conn.closed:
        _conn = await psycopg.AsyncConnection.connect(os.environ["PGQUEUE_DSN"], autocommit=True)
    return _conn


@app.task("noop")
async def noop(ctx: pgqueue.Context, payload: dict[str, Any]) -> None:
    return None


@app.task("sleep")
async def sleep(ctx: pgqueue.Context, payload: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(float(payload.get("s", 0.3)))
    return {"pid": os.getpid()}


@app.task("spend")
async def spend(ctx: pgqueue.Context, payload: dict[str, Any]) -> None:
    ctx.add_usage(cost=float(payload["cost"]), input_tokens=100)


@app.task("flaky", max_retries=0)
async def flaky(ctx: pgqueue.Context, payload: dict[str, Any]) -> None:
    cur = await (await _db()).execute("SELECT failing FROM switch")
    row = await cur.fetchone()
    if row is not None and row[0]:
        raise RuntimeError("downstream is down")
