"""``pgqueue mcp`` (SPEC §16) driven by the official SDK's own stdio client, against a real
server: every tool is an API call with the server's token, and API errors come back as MCP
tool errors carrying the API's detail."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncGenerator
from typing import Any

import httpx
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.api.conftest import Api
from tests.helpers import ROOT

TOOLS = {
    "enqueue_task",
    "get_task",
    "wait_task",
    "list_tasks",
    "cancel_task",
    "retry_task",
    "signal_task",
    "why_task",
}


@contextlib.asynccontextmanager
async def mcp_session(api: Api) -> AsyncGenerator[ClientSession, None]:
    """An MCP session with `pgqueue mcp` as a subprocess, acting with Alice's token.

    (A context manager in the test, not a fixture: the SDK's anyio scopes must be entered
    and left by the same task, and pytest-asyncio tears fixtures down in another.)"""
    params = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "pgqueue",
            "--log-level",
            "WARNING",
            "mcp",
            "--url",
            api.url,
            "--token",
            api.tokens.alice,
        ],
        env={"PYTHONPATH": str(ROOT)},
        cwd=str(ROOT),
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
        await s.initialize()
        yield s


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool's result as JSON; fails the test on a tool error."""
    result = await asyncio.wait_for(session.call_tool(tool, arguments), 60)
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)  # type: ignore[union-attr]


async def error(session: ClientSession, tool: str, **arguments: Any) -> str:
    """The text of a tool error (fails the test if the call succeeds)."""
    result = await asyncio.wait_for(session.call_tool(tool, arguments), 60)
    assert result.is_error, result.content
    return str(result.content[0].text)  # type: ignore[union-attr]


async def test_tools_are_listed_with_descriptions(api: Api) -> None:
    async with mcp_session(api) as session:
        tools = (await session.list_tools()).tools
    assert {t.name for t in tools} == TOOLS
    for tool in tools:
        assert tool.description and len(tool.description) > 60, tool.name
    enqueue = next(t for t in tools if t.name == "enqueue_task")
    assert enqueue.input_schema["required"] == ["kind"]


async def test_enqueue_wait_get_list_cancel_retry(api: Api, worker: httpx.AsyncClient) -> None:
    async with mcp_session(api) as session:
        await enqueue_wait_get_list_cancel_retry(session, worker)


async def enqueue_wait_get_list_cancel_retry(
    session: ClientSession, worker: httpx.AsyncClient
) -> None:
    task = await call(
        session, "enqueue_task", kind="agent.step", payload={"goal": "x"}, queue="mcp", tags=["t1"]
    )
    assert task["status"] == "pending" and task["user_id"] == "alice"

    async def work() -> None:
        [claimed] = (
            await worker.post(
                "/tasks/claim", json={"worker_id": "w", "queues": ["mcp"], "wait_s": 10}
            )
        ).json()
        await asyncio.sleep(0.5)  # the wait below is already parked
        r = await worker.post(
            f"/tasks/{claimed['id']}/complete",
            json={"lease": claimed["lease"], "result": {"ok": 1}},
        )
        assert r.status_code == 200, r.text

    working = asyncio.create_task(work())
    done = await call(session, "wait_task", task_id=task["id"], timeout_s=30)
    await working
    assert done["status"] == "completed" and done["result"] == {"ok": 1}
    assert (await call(session, "get_task", task_id=task["id"]))["status"] == "completed"

    page = await call(session, "list_tasks", tag="t1", limit=5)
    assert [t["id"] for t in page["items"]] == [task["id"]] and page["next_cursor"] is None

    other = await call(session, "enqueue_task", kind="agent.step", queue="mcp-idle")
    assert (await call(session, "cancel_task", task_id=other["id"]))["status"] == "cancelled"
    assert (await call(session, "retry_task", task_id=other["id"]))["status"] == "pending"


async def test_api_errors_are_tool_errors_with_the_detail(api: Api, bob: httpx.AsyncClient) -> None:
    async with mcp_session(api) as session:
        await api_errors_are_tool_errors(session, bob)


async def api_errors_are_tool_errors(session: ClientSession, bob: httpx.AsyncClient) -> None:
    # A field out of range: the detail names it.
    assert "priority" in await error(session, "enqueue_task", kind="k", priority=5000)
    # Another user's task does not exist for this token.
    theirs = (await bob.post("/tasks", json={"kind": "k"})).json()
    assert "does not exist" in await error(session, "get_task", task_id=theirs["id"])
    # A state conflict: a finished task cannot be cancelled.
    mine = await call(session, "enqueue_task", kind="k", queue="mcp-err")
    await call(session, "cancel_task", task_id=mine["id"])
    assert "cancel" in (await error(session, "cancel_task", task_id=mine["id"])).lower()
    # A signal to a finished task (409), or to a server without the endpoint (404/405): the
    # API's detail after the SDK's prefix, and the MCP server keeps serving.
    prefix = "Error executing tool signal_task: "
    text = await error(session, "signal_task", task_id=mine["id"], name="approve")
    assert text.startswith(prefix) and len(text) > len(prefix), text
    # The session still works after errors.
    assert (await call(session, "get_task", task_id=mine["id"]))["status"] == "cancelled"
