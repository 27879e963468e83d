"""Handlers the dashboard's browser tests run in a real worker process.

``ui.gated`` reports progress and then waits for files the test creates (its "gates"), so a
test can watch each step in the browser without racing the handler. ``ui.boom`` fails for
good with a traceback.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec

import pgqueue

app = pgqueue.App("ui-tests")


class GatedPayload(msgspec.Struct):
    gates: list[str]


@app.task("ui.gated")
async def gated(ctx: pgqueue.Context, payload: GatedPayload) -> dict[str, Any]:
    """Progress ``k / (n + 1)`` before gate ``k``; done once every gate file exists."""
    steps = len(payload.gates) + 1
    for done, gate in enumerate(payload.gates, start=1):
        await ctx.progress(round(100 * done / steps, 1), f"waiting for gate {done}")
        await ctx.checkpoint(f"gate-{done}", {"gate": done})
        # A file is the test's signal; a stat every 20 ms costs nothing worth a thread.
        while not Path(gate).exists():  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.02)
    ctx.add_usage(input_tokens=120, output_tokens=30, cost=0.0015)
    return {"gates": len(payload.gates)}


@app.task("ui.boom", max_retries=0)
async def boom(ctx: pgqueue.Context, payload: Any) -> None:
    raise RuntimeError("boom: the handler failed on purpose")
