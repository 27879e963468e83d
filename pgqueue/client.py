"""``pgqueue.Client``: the HTTP API from Python, for agents without database credentials.

    async with pgqueue.Client("http://queue:8000", token) as client:
        task = await client.submit("coder", {"goal": "..."}, idempotency_key="goal-42")
        async for message in client.stream(task_ids=[task.id]):
            ...
        done = await client.wait(task.id, timeout_s=600)

Errors come back as pgqueue's own exceptions (InvalidInput, NotFound, Conflict, StaleLease,
PayloadTooLarge; ``Unauthorized`` for 401/403), with the server's ``detail`` as message.
"""

from __future__ import annotations

import asyncio
import builtins
import uuid
from collections.abc import AsyncGenerator, Iterable, Mapping
from typing import Any, Literal, Self

import httpx
import msgspec
import websockets

from pgqueue import otel
from pgqueue.errors import PgQueueError
from pgqueue.http_errors import ErrorBody, ServerError, Unauthorized, error_of
from pgqueue.leases import HeartbeatAnswer, LeasedTask
from pgqueue.limits import Why
from pgqueue.pages import Page
from pgqueue.stream import StateMessage, StreamMessage, TaskMessage, decode_message
from pgqueue.tasks import Event, Task

__all__ = ["Client", "LeasedTask", "ServerError", "Unauthorized"]

_MAX_WAIT_S = 300.0


_encode = msgspec.json.Encoder().encode


