"""Handlers for the tracing tests. They report the span they run in, so a test can check the
trace from another process; ``PGQUEUE_TEST_OTEL=1`` gives such a process an SDK of its own
(as ``opentelemetry-instrument`` would) with spans kept in memory."""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry import trace

import pgqueue

if os.environ.get("PGQUEUE_TEST_OTEL") == "1":
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())

app = pgqueue.App()
log = logging.getLogger("tests.otel.handler")


@app.task("otel.where")
async def where(ctx: pgqueue.Context, payload: dict[str, Any]) -> dict[str, Any]:
    """The span the handler runs in: its ids, its parent's, its name and kind."""
    log.info("running %s", ctx.task_id)
    with trace.get_tracer("tests").start_as_current_span("inside the handler"):
        pass
    span = trace.get_current_span()
    context = span.get_span_context()
    parent = getattr(span, "parent", None)
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_span_id": format(parent.span_id, "016x") if parent is not None else None,
        "name": getattr(span, "name", None),
        "kind": str(getattr(span, "kind", "")),
    }


@app.task("otel.fail")
async def fail(ctx: pgqueue.Context, payload: dict[str, Any]) -> None:
    raise pgqueue.Permanent("no luck")


@app.task("otel.fan_out")
async def fan_out(ctx: pgqueue.Context, payload: dict[str, Any]) -> dict[str, Any]:
    """Enqueues a child from inside its consumer span: the child joins the same trace."""
    child = await ctx.enqueue("otel.where", {})
    (done,) = await ctx.wait_children(timeout_s=30)
    return {"child": str(child.id), "child_result": done.result}
