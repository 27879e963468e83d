"""Server-Sent Events: ``GET /tasks/{id}/stream`` and ``GET /stream?queue=…`` (SPEC §4, §5).

The same changes as ``/ws``, for clients that cannot hold a WebSocket (a browser's
``EventSource``, ``curl -N``): each is a Hub subscriber like a socket, drained into
``text/event-stream``. Every change is an ``event: task`` with ``id:`` = its ``event_id``, so
an ``EventSource`` that reconnects sends ``Last-Event-ID`` and gets, from the audit trail,
exactly the changes it missed (``?since=`` does the same for a first connection). A task
stream starts with ``event: state`` (the task now) when it does not resume; then
``event: subscribed`` once the stream is live; errors are ``event: error``; ``: ping``
comments keep proxies from closing an idle stream. The token may be a ``Bearer`` header or
``?token=`` (EventSource cannot send headers).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import msgspec
from litestar import Request, get
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream

from pgqueue.api.auth import Principal
from pgqueue.api.services import PrincipalDep, Services, ServicesDep
from pgqueue.api.stream import Hub
from pgqueue.api.stream.incoming import StreamOp
from pgqueue.errors import InvalidInput, NotFound
from pgqueue.stream import Position
from pgqueue.tasks import TaskId

_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering
_PING = b": ping\n\n"


class _Head(msgspec.Struct):
    """What an SSE frame needs of a message: its type and event id."""

    type: str
    event_id: str = ""


_head = msgspec.json.Decoder(_Head).decode

SinceParam = Annotated[
    str | None,
    QueryParameter(
        max_length=4096, description="resume after this event_id (as Last-Event-ID does)"
    ),
]


def _since(request: Request[Any, Any, Any], since: str | None) -> str | None:
    """The resume point: ``Last-Event-ID`` (what EventSource sends), else ``?since=``."""
    value = request.headers.get("last-event-id") or since
    if value is None:
        return None
    try:
        Position.decode(value)
    except ValueError:
        field = "Last-Event-ID" if request.headers.get("last-event-id") else "since"
        raise InvalidInput(field, "not an event id of this stream") from None
    return value


@get("/tasks/{task_id:str}/stream", summary="A task's changes as Server-Sent Events")
async def task_stream(
    request: Request[Any, Any, Any],
    task_id: FromPath[str],
    services: ServicesDep,
    principal: PrincipalDep,
    since: SinceParam = None,
) -> Stream:
    try:
        tid = TaskId(uuid.UUID(task_id))
    except ValueError:
        raise InvalidInput("id", f"{task_id!r} is not a UUID") from None
    if not await services.hub.readable(principal, tid):
        raise NotFound(f"task {tid} does not exist")
    op = StreamOp(op="subscribe", task_ids=[tid], since=_since(request, since))
    return _stream(request, services, principal, op)


@get("/stream", summary="Changes of queues (or of everything you may read) as Server-Sent Events")
async def queue_stream(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    principal: PrincipalDep,
    queue: Annotated[
        list[str] | None, QueryParameter(description="repeatable; none: every task you may read")
    ] = None,
    since: SinceParam = None,
) -> Stream:
    queues = queue or []
    try:
        op = msgspec.convert(
            {
                "op": "subscribe",
                "queues": queues,
                "all": not queues,
                "since": _since(request, since),
            },
            StreamOp,
        )
    except msgspec.ValidationError as exc:
        raise InvalidInput("queue", str(exc).replace("$.queues", "queue")) from None
    return _stream(request, services, principal, op)


def _stream(
    request: Request[Any, Any, Any],
    services: Services,
    principal: Principal,
    op: StreamOp,
) -> Stream:
    auth = services.auth

    async def revalidate() -> Principal:
        return await auth.of_connection(request)

    return Stream(
        _events(
            services.hub,
            principal,
            None if auth.insecure else revalidate,
            op,
            services.settings.heartbeat_s,
        ),
        media_type="text/event-stream",
        headers=_HEADERS,
    )


async def _events(
    hub: Hub,
    principal: Principal,
    revalidate: Callable[[], Awaitable[Principal]] | None,
    op: StreamOp,
    ping_s: float,
) -> AsyncIterator[bytes]:
    sub = hub.add(principal, None, revalidate)
    # (a resume point past retention is said, ``since_expired``, and the stream goes on from
    # now, state first: an EventSource would otherwise resend it forever)
    subscribing = asyncio.create_task(hub.subscribe(sub, op), name="pgqueue-sse-subscribe")
    try:
        while True:
            try:
                async with asyncio.timeout(ping_s):
                    frame = await sub.take()
            except TimeoutError:
                yield _PING
                continue
            if frame is None:  # the hub closed it (too slow, token revoked, shutdown)
                reason = {"code": sub.close_code, "reason": sub.close_reason}
                yield _event("close", msgspec.json.encode(reason).decode())
                return
            text = frame.event.get("text")
            if text is None:
                continue
            head = _head(text)
            if head.type in ("ping", "pong"):
                continue
            yield _event(head.type, text, head.event_id)
    finally:
        hub.remove(sub)
        subscribing.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await subscribing


def _event(kind: str, data: str, event_id: str = "") -> bytes:
    head = f"event: {kind}\n" + (f"id: {event_id}\n" if event_id else "")
    return (head + f"data: {data}\n\n").encode()
