"""Server-Sent Events (SPEC §4, §5): ``GET /tasks/{id}/stream`` and ``GET /stream?queue=…``,
``id:`` = event id, ``Last-Event-ID`` resumes (on another server process too), and the
``since_expired`` error for a resume point older than the retained events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import websockets

from pgqueue.settings import Settings
from pgqueue.stream import Position
from tests.api.conftest import Api, Tokens, free_port, serve_process, wait_healthy


class Event:
    def __init__(self, kind: str, data: dict[str, Any], event_id: str | None) -> None:
        self.kind, self.data, self.id = kind, data, event_id


async def sse(response: httpx.Response) -> AsyncIterator[Event]:
    """The events of a text/event-stream response (comments skipped)."""
    kind, data, event_id = "message", "", None
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if data:
                yield Event(kind, json.loads(data), event_id)
            kind, data, event_id = "message", "", None
        elif line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line.startswith("id: "):
            event_id = line[4:]


async def take(events: AsyncIterator[Event], n: int, kind: str = "task") -> list[Event]:
    got: list[Event] = []
    while len(got) < n:
        event = await asyncio.wait_for(anext(events), 15)
        if event.kind == kind:
            got.append(event)
    return got


async def test_task_stream_state_then_changes_with_event_ids(
    api: Api, alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    task = (await alice.post("/tasks", json={"kind": "k"})).json()
    # EventSource cannot send headers: the token rides in the URL.
    async with (
        httpx.AsyncClient(base_url=api.url, timeout=30) as http,
        http.stream("GET", f"/tasks/{task['id']}/stream?token={api.tokens.alice}") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse(response)
        (state,) = await take(events, 1, "state")
        await take(events, 1, "subscribed")
        assert state.data["task"]["status"] == "pending" and state.id is None
        await alice.post(f"/tasks/{task['id']}/cancel")
        (change,) = await take(events, 1)
        assert change.data["event"] == "cancelled" and change.data["task"]["id"] == task["id"]
        assert change.id == change.data["event_id"]
    # Another user's task does not exist for Bob; a bad resume point names its field.
    assert (await bob.get(f"/tasks/{task['id']}/stream")).status_code == 404
    r = await alice.get(f"/tasks/{task['id']}/stream", headers={"Last-Event-ID": "nope"})
    assert r.status_code == 400 and "Last-Event-ID" in r.json()["detail"]
    r = await alice.get("/stream?queue=bad%20name")
    assert r.status_code == 400 and "queue" in r.json()["detail"]


async def test_last_event_id_resumes_on_another_server(
    api: Api, api_settings: Settings, tokens: Tokens, processes: list[Any], dsn: str
) -> None:
    ports = [free_port(), free_port()]
    processes.extend(serve_process(api_settings, port) for port in ports)
    first, second = (f"http://127.0.0.1:{p}" for p in ports)
    for url in (first, second):
        await wait_healthy(url)
    auth = {"Authorization": f"Bearer {tokens.alice}"}
    async with httpx.AsyncClient(timeout=30, headers=auth) as http:
        async with http.stream("GET", f"{first}/stream?queue=sse") as response:
            events = sse(response)
            await take(events, 1, "subscribed")
            batch = [{"kind": f"k{i}", "queue": "sse"} for i in range(5)]
            assert (await http.post(f"{first}/tasks/batch", json={"tasks": batch})).is_success
            seen = await take(events, 2)
        last = seen[-1].id
        assert last is not None
        batch = [{"kind": f"later{i}", "queue": "sse"} for i in range(3)]
        assert (await http.post(f"{first}/tasks/batch", json={"tasks": batch})).is_success
        async with http.stream(
            "GET", f"{second}/stream?queue=sse", headers={"Last-Event-ID": last}
        ) as response:
            rest = await take(sse(response), 6)
    kinds = [e.data["task"]["kind"] for e in seen + rest]
    assert kinds == [f"k{i}" for i in range(5)] + [f"later{i}" for i in range(3)]
    with psycopg.connect(dsn) as conn:
        trail = [r[0] for r in conn.execute("SELECT id FROM pgqueue.events ORDER BY id")]
    assert [Position.decode(e.id or "").after_id for e in seen + rest] == trail


async def test_resume_older_than_retention_is_since_expired(
    api: Api, admin: httpx.AsyncClient, dsn: str
) -> None:
    headers = {"Authorization": f"Bearer {api.tokens.admin}"}
    async with websockets.connect(api.ws_url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"op": "subscribe", "queues": ["old"]}))
        old = (await admin.post("/tasks", json={"kind": "k", "queue": "old"})).json()
        while (message := json.loads(await asyncio.wait_for(ws.recv(), 15)))["type"] != "task":
            pass
        since = message["event_id"]
    await admin.post(f"/tasks/{old['id']}/cancel")
    await admin.post("/tasks", json={"kind": "k", "queue": "old"})
    # Retention deletes the finished task and its audit trail; nothing else does.
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT pgqueue.purge('0 seconds')").fetchone() == (1,)
    async with websockets.connect(api.ws_url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"op": "subscribe", "queues": ["old"], "since": since}))
        error = json.loads(await asyncio.wait_for(ws.recv(), 15))
        assert error["type"] == "error" and error["code"] == "since_expired"
        # ...and the subscription goes on from now.
        ack = json.loads(await asyncio.wait_for(ws.recv(), 15))
        assert ack["type"] == "subscribed" and ack["queues"] == ["old"]
        fresh = (await admin.post("/tasks", json={"kind": "fresh", "queue": "old"})).json()
        while (message := json.loads(await asyncio.wait_for(ws.recv(), 15)))["type"] != "task":
            pass
        assert message["task"]["id"] == fresh["id"]
    # SSE says so, then streams from now on (an EventSource would resend the id forever).
    async with admin.stream("GET", "/stream?queue=old", headers={"Last-Event-ID": since}) as r:
        events = sse(r)
        (error_event,) = await take(events, 1, "error")
        assert error_event.data["code"] == "since_expired"
        await take(events, 1, "subscribed")
        fresh = (await admin.post("/tasks", json={"kind": "fresh", "queue": "old"})).json()
        (change,) = await take(events, 1)
        assert change.data["task"]["id"] == fresh["id"]
