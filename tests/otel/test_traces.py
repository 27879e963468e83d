"""One trace from the enqueue to the handler (SPEC §15), with the SDK's in-memory exporter:
in one process, across processes through the database, and through the HTTP API to a remote
worker in another process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

from pgqueue.queue import Queue
from pgqueue.settings import Settings
from pgqueue.tasks import Status
from tests.api.conftest import create_token, serving
from tests.helpers import ROOT, fast_settings, running_worker
from tests.otel.apps import app

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def _sdk() -> Iterator[None]:
    """An SDK for this process (a global: it can be set only once per process); the tests
    after this module find it shut down, exporting nothing."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    yield
    provider.shutdown()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


def _one(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [s for s in spans.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in spans.get_finished_spans()]
    return found[0]


def _context(span: ReadableSpan) -> SpanContext:
    """A finished span's own context (the SDK types it optional; every finished span has it)."""
    assert span.context is not None
    return span.context


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


async def test_enqueue_and_handler_are_one_trace(
    settings: Settings, queue: Queue, spans: InMemorySpanExporter
) -> None:
    with trace.get_tracer("test").start_as_current_span("agent step") as agent:
        task = await queue.enqueue("otel.where", {})
    assert task.traceparent is not None
    async with running_worker(app, fast_settings(settings.dsn)):
        done = await queue.wait(task.id, timeout_s=30)
    assert done.status is Status.COMPLETED
    assert done.traceparent == task.traceparent  # stored as it was sent

    trace_id = agent.get_span_context().trace_id
    send = _one(spans, "send default")
    process = _one(spans, "process default")
    inside = _one(spans, "inside the handler")
    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert {_context(s).trace_id for s in (send, process, inside)} == {trace_id}
    assert send.parent is not None and send.parent.span_id == agent.get_span_context().span_id
    assert task.traceparent[:53] == f"00-{_hex(trace_id, 32)}-{_hex(_context(send).span_id, 16)}-"
    assert process.parent is not None and process.parent.span_id == _context(send).span_id
    assert inside.parent is not None and inside.parent.span_id == _context(process).span_id
    assert send.attributes is not None and process.attributes is not None
    assert send.attributes["messaging.message.id"] == str(task.id)
    assert process.attributes["messaging.message.id"] == str(task.id)
    assert process.attributes["messaging.system"] == "pgqueue"
    assert process.attributes["pgqueue.task.attempt"] == 1
    assert process.attributes["pgqueue.task.outcome"] == "completed"
    assert done.result["parent_span_id"] == _hex(_context(send).span_id, 16)


async def test_a_failed_attempt_is_an_error_span_with_the_exception(
    settings: Settings, queue: Queue, spans: InMemorySpanExporter
) -> None:
    task = await queue.enqueue("otel.fail", {})
    async with running_worker(app, fast_settings(settings.dsn)):
        assert (await queue.wait(task.id, timeout_s=30)).status is Status.FAILED
    process = _one(spans, "process default")
    assert process.status.status_code is StatusCode.ERROR
    assert process.status.description == "Permanent: no luck"
    (event,) = [e for e in process.events if e.name == "exception"]
    assert event.attributes is not None and event.attributes["exception.type"] == "Permanent"


async def test_a_batch_shares_one_producer_span(queue: Queue, spans: InMemorySpanExporter) -> None:
    tasks = await queue.enqueue_many([{"kind": "otel.where"} for _ in range(3)])
    send = _one(spans, "send default")
    assert send.attributes is not None and send.attributes["messaging.batch.message_count"] == 3
    assert {t.traceparent[:53] for t in tasks if t.traceparent} == {
        f"00-{_hex(_context(send).trace_id, 32)}-{_hex(_context(send).span_id, 16)}-"
    }


def _worker_env(dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGQUEUE_", "OTEL_"))}
    env.update(PGQUEUE_DSN=dsn, PGQUEUE_TEST_OTEL="1", PYTHONPATH=str(ROOT))
    return env


async def _worker(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    """``pgqueue worker tests.otel.apps:app`` in a process with an SDK of its own."""
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pgqueue", "--log-level", "WARNING", "worker"),
        *("tests.otel.apps:app", *args),
        cwd=ROOT,
        env=env,
    )


@pytest.fixture
async def api_url(settings: Settings) -> AsyncIterator[str]:
    async with serving(fast_settings(settings.dsn)) as url:
        yield url


async def test_trace_goes_through_http_to_a_remote_worker_process(
    settings: Settings, api_url: str, spans: InMemorySpanExporter
) -> None:
    import pgqueue

    token = await create_token(settings.dsn, "w", "worker")
    admin = await create_token(settings.dsn, "root", "admin")
    worker = await _worker("--url", api_url, "--token", token, env=_worker_env(""))
    try:
        async with pgqueue.Client(api_url, admin) as client:
            with trace.get_tracer("test").start_as_current_span("agent") as agent:
                task = await client.submit("otel.where", {})
            done = await client.wait(task.id, timeout_s=60)
    finally:
        worker.terminate()
        await asyncio.wait_for(worker.wait(), 30)
    assert done.status is Status.COMPLETED, done.error
    send = _one(spans, "send default")  # recorded by the API, in this process
    assert send.parent is not None and send.parent.span_id == agent.get_span_context().span_id
    # the remote worker's consumer span: same trace, child of the API's producer span
    assert done.result == {
        "trace_id": _hex(agent.get_span_context().trace_id, 32),
        "span_id": done.result["span_id"],
        "parent_span_id": _hex(_context(send).span_id, 16),
        "name": "process default",
        "kind": str(SpanKind.CONSUMER),
    }


async def test_trace_goes_through_the_database_to_a_worker_process(
    settings: Settings, queue: Queue, spans: InMemorySpanExporter
) -> None:
    worker = await _worker(env=_worker_env(settings.dsn))
    try:
        with trace.get_tracer("test").start_as_current_span("producer side") as parent:
            task = await queue.enqueue("otel.where", {})
        done = await queue.wait(task.id, timeout_s=60)
    finally:
        worker.terminate()
        await asyncio.wait_for(worker.wait(), 30)
    send = _one(spans, "send default")
    assert done.result["trace_id"] == _hex(parent.get_span_context().trace_id, 32)
    assert done.result["parent_span_id"] == _hex(_context(send).span_id, 16)
    assert done.result["name"] == "process default"


async def test_the_traceparent_header_is_the_producer_spans_parent(
    api_url: str, settings: Settings, spans: InMemorySpanExporter
) -> None:
    admin = await create_token(settings.dsn, "root", "admin")
    caller = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        headers = {"Authorization": f"Bearer {admin}"}
        one = await http.post(
            "/tasks", json={"kind": "k"}, headers={**headers, "traceparent": caller}
        )
        batch = await http.post(
            "/tasks/batch",
            json={"tasks": [{"kind": "k"}, {"kind": "k"}]},
            headers={**headers, "traceparent": caller},
        )
        bad = await http.post(
            "/tasks", json={"kind": "k"}, headers={**headers, "traceparent": "00-zz-nonsense"}
        )
    assert one.status_code == 201 and batch.status_code == 201, (one.text, batch.text)
    for task in [one.json(), *batch.json()]:
        assert task["traceparent"].startswith("00-" + "ab" * 16 + "-")  # the caller's trace
    sends = [s for s in spans.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    assert [s.parent.span_id for s in sends[:2] if s.parent] == [int("cd" * 8, 16)] * 2
    # a malformed header is ignored (Trace Context): the task is created all the same
    assert bad.status_code == 201 and "ab" * 16 not in bad.json()["traceparent"]


@pytest.mark.parametrize(
    "setup",
    [
        'sys.modules["opentelemetry"] = None  # as if `pgqueue[otel]` were not installed',
        "pass  # the API installed, no SDK configured: spans would be no-ops, so none is made",
    ],
)
def test_without_the_extra_tracing_is_a_no_op_and_headers_still_pass_through(
    dsn: str, setup: str
) -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        SETUP
        import pgqueue
        from pgqueue import otel
        from pgqueue.tasks import NewTask
        assert not otel.ENABLED or not otel._tracing()
        header = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
        (stamped,) = otel.sending([NewTask(kind="k")], parent=header).__enter__().tasks
        assert stamped.traceparent == header
        assert otel.current_headers() == {}

        async def main():
            async with pgqueue.Queue(sys.argv[1]) as q:
                task = await q.enqueue("k", {})
                assert task.traceparent is None, task
                assert (await q.get(task.id)).traceparent is None
        asyncio.run(main())
        print("ok")
        """
    ).replace("SETUP", setup)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", script, dsn], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


async def test_a_child_enqueued_by_a_handler_stays_in_the_trace(
    settings: Settings, queue: Queue, spans: InMemorySpanExporter
) -> None:
    with trace.get_tracer("test").start_as_current_span("agent") as agent:
        task = await queue.enqueue("otel.fan_out", {})
    async with running_worker(app, fast_settings(settings.dsn), concurrency=2):
        done = await queue.wait(task.id, timeout_s=60)
    assert done.status is Status.COMPLETED, done.error
    trace_id = agent.get_span_context().trace_id
    assert done.result["child_result"]["trace_id"] == _hex(trace_id, 32)
    parent_process = next(
        s
        for s in spans.get_finished_spans()
        if s.name == "process default"
        and s.attributes is not None
        and s.attributes["messaging.message.id"] == str(task.id)
    )
    child_send = next(
        s
        for s in spans.get_finished_spans()
        if s.kind is SpanKind.PRODUCER
        and s.parent is not None
        and s.parent.span_id == _context(parent_process).span_id
    )
    assert done.result["child_result"]["parent_span_id"] == _hex(_context(child_send).span_id, 16)
