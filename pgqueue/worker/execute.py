"""Run one attempt of one task and classify how it ended (SPEC §2, error classes).

Shared by the database worker (``loop.py``) and the HTTP remote worker: both hand a claimed
task here and record the returned ``Outcome`` their own way.
"""

from __future__ import annotations

import asyncio
import traceback
from typing import Any

import msgspec

from pgqueue import logging as log_context
from pgqueue import otel
from pgqueue.errors import InvalidInput, PayloadTooLarge
from pgqueue.outcomes import (
    Cancelled,
    Completed,
    Failed,
    Outcome,
    Permanent,
    Released,
    Retry,
    WaitForSignal,
    Waiting,
    unrecordable,
)
from pgqueue.tasks import Task, check_result_size
from pgqueue.worker.context import Context, Reporter
from pgqueue.worker.handlers import Handler

TRACEBACK_CHARS = 8000  # enough to debug, small enough for the row and the stream


def error_info(exc: BaseException, *, retryable: bool, kind: str | None = None) -> dict[str, Any]:
    """The ``error`` column: type, message, retryable flag and a bounded traceback."""
    tb = "".join(traceback.format_exception(exc))
    return {
        "type": kind or type(exc).__name__,
        "message": str(exc) or type(exc).__name__,
        "retryable": retryable,
        "traceback": tb[-TRACEBACK_CHARS:],
    }


async def execute(
    task: Task,
    handler: Handler,
    reporter: Reporter,
    *,
    shutting_down: asyncio.Event | None = None,
    max_result_bytes: int | None = None,
) -> tuple[Outcome, Context]:
    """Run the handler for this attempt with its timeout; never raises for handler errors.

    Cancellation of the calling asyncio task means cancel-requested (``Cancelled``) unless
    ``shutting_down`` is set (``Released``). The attempt runs in the task's trace (a
    consumer span, pgqueue/otel.py) and its log lines name the task (pgqueue/logging.py).
    A result over ``max_result_bytes`` (the one result limit, ``Settings.result_limit``)
    cannot be recorded: a permanent failure of type ``unrecordable_outcome``, as HTTP
    complete refuses it with 413.
    """
    with otel.processing(task) as span, log_context.bind(**log_context.task_fields(task)):
        outcome, ctx = await _attempt(task, handler, reporter, shutting_down, max_result_bytes)
        span.ended(type(outcome).__name__.lower(), getattr(outcome, "error", None))
    return outcome, ctx


async def _call(handler: Handler, ctx: Context, payload: Any) -> Any:
    if handler.is_async:
        return await handler.fn(ctx, payload)
    return await asyncio.to_thread(handler.fn, ctx, payload)


async def _attempt(
    task: Task,
    handler: Handler,
    reporter: Reporter,
    shutting_down: asyncio.Event | None,
    max_result_bytes: int | None,
) -> tuple[Outcome, Context]:
    ctx = Context(task, reporter)
    timeout_s = task.timeout_s or handler.timeout_s
    try:
        if task.depends_on:
            ctx.dependency_results = await reporter.dependency_results(task)
        payload = handler.decode_payload(task.payload)
        if timeout_s is None:  # no timer to arm (most tasks): the call alone
            result = await _call(handler, ctx, payload)
        else:
            async with asyncio.timeout(timeout_s):
                result = await _call(handler, ctx, payload)
        encoded = msgspec.json.encode(result)  # unstorable: the handler's bug, say so now
        completed = Completed(result=result, usage=ctx.usage, exit_code=ctx.exit_code)
        try:
            check_result_size(len(encoded), max_result_bytes)
        except PayloadTooLarge as exc:  # recorded once as a permanent failure instead
            return unrecordable(completed, str(exc), exit_code=ctx.exit_code), ctx
        else:
            return completed, ctx
    except TimeoutError as exc:
        error = error_info(exc, retryable=True, kind="timeout")
        error["message"] = f"attempt exceeded its timeout of {timeout_s}s"
        return Failed(error=error, retryable=True, usage=ctx.usage, exit_code=ctx.exit_code), ctx
    except WaitForSignal as wait:  # the attempt ends as a wait (SPEC §11)
        return Waiting(signal=wait.signal, timeout_s=wait.timeout_s, usage=ctx.usage), ctx
    except asyncio.CancelledError:
        if shutting_down is not None and shutting_down.is_set() and not ctx.cancel_requested:
            return Released(usage=ctx.usage), ctx
        return Cancelled(usage=ctx.usage), ctx
    except Retry as exc:
        return Failed(
            error=error_info(exc, retryable=True, kind="retry"),
            retryable=True,
            retry_in_s=exc.in_s,
            usage=ctx.usage,
            exit_code=ctx.exit_code,
        ), ctx
    except InvalidInput as exc:  # the payload does not fit the handler's annotated type
        return Failed(
            error=error_info(exc, retryable=False, kind="invalid_payload"),
            retryable=False,
            usage=ctx.usage,
        ), ctx
    except Exception as exc:
        permanent = isinstance(exc, (Permanent, *handler.permanent))
        return Failed(
            error=error_info(exc, retryable=not permanent),
            retryable=not permanent,
            usage=ctx.usage,
            exit_code=getattr(exc, "exit_code", ctx.exit_code),
        ), ctx
