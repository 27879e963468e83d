"""Demo handlers that ``pgqueue dev`` runs, so a new user sees tasks move at once.

Try: ``pgqueue enqueue demo.agent '{"goal": "write a haiku", "steps": 5}'``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from pgqueue.jsonvalue import is_object
from pgqueue.outcomes import Permanent
from pgqueue.worker.context import Context
from pgqueue.worker.handlers import App

app = App("demo")


@app.task("demo.echo")
async def echo(ctx: Context, payload: Any) -> Any:
    """Returns its payload."""
    return payload


class AgentPayload(msgspec.Struct):
    goal: str
    steps: int = 5
    step_s: float = 1.0


@app.task("demo.agent", timeout_s=600)
async def agent(ctx: Context, payload: AgentPayload) -> dict[str, Any]:
    """Pretends to be an LLM agent: progress per step, a checkpoint to resume from, usage."""
    done = ctx.checkpoint_data["step"] if ctx.checkpoint_data else 0
    for step in range(done, payload.steps):
        await asyncio.sleep(payload.step_s)
        ctx.add_usage(input_tokens=800, output_tokens=200, cost=0.002)
        await ctx.progress(100 * (step + 1) / payload.steps, f"step {step + 1}/{payload.steps}")
        await ctx.checkpoint(f"step-{step + 1}", {"step": step + 1})
    return {"goal": payload.goal, "answer": f"done in {payload.steps} steps", "resumed_at": done}


@app.task("demo.fail", max_retries=2)
async def fail(ctx: Context, payload: Any) -> None:
    """Fails: retried with backoff, or for good with {"permanent": true}."""
    if is_object(payload) and payload.get("permanent"):
        raise Permanent("asked to fail for good")
    raise RuntimeError(f"attempt {ctx.attempt} failed on purpose")
