"""A Model Context Protocol server on stdio whose tools are calls of the HTTP API (SPEC §16).

Built on the official ``mcp`` SDK (the optional extra ``pgqueue[mcp]``). Every tool goes
through one ``pgqueue.Client`` holding the token it was started with, so the token's rights
are the tools' rights: a ``user`` token's agent sees and steers its own tasks only. An API
error becomes an MCP tool error (``is_error``) whose text is the API's ``detail``, which
names the offending field, so the model can correct its call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from pgqueue.client import Client
from pgqueue.errors import PgQueueError

MAX_WAIT_S = 300.0

INSTRUCTIONS = """\
pgqueue is a durable task queue. A task is a unit of work with a `kind` (which handler runs
it), a JSON `payload` (its input) and a `queue`; workers run it and record a `result` or an
`error`. Statuses: pending -> running -> completed | failed | cancelled (also `blocked` on
dependencies, `waiting` for a signal). Typical use: enqueue_task, then wait_task until it is
terminal and read `result`; get_task shows progress; why_task explains a task that does not
start. Every tool acts with this server's token: you see only the tasks it may see.
"""


def _plain(value: Any) -> Any:
    """A struct as JSON-ready builtins (timestamps as RFC 3339 strings)."""
    return msgspec.to_builtins(value)


async def _call(awaitable: Any) -> Any:
    """Await an API call; an API error becomes a tool error carrying its detail."""
    try:
        return _plain(await awaitable)
    except PgQueueError as exc:
        raise ToolError(str(exc)) from None


def _given(arguments: dict[str, Any]) -> dict[str, Any]:
    """The optional arguments the model gave (None: left out, the API's default applies)."""
    return {name: value for name, value in arguments.items() if value is not None}


def _seconds(value: float) -> float:
    """A wait the model asked for, within 0..MAX_WAIT_S."""
    return min(max(value, 0.0), MAX_WAIT_S)


# The tools that take a task id and nothing else: name, description, the API call.
_BY_ID: tuple[tuple[str, str, Callable[[Client, str], Awaitable[Any]]], ...] = (
    (
        "get_task",
        "Get a task by id: its `status`, `progress` ({percent, message}), `result` once "
        "completed, `error` once failed, `attempts`, timestamps. Does not wait.",
        Client.get,
    ),
    (
        "cancel_task",
        "Cancel a task. A pending, blocked or waiting task is cancelled at once; a running "
        "one is asked to stop (`cancel_requested`) and ends cancelled. A finished task "
        "cannot be cancelled (error). Returns the task.",
        Client.cancel,
    ),
    (
        "retry_task",
        "Put a failed or cancelled task back to pending for one more attempt (its "
        "checkpoint is kept). Any other status is an error. Returns the task.",
        Client.retry,
    ),
    (
        "why_task",
        "Explain why a task is not running: `reasons`, each with a `code` (scheduled, "
        "blocked, waiting_signal, queue_paused, concurrency_limit, per_user_limit, "
        "rate_limited, budget_exhausted, circuit_open, no_worker, backlog) and a human "
        "`detail`. A running or finished task has no reasons.",
        Client.why,
    ),
)


def _add_by_id(
    server: MCPServer,
    client: Client,
    name: str,
    description: str,
    call: Callable[[Client, str], Awaitable[Any]],
) -> None:
    """Register a tool ``name(task_id)`` answering with ``call(client, task_id)``."""

    async def tool(task_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = await _call(call(client, task_id))
        return answer

    server.add_tool(tool, name=name, description=description)


def build(client: Client) -> MCPServer:
    """The server with its eight tools, each calling the API through ``client``."""
    server: MCPServer = MCPServer("pgqueue", instructions=INSTRUCTIONS)

    @server.tool(
        description=(
            "Enqueue a task and return it (with its `id`). `kind` names the handler (e.g. "
            "'email.send'); `payload` is its JSON input. Optional: `queue` (default "
            "'default'), `priority` (-1000..1000, higher first), `delay_s` (start no earlier "
            "than this many seconds from now), `max_retries`, `timeout_s` (per attempt), "
            "`idempotency_key` (the same key returns the same task instead of a duplicate), "
            "`tags`, `parent_id` (the task this one is a step of), `depends_on` (task ids that "
            "must complete first). `wait_s` (<= 300) holds the answer until the task finished "
            "or that many seconds passed."
        )
    )
    async def enqueue_task(
        kind: str,
        payload: dict[str, Any] | None = None,
        queue: str | None = None,
        priority: int | None = None,
        delay_s: float | None = None,
        max_retries: int | None = None,
        timeout_s: float | None = None,
        idempotency_key: str | None = None,
        tags: list[str] | None = None,
        parent_id: str | None = None,
        depends_on: list[str] | None = None,
        wait_s: float | None = None,
    ) -> dict[str, Any]:
        fields = {
            "queue": queue,
            "priority": priority,
            "delay_s": delay_s,
            "max_retries": max_retries,
            "timeout_s": timeout_s,
            "idempotency_key": idempotency_key,
            "tags": tags,
            "parent_id": parent_id,
            "depends_on": depends_on,
        }
        wait = None if wait_s is None else _seconds(wait_s)
        task: dict[str, Any] = await _call(
            client.submit(kind, payload, wait_s=wait, **_given(fields))
        )
        return task

    @server.tool(
        description=(
            "Wait until a task is terminal (completed, failed or cancelled) or `timeout_s` "
            "(default 60, at most 300) passed, and return it. Check `status`: if it is not "
            "terminal yet, call again or use why_task to see what holds it."
        )
    )
    async def wait_task(task_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
        task: dict[str, Any] = await _call(client.wait(task_id, timeout_s=_seconds(timeout_s)))
        return task

    @server.tool(
        description=(
            "List tasks, newest first. Filters (all optional): `status` (pending, running, "
            "completed, failed, cancelled, blocked, waiting), `queue`, `kind`, `tag`, "
            "`parent_id` (the steps of a task). `limit` 1..500 (default 20). Returns `items` "
            "and `next_cursor`: pass it as `cursor` for the next page (null: no more)."
        )
    )
    async def list_tasks(
        status: str | None = None,
        queue: str | None = None,
        kind: str | None = None,
        tag: str | None = None,
        parent_id: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        filters = {
            "status": status, "queue": queue, "kind": kind, "tag": tag, "parent_id": parent_id
        }  # fmt: skip
        page: dict[str, Any] = await _call(
            client.list(limit=limit, cursor=cursor, **_given(filters))
        )
        return page

    @server.tool(
        description=(
            "Send signal `name` (with an optional JSON `payload`) to a task: a task `waiting` "
            "for that signal (its `waiting_for`) runs again and receives the payload, e.g. a "
            "human's approval. A signal sent before the wait is kept. Returns the task."
        )
    )
    async def signal_task(
        task_id: str, name: str, payload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        task: dict[str, Any] = await _call(client.signal(task_id, name, payload))
        return task

    for name, description, call in _BY_ID:
        _add_by_id(server, client, name, description, call)
    return server


async def serve(url: str, token: str | None) -> None:
    """Serve the tools on stdin/stdout until the client closes the stream."""
    async with Client(url, token, timeout_s=30) as client:
        await build(client).run_stdio_async()