class Client:
    """Async HTTP client of the pgqueue API (SPEC §4, §5)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = http or httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout_s
        )
        self._timeout_s = timeout_s

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # -- producers ----------------------------------------------------------------------

    async def submit(
        self, kind: str, payload: Any = None, *, wait_s: float | None = None, **fields: Any
    ) -> Task:
        """Enqueue one task (SPEC §1 fields as keywords); ``wait_s`` holds until terminal."""
        return (await self.submit_ex(kind, payload, wait_s=wait_s, **fields))[0]

    async def submit_ex(
        self, kind: str, payload: Any = None, *, wait_s: float | None = None, **fields: Any
    ) -> tuple[Task, bool]:
        """Like ``submit``; also says whether it was an idempotent replay."""
        body = {"kind": kind, **fields}
        if payload is not None:
            body["payload"] = payload
        params = {"wait": wait_s} if wait_s else None
        response = await self._request(
            "POST", "/tasks", body=body, params=params, timeout=_extra(wait_s, self._timeout_s)
        )
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        return msgspec.json.decode(response.content, type=Task), replayed

    async def submit_many(self, tasks: Iterable[Mapping[str, Any]]) -> builtins.list[Task]:
        """Enqueue up to 10,000 tasks in one transaction."""
        response = await self._request("POST", "/tasks/batch", body={"tasks": builtins.list(tasks)})
        return msgspec.json.decode(response.content, type=builtins.list[Task])

    async def get(self, task_id: uuid.UUID | str, *, wait_s: float | None = None) -> Task:
        params = {"wait": wait_s} if wait_s else None
        response = await self._request(
            "GET", f"/tasks/{task_id}", params=params, timeout=_extra(wait_s, self._timeout_s)
        )
        return msgspec.json.decode(response.content, type=Task)

    async def wait(self, task_id: uuid.UUID | str, timeout_s: float | None = None) -> Task:
        """The task once terminal, or its state after ``timeout_s`` (server-side long polls)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while True:
            remaining = _MAX_WAIT_S if deadline is None else deadline - loop.time()
            task = await self.get(task_id, wait_s=max(0.0, min(remaining, _MAX_WAIT_S)) or None)
            if task.status.terminal or (deadline is not None and loop.time() >= deadline):
                return task

    async def list(self, *, limit: int = 100, cursor: str | None = None, **filters: Any) -> Page:
        """Newest first; filters: status, queue, kind, tag, user_id, parent_id."""
        params = {k: str(v) for k, v in filters.items() if v is not None}
        params["limit"] = str(limit)
        if cursor:
            params["cursor"] = cursor
        response = await self._request("GET", "/tasks", params=params)
        return msgspec.json.decode(response.content, type=Page)

    async def cancel(self, task_id: uuid.UUID | str) -> Task:
        response = await self._request("POST", f"/tasks/{task_id}/cancel")
        return msgspec.json.decode(response.content, type=Task)

    async def retry(self, task_id: uuid.UUID | str) -> Task:
        response = await self._request("POST", f"/tasks/{task_id}/retry")
        return msgspec.json.decode(response.content, type=Task)

    async def signal(self, task_id: uuid.UUID | str, name: str, payload: Any = None) -> Task:
        """Send signal ``name`` (SPEC §11): a task waiting for it runs again with ``payload``."""
        body: dict[str, Any] = {"name": name}
        if payload is not None:
            body["payload"] = payload
        response = await self._request("POST", f"/tasks/{task_id}/signal", body=body)
        return msgspec.json.decode(response.content, type=Task)

    async def events(self, task_id: uuid.UUID | str) -> builtins.list[Event]:
        response = await self._request("GET", f"/tasks/{task_id}/events")
        return msgspec.json.decode(response.content, type=builtins.list[Event])

    async def why(self, task_id: uuid.UUID | str) -> Why:
        """Every reason the task is not running now (SPEC §12); none if it runs or finished."""
        response = await self._request("GET", f"/tasks/{task_id}/why")
        return msgspec.json.decode(response.content, type=Why)

    # -- the stream ---------------------------------------------------------------------

    async def stream(
        self,
        *,
        task_ids: Iterable[uuid.UUID | str] = (),
        queues: Iterable[str] = (),
        all: bool = False,
        include_control: bool = False,
        since: str | None = None,
    ) -> AsyncGenerator[StreamMessage, None]:
        """Live updates over ``/ws``: for task ids, their current state first, then changes.

        Yields ``StateMessage`` and ``TaskMessage``; with ``include_control`` also
        acknowledgements, errors and pings. Ends when the server closes the connection.
        ``since``: the ``event_id`` of the last change received before; the stream resumes
        right after it (every covered change since, none twice, no state messages).
        """
        url = "ws" + self.base_url.removeprefix("http") + "/ws"
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
            op = {
                "op": "subscribe",
                "task_ids": [str(t) for t in task_ids],
                "queues": builtins.list(queues),
                "all": all,
            }
            if since is not None:
                op["since"] = since
            await ws.send(_encode(op).decode())
            try:
                async for raw in ws:
                    message = decode_message(raw)
                    if include_control or isinstance(message, (TaskMessage, StateMessage)):
                        yield message
            except websockets.ConnectionClosedError:
                return

    # -- the remote-worker protocol -----------------------------------------------------

    async def claim(
        self,
        worker_id: str,
        queues: builtins.list[str],
        *,
        limit: int = 1,
        wait_s: float = 0.0,
        kinds: builtins.list[str] | None = None,
        **info: Any,
    ) -> builtins.list[LeasedTask]:
        body = {
            "worker_id": worker_id,
            "queues": queues,
            "limit": limit,
            "wait_s": wait_s,
            "kinds": kinds,
            **info,
        }
        response = await self._request(
            "POST", "/tasks/claim", body=body, timeout=_extra(wait_s, self._timeout_s)
        )
        return msgspec.json.decode(response.content, type=builtins.list[LeasedTask])

    async def heartbeat(self, task_id: uuid.UUID | str, lease: str, **report: Any) -> bool:
        """Keep the lease; ``progress``/``checkpoint``/``usage`` optional. Returns cancel flag."""
        body = {"lease": lease, **{k: v for k, v in report.items() if v is not None}}
        response = await self._request("POST", f"/tasks/{task_id}/heartbeat", body=body)
        return msgspec.json.decode(response.content, type=HeartbeatAnswer).cancel_requested

    async def complete(self, task_id: uuid.UUID | str, lease: str, **outcome: Any) -> Task:
        body = {"lease": lease, **outcome}
        response = await self._request("POST", f"/tasks/{task_id}/complete", body=body)
        return msgspec.json.decode(response.content, type=Task)

    async def fail(self, task_id: uuid.UUID | str, lease: str, **outcome: Any) -> Task:
        body = {"lease": lease, **{k: v for k, v in outcome.items() if v is not None}}
        response = await self._request("POST", f"/tasks/{task_id}/fail", body=body)
        return msgspec.json.decode(response.content, type=Task)

    async def cancelled(self, task_id: uuid.UUID | str, lease: str, **outcome: Any) -> Task:
        """The handler was stopped because a cancel was requested: the task ends cancelled."""
        body = {"lease": lease, **outcome}
        response = await self._request("POST", f"/tasks/{task_id}/cancelled", body=body)
        return msgspec.json.decode(response.content, type=Task)

    async def release(self, task_id: uuid.UUID | str, lease: str, **outcome: Any) -> Task:
        body = {"lease": lease, **outcome}
        response = await self._request("POST", f"/tasks/{task_id}/release", body=body)
        return msgspec.json.decode(response.content, type=Task)

    async def wait_for_signal(
        self, task_id: uuid.UUID | str, lease: str, signal: str, **fields: Any
    ) -> Task:
        """Remote worker: end the attempt as a wait for ``signal`` (SPEC §11)."""
        body = {"lease": lease, "signal": signal, **fields}
        response = await self._request("POST", f"/tasks/{task_id}/wait", body=body)
        return msgspec.json.decode(response.content, type=Task)

    # -- plumbing -----------------------------------------------------------------------

    async def _request(
        self,
        method: Literal["GET", "POST"],
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        content = None if body is None else _encode(body)
        headers = {"Content-Type": "application/json"} if content is not None else {}
        if method == "POST" and path in ("/tasks", "/tasks/batch"):
            headers.update(otel.current_headers())  # the enqueue joins the caller's trace
        response = await self._http.request(
            method,
            path,
            content=content,
            params=dict(params) if params else None,
            headers=headers,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        if response.status_code >= 400:
            raise _error(response)
        return response


def _extra(wait_s: float | None, base: float) -> float:
    """A request that long-polls ``wait_s`` needs that much more time before timing out."""
    return base + (wait_s or 0.0)


def _error(response: httpx.Response) -> PgQueueError:
    try:
        body = msgspec.json.decode(response.content, type=ErrorBody)
    except (msgspec.DecodeError, msgspec.ValidationError):
        body = ErrorBody(detail=response.text[:500])
    return error_of(response.status_code, body)
