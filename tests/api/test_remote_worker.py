"""The remote worker and pgqueue.Client end to end over HTTP; two server processes."""

# pyright: reportPrivateUsage=false
# (a token rotation is played by swapping the header on the remote worker's own HTTP client)

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncGenerator
from typing import Any

import pytest

import pgqueue
from pgqueue.client import Unauthorized
from pgqueue.stream import StateMessage, TaskMessage
from pgqueue.worker.remote import RemoteWorker
from tests.api.conftest import Api, free_port, serve_process, wait_healthy
from tests.helpers import fast_settings, wait_for

app = pgqueue.App()


@app.task("remote.echo")
async def echo(ctx: pgqueue.Context, payload: dict[str, Any]) -> dict[str, Any]:
    await ctx.progress(50, "halfway")
    await ctx.checkpoint("half", {"step": 1})
    ctx.add_usage(input_tokens=3, output_tokens=2, cost=0.01)
    return {"echo": payload}


@app.task("remote.flaky", max_retries=2)
async def flaky(ctx: pgqueue.Context, payload: dict[str, Any]) -> str:
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return "ok"


@app.task("remote.bad")
async def bad(ctx: pgqueue.Context, payload: dict[str, Any]) -> None:
    raise pgqueue.Permanent("never works")


@app.task("remote.slow")
async def slow(ctx: pgqueue.Context, payload: dict[str, Any]) -> None:
    await asyncio.sleep(60)


go = asyncio.Event()


@app.task("remote.fail_when_told", max_retries=5)
async def fail_when_told(ctx: pgqueue.Context, payload: dict[str, Any]) -> None:
    await go.wait()
    raise RuntimeError("a retryable failure")


@app.task("remote.huge")
async def huge(ctx: pgqueue.Context, payload: dict[str, Any]) -> str:
    return "x" * (2 * 1024 * 1024)  # over the server's 1 MiB limit: a 413


@app.task("remote.nul")
async def nul(ctx: pgqueue.Context, payload: dict[str, Any]) -> str:
    return "a\u0000b"  # valid JSON that jsonb refuses: a 400


@app.task("remote.nul_error")
async def nul_error(ctx: pgqueue.Context, payload: dict[str, Any]) -> None:
    raise pgqueue.Permanent("bad \u0000 byte")  # a fail the server refuses: a 400


@contextlib.asynccontextmanager
async def remote_worker(api: Api, **options: Any) -> AsyncGenerator[RemoteWorker, None]:
    async with api.client(api.tokens.worker) as client:
        defaults: dict[str, Any] = {"heartbeat_s": 0.3, "claim_wait_s": 2, "shutdown_grace_s": 2}
        worker = RemoteWorker(app, client, **{**defaults, **options})
        runner = asyncio.create_task(worker.run())
        await worker.started.wait()
        try:
            yield worker
        finally:
            worker.stop()
            await asyncio.wait_for(runner, 30)


async def test_remote_worker_runs_handlers_with_progress_usage_and_retries(api: Api) -> None:
    async with api.client(api.tokens.alice) as alice, remote_worker(api):
        task = await alice.submit("remote.echo", {"x": 1})
        updates: list[str] = []

        async def follow() -> None:
            async for message in alice.stream(task_ids=[task.id]):
                if isinstance(message, TaskMessage):
                    updates.append(message.event)
                    if message.event == "completed":
                        return

        follower = asyncio.create_task(follow())
        done = await alice.wait(task.id, timeout_s=30)
        assert done.status is pgqueue.Status.COMPLETED and done.result == {"echo": {"x": 1}}
        assert done.usage["input_tokens"] == 3 and done.checkpoint is not None
        await asyncio.wait_for(follower, 15)
        assert updates[-1] == "completed" and "progress" in updates

        flaky_task = await alice.submit("remote.flaky", {}, max_retries=2, backoff_base_s=0.05)
        assert (await alice.wait(flaky_task.id, timeout_s=30)).result == "ok"
        bad_task = await alice.submit("remote.bad", {})
        failed = await alice.wait(bad_task.id, timeout_s=30)
        assert failed.status is pgqueue.Status.FAILED and failed.error is not None
        assert failed.error["type"] == "Permanent"


async def test_remote_worker_obeys_cancel_from_heartbeat(api: Api) -> None:
    async with api.client(api.tokens.alice) as alice, remote_worker(api):
        task = await alice.submit("remote.slow", {})
        await wait_running(alice, task.id)
        await alice.cancel(task.id)
        done = await alice.wait(task.id, timeout_s=30)
        assert done.status is pgqueue.Status.CANCELLED


async def test_remote_worker_releases_on_shutdown(api: Api) -> None:
    async with api.client(api.tokens.alice) as alice:
        async with remote_worker(api):
            task = await alice.submit("remote.slow", {})
            await wait_running(alice, task.id)
        released = await alice.get(task.id)
        assert released.status is pgqueue.Status.PENDING and released.attempts == 0


async def test_client_errors_and_replay(api: Api) -> None:
    async with api.client(api.tokens.alice) as alice, api.client("pgq_nope") as nobody:
        first, replayed = await alice.submit_ex("k", {"a": 1}, idempotency_key="c-1")
        again, replayed_again = await alice.submit_ex("k", {"a": 1}, idempotency_key="c-1")
        assert not replayed and replayed_again and again.id == first.id
        with pytest.raises(pgqueue.Conflict, match="idempotency_key"):
            await alice.submit("k", {"a": 2}, idempotency_key="c-1")
        with pytest.raises(pgqueue.InvalidInput) as invalid:
            await alice.submit("k", priority=5000)
        assert invalid.value.field == "priority"
        with pytest.raises(pgqueue.NotFound):
            await alice.get("00000000-0000-0000-0000-000000000000")
        with pytest.raises(Unauthorized):
            await nobody.list()
        page = await alice.list(limit=1)
        assert len(page.items) == 1 and page.next_cursor is None
        cancelled = await alice.cancel(first.id)
        assert cancelled.status is pgqueue.Status.CANCELLED
        assert (await alice.retry(first.id)).status is pgqueue.Status.PENDING
        assert (await alice.events(first.id))[0].event == "created"
        many = await alice.submit_many([{"kind": "k"}, {"kind": "k"}])
        assert len(many) == 2


