"""A Model Context Protocol server on stdio whose tools are calls of the HTTP API (SPEC §16).

Built on the official ``mcp`` SDK (the optional extra ``pgqueue[mcp]``). Every tool goes
through one ``pgqueue.Client`` holding the token it was started with, so the token's rights
are the tools' rights: a ``user`` token's agent sees and steers its own tasks only. An API
error becomes an MCP tool error (``is_error``) whose text is the API's ``detail``, which
names the offending field, so the model can correct its call.
"""

from __future__ import annotations

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
        given = {name: value for name, value in fields.items() if value is not None}
        wait = None if wait_s is None else min(max(wait_s, 0.0), MAX_WAIT_S)
        task: dict[str, Any] = await _call(client.submit(kind, payload, wait_s=wait, **given))
        return task

    @server.tool(
        description=(
            "Get a task by id: its `status`, `progress` ({percent, message}), `result` once "
            "completed, `error` once failed, `attempts`, timestamps. Does not wait."
        )
    )
    async def get_task(task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = await _call(client.get(task_id))
        return task

    @server.tool(
        description=(
            "Wait until a task is terminal (completed, failed or cancelled) or `timeout_s` "
            "(default 60, at most 300) passed, and return it. Check `status`: if it is not "
            "terminal yet, call again or use why_task to see what holds it."
        )
    )
    async def wait_task(task_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
        timeout = min(max(timeout_s, 0.0), MAX_WAIT_S)
        task: dict[str, Any] = await _call(client.wait(task_id, timeout_s=timeout))
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
        filters = {"status": status, "queue": queue, "kind": kind, "tag": tag}
        filters["parent_id"] = parent_id
        given = {name: value for name, value in filters.items() if value is not None}
        page: dict[str, Any] = await _call(client.list(limit=limit, cursor=cursor, **given))
        return page

    @server.tool(
        description=(
            "Cancel a task. A pending, blocked or waiting task is cancelled at once; a running "
            "one is asked to stop (`cancel_requested`) and ends cancelled. A finished task "
            "cannot be cancelled (error). Returns the task."
        )
    )
    async def cancel_task(task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = await _call(client.cancel(task_id))
        return task

    @server.tool(
        description=(
            "Put a failed or cancelled task back to pending for one more attempt (its "
            "checkpoint is kept). Any other status is an error. Returns the task."
        )
    )
    async def retry_task(task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = await _call(client.retry(task_id))
        return task

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

    @server.tool(
        description=(
            "Explain why a task is not running: `reasons`, each with a `code` (scheduled, "
            "blocked, waiting_signal, queue_paused, concurrency_limit, per_user_limit, "
            "rate_limited, budget_exhausted, circuit_open, no_worker, backlog) and a human "
            "`detail`. A running or finished task has no reasons."
        )
    )
    async def why_task(task_id: str) -> dict[str, Any]:
        why: dict[str, Any] = await _call(client.why(task_id))
        return why

    return server


async def serve(url: str, token: str | None) -> None:
    """Serve the tools on stdin/stdout until the client closes the stream."""
    async with Client(url, token, timeout_s=30) as client:
        await build(client).run_stdio_async()
