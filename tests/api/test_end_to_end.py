"""The whole data path once, with nothing stood in for: HTTP enqueue → table → NOTIFY → a real
local ``Worker`` claims it → the handler runs → the outbox records the outcome → the audit
trigger's NOTIFY → the API's hub → the subscriber's WebSocket sees ``completed``."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

import pgqueue
from pgqueue.stream import StateMessage, TaskMessage
from tests.api.conftest import Api
from tests.helpers import running_worker

app = pgqueue.App()


@app.task("e2e.double")
async def double(ctx: pgqueue.Context, payload: dict[str, Any]) -> dict[str, Any]:
    await ctx.progress(50, "halfway")
    return {"doubled": payload["n"] * 2, "attempt": ctx.task.attempts}


async def test_http_enqueue_local_worker_websocket_completed(
    api: Api, alice: httpx.AsyncClient
) -> None:
    created = await alice.post("/tasks", json={"kind": "e2e.double", "payload": {"n": 21}})
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    async with api.client(api.tokens.alice) as client:
        stream = client.stream(task_ids=[task_id])
        first = await asyncio.wait_for(anext(stream), 15)
        assert isinstance(first, StateMessage) and str(first.task.id) == task_id
        assert first.task.status == "pending"  # no worker yet: it waits in the table
        async with running_worker(app, api.settings, concurrency=2):
            seen: list[TaskMessage] = []
            while not seen or seen[-1].event != "completed":
                message = await asyncio.wait_for(anext(stream), 30)
                assert isinstance(message, TaskMessage), (seen, message)
                seen.append(message)
        await stream.aclose()
    assert [m.event for m in seen] == ["started", "progress", "completed"]
    assert seen[1].task.progress is not None and seen[1].task.progress["percent"] == 50
    done = seen[-1].task
    assert done.status == "completed" and done.result == {"doubled": 42, "attempt": 1}
    # The stream told the truth: the task and its audit trail say the same over HTTP.
    got = (await alice.get(f"/tasks/{task_id}")).json()
    assert (got["status"], got["result"]) == ("completed", {"doubled": 42, "attempt": 1})
    trail = (await alice.get(f"/tasks/{task_id}/events")).json()
    assert [e["event"] for e in trail] == ["created", "started", "progress", "completed"]