async def test_two_server_processes_share_updates(
    dsn: str, tokens: Any, processes: list[subprocess.Popen[bytes]]
) -> None:
    settings = fast_settings(dsn)
    ports = [free_port(), free_port()]
    processes.extend(serve_process(settings, port) for port in ports)
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    for url, proc in zip(urls, processes, strict=True):
        await wait_healthy(url, proc)
    async with (
        pgqueue.Client(urls[0], tokens.alice) as one,
        pgqueue.Client(urls[1], tokens.alice) as two,
    ):
        stream = one.stream(queues=["shared"])
        subscribed = asyncio.create_task(anext(stream))
        await asyncio.sleep(0.5)  # let the subscription reach the server
        task = await two.submit("k", {}, queue="shared")
        message = await asyncio.wait_for(subscribed, 15)
        assert isinstance(message, (TaskMessage, StateMessage))
        assert message.task.id == task.id
        await stream.aclose()


async def test_serve_refuses_without_tokens_unless_insecure(
    dsn: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    settings = fast_settings(dsn)
    refused = serve_process(settings, free_port())
    _, err = refused.communicate(timeout=60)
    assert refused.returncode == 2 and b"refusing to start without auth" in err
    port = free_port()
    processes.append(serve_process(settings, port, "--insecure"))
    await wait_healthy(f"http://127.0.0.1:{port}", processes[-1])
    async with pgqueue.Client(f"http://127.0.0.1:{port}") as anyone:
        assert (await anyone.submit("k", {})).status is pgqueue.Status.PENDING


async def wait_running(alice: pgqueue.Client, task_id: Any) -> None:
    async for message in alice.stream(task_ids=[task_id]):
        if isinstance(message, TaskMessage | StateMessage) and message.task.status == "running":
            return


async def test_a_cancel_wins_over_a_remote_retryable_failure(api: Api) -> None:
    """The worker hears of the cancel only by heartbeat (slow here): it fails the attempt
    retryably, and the task still ends cancelled, never to run again."""
    go.clear()
    async with api.client(api.tokens.alice) as alice, remote_worker(api, heartbeat_s=60):
        task = await alice.submit("remote.fail_when_told", {})
        await wait_running(alice, task.id)
        await alice.cancel(task.id)
        go.set()
        done = await alice.wait(task.id, timeout_s=30)
    assert done.status is pgqueue.Status.CANCELLED and done.attempts == 1
    assert done.error is not None and done.error["attempt_error"]["type"] == "RuntimeError"


async def test_a_cancel_wins_over_a_remote_release(api: Api) -> None:
    async with api.client(api.tokens.alice) as alice:
        async with remote_worker(api, heartbeat_s=60, shutdown_grace_s=0.2):
            task = await alice.submit("remote.slow", {})
            await wait_running(alice, task.id)
            await alice.cancel(task.id)
        done = await alice.get(task.id)
    assert done.status is pgqueue.Status.CANCELLED and done.attempts == 1


@pytest.mark.parametrize("kind", ["remote.huge", "remote.nul", "remote.nul_error"])
async def test_an_outcome_the_server_refuses_fails_its_task_once(api: Api, kind: str) -> None:
    """As the local worker does: recorded once as unrecordable_outcome, not left to the
    reaper (which would run it again and end it 'stalled')."""
    async with api.client(api.tokens.alice) as alice, remote_worker(api) as worker:
        task = await alice.submit(kind, {}, max_retries=3)
        done = await alice.wait(task.id, timeout_s=30)
        events = [e.event for e in await alice.events(task.id)]
    assert worker.recorded == 1
    assert done.status is pgqueue.Status.FAILED and done.attempts == 1
    assert done.error is not None and done.error["type"] == "unrecordable_outcome"
    assert events == ["created", "started", "failed"]


hold = asyncio.Event()


@app.task("remote.hold")
async def hold_task(ctx: pgqueue.Context, payload: dict[str, Any]) -> str:
    await hold.wait()
    return "held"


async def test_the_heartbeat_loop_survives_a_401(api: Api) -> None:
    """While its token is refused (a rotation), heartbeats fail with 401; the loop carries on
    and keeps the lease once the token works again."""
    hold.clear()
    async with api.client(api.tokens.alice) as alice, remote_worker(api) as worker:
        task = await alice.submit("remote.hold", {})
        await wait_running(alice, task.id)
        http = worker.client._http
        good = http.headers["Authorization"]
        http.headers["Authorization"] = "Bearer pgq_rotated_away"
        await asyncio.sleep(1.0)  # several heartbeats answered 401
        http.headers["Authorization"] = good
        before = (await alice.get(task.id)).heartbeat_at

        async def beating() -> bool:
            return (await alice.get(task.id)).heartbeat_at != before

        await wait_for(beating, timeout=15, what="a heartbeat after the 401s")
        hold.set()
        done = await alice.wait(task.id, timeout_s=30)
    assert (done.status, done.attempts, done.result) == (pgqueue.Status.COMPLETED, 1, "held")
