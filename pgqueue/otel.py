"""OpenTelemetry traces of tasks (SPEC §15): one trace from the enqueue to the handler.

An enqueue records a PRODUCER span (``send <queue>``) and stores its W3C ``traceparent`` on
the task (migration 0008); the worker that runs the task — in another process, or a remote
worker that claimed it over HTTP — runs the handler inside a CONSUMER span
(``process <queue>``) whose parent is that producer span. An HTTP producer's ``traceparent``
header makes the producer span a child of the caller's span, and ``pgqueue.Client`` sends
the current one, so an agent's trace goes through the API, the queue and the worker.

Active only with the extra installed (``pip install 'pgqueue[otel]'``) and spans recorded
only once an SDK is configured (e.g. ``opentelemetry-instrument pgqueue worker ...``, or a
``TracerProvider`` set by the application). Without the extra every function here returns
at once (``ENABLED`` is checked first): no import, no span, no allocation beyond a
``nullcontext``. A ``traceparent`` sent by an HTTP producer is still stored then, so workers
that do trace continue the caller's trace.

Attributes follow OpenTelemetry's messaging conventions (``messaging.system = "pgqueue"``,
``messaging.destination.name`` = the queue, ``messaging.message.id`` = the task id) plus
``pgqueue.task.kind``, ``pgqueue.task.attempt`` and ``pgqueue.task.outcome``.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Generator, Sequence
from contextlib import AbstractContextManager
from functools import cache
from typing import TYPE_CHECKING, Any, Final

import msgspec

from pgqueue.tasks import NewTask, Task


def _installed() -> bool:
    """Whether the `otel` extra is installed; without it everything below is a no-op."""
    try:
        importlib.import_module("opentelemetry.trace.propagation.tracecontext")
    except ImportError:
        return False
    return True


ENABLED: Final = _installed()

# Type checkers always see these names; at run time they exist only with the extra, and
# every use below is reached only when ENABLED.
if TYPE_CHECKING or ENABLED:
    from opentelemetry import trace
    from opentelemetry.context import Context as OtelContext
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SYSTEM = "pgqueue"
_TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def valid_traceparent(value: str | None) -> str | None:
    """``value`` if it is a W3C ``traceparent`` (version 00), else None.

    Trace Context says a receiver ignores a malformed header rather than refusing the
    request, so a bad header costs the producer its trace, never its task.
    """
    if value is None or len(value) != 55 or not _TRACEPARENT.match(value):
        return None
    if value[3:35] == "0" * 32 or value[36:52] == "0" * 16:  # all-zero ids are invalid
        return None
    return value


class Send:
    """The producer span of one enqueue call and the tasks to insert, stamped with it."""

    def __init__(self, tasks: list[NewTask], span: Any = None) -> None:
        self.tasks = tasks
        self._span = span

    def created(self, tasks: Sequence[Task]) -> None:
        """Name the task on the span once the database gave it its id."""
        if self._span is not None and len(tasks) == 1 and self._span.is_recording():
            self._span.set_attribute("messaging.message.id", str(tasks[0].id))


def sending(tasks: list[NewTask], parent: str | None = None) -> AbstractContextManager[Send]:
    """Around an enqueue: a producer span whose ``traceparent`` the tasks carry.

    ``parent`` is an HTTP producer's ``traceparent`` header (already validated); without it
    the span is a child of the current span. Tasks that already carry a ``traceparent``
    keep it (their producer traced them). One span per call: a batch shares it.
    """
    if not ENABLED or (parent is None and not _tracing()):
        if parent is not None:
            tasks = [t if t.traceparent else _stamped(t, parent) for t in tasks]
        return contextlib.nullcontext(Send(tasks))
    return _sending(tasks, parent)


def _tracing() -> bool:
    """Whether a span started now would be recorded or continue a trace.

    Not with the API alone (no SDK configured) outside any trace: such a span is a no-op
    whose context is invalid, so skipping it changes nothing and saves its cost
    (docs/benchmarks.md, "Measurements behind the code").
    """
    provider = trace.get_tracer_provider()
    if not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return True
    return bool(trace.get_current_span().get_span_context().is_valid)


def _stamped(task: NewTask, traceparent: str) -> NewTask:
    return msgspec.structs.replace(task, traceparent=traceparent)


@cache
def _tracer() -> Any:
    # A ProxyTracer until an SDK is configured; it follows the provider set later.
    return trace.get_tracer("pgqueue")


def _context_of(traceparent: str | None) -> OtelContext | None:
    if traceparent is None:
        return None  # the current context
    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


@contextlib.contextmanager
def _sending(tasks: list[NewTask], parent: str | None) -> Generator[Send, None, None]:
    todo = [i for i, t in enumerate(tasks) if t.traceparent is None]
    if not todo:
        yield Send(tasks)
        return
    queues = sorted({tasks[i].queue for i in todo})
    kinds = sorted({tasks[i].kind for i in todo})
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
    }
    if len(queues) == 1:
        attributes["messaging.destination.name"] = queues[0]
    if len(kinds) == 1:
        attributes["pgqueue.task.kind"] = kinds[0]
    if len(todo) > 1:
        attributes["messaging.batch.message_count"] = len(todo)
    name = f"send {queues[0]}" if len(queues) == 1 else "send"
    with _tracer().start_as_current_span(
        name, context=_context_of(parent), kind=trace.SpanKind.PRODUCER, attributes=attributes
    ) as span:
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(span))
        traceparent = carrier.get("traceparent")
        if traceparent is not None:  # None: no SDK and no trace to continue
            tasks = list(tasks)
            for i in todo:
                tasks[i] = _stamped(tasks[i], traceparent)
        yield Send(tasks, span)


class Process:
    """The consumer span around one attempt of a task's handler."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def ended(self, outcome: str, error: dict[str, Any] | None = None) -> None:
        """How the attempt ended (``completed``, ``failed``, ...) and its error, if any."""
        span = self._span
        if span is None or not span.is_recording():
            return
        span.set_attribute("pgqueue.task.outcome", outcome)
        if error is not None:
            message = f"{error.get('type')}: {error.get('message')}"
            span.add_event(
                "exception",
                {
                    "exception.type": str(error.get("type")),
                    "exception.message": str(error.get("message")),
                    "exception.stacktrace": str(error.get("traceback", "")),
                },
            )
            span.set_status(trace.Status(trace.StatusCode.ERROR, message))


_NO_PROCESS = Process()


def processing(task: Task) -> AbstractContextManager[Process]:
    """Around a handler: a consumer span in the trace of the task's ``traceparent``."""
    if not ENABLED or (task.traceparent is None and not _tracing()):
        return contextlib.nullcontext(_NO_PROCESS)
    return _processing(task)


@contextlib.contextmanager
def _processing(task: Task) -> Generator[Process, None, None]:
    with _tracer().start_as_current_span(
        f"process {task.queue}",
        context=_context_of(valid_traceparent(task.traceparent)),
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": task.queue,
            "messaging.message.id": str(task.id),
            "pgqueue.task.kind": task.kind,
            "pgqueue.task.attempt": task.attempts,
        },
    ) as span:
        yield Process(span)


def current_headers() -> dict[str, str]:
    """The ``traceparent`` header of the current span, for an HTTP enqueue ({} if none)."""
    if not ENABLED or not _tracing():
        return {}
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return {"traceparent": carrier["traceparent"]} if "traceparent" in carrier else {}
