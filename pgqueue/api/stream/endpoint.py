"""``WS /ws``: one connection's life. Authenticate, register with the hub, then three tasks
side by side: read and apply the client's ops, write the buffered frames, ping when idle;
whichever ends first (the client left, or the hub asked to close) ends the others."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from litestar import WebSocket, websocket
from litestar.exceptions import NotAuthorizedException, WebSocketDisconnect

from pgqueue.api.auth import Principal
from pgqueue.api.stream.frames import CLOSE_TOO_SLOW, CLOSE_UNAUTHORIZED, PING, PONG, Frame
from pgqueue.api.stream.hub import Hub
from pgqueue.api.stream.incoming import decode_op
from pgqueue.api.stream.subscriber import Subscriber
from pgqueue.api.stream.wire import frame_writer


@websocket("/ws")
async def stream(socket: WebSocket[Any, Any, Any]) -> None:
    """Subscribe with ``{"op": "subscribe", "task_ids"|"queues"|"all"}``; see docs/api.md."""
    from pgqueue.api.services import Services

    services: Services = socket.app.state.services
    auth = services.auth
    try:
        principal = await auth.of_connection(socket)
    except NotAuthorizedException as exc:
        await socket.accept()
        await socket.close(code=CLOSE_UNAUTHORIZED, reason=str(exc.detail)[:120])
        return
    await socket.accept()
    hub = services.hub

    async def revalidate() -> Principal:
        return await auth.of_connection(socket)

    sub = hub.add(
        principal, socket.send, None if auth.insecure else revalidate, frame_writer(socket.scope)
    )
    services.metrics.ws_subscribers.inc()
    receiver = asyncio.create_task(_receive(socket, hub, sub))
    sender = asyncio.create_task(_send(socket, sub))
    keepalive = asyncio.create_task(_keepalive(sub, services.settings.heartbeat_s))
    closing = asyncio.create_task(sub.closing.wait())
    try:
        await asyncio.wait({receiver, sender, closing}, return_when=asyncio.FIRST_COMPLETED)
        if closing.done():
            if sub.close_code == CLOSE_TOO_SLOW:
                hub.dropped += 1
                services.metrics.ws_dropped.inc()
            sender.cancel()  # it may be stuck writing to a client that does not read
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    socket.close(code=sub.close_code, reason=sub.close_reason), 5
                )
    finally:
        sub.send = None  # no direct writes to a finished connection
        hub.remove(sub)
        services.metrics.ws_subscribers.dec()
        for task in (receiver, sender, keepalive, closing):
            task.cancel()
        await asyncio.gather(receiver, sender, keepalive, closing, return_exceptions=True)


async def _receive(socket: WebSocket[Any, Any, Any], hub: Hub, sub: Subscriber) -> None:
    """Read and apply ops, one at a time. A resume (``since``) runs beside the reading, so a
    client that leaves during its replay is noticed; later ops wait for it."""
    resume: asyncio.Task[None] | None = None
    try:
        with contextlib.suppress(WebSocketDisconnect):
            while not sub.closing.is_set():
                raw = await socket.receive_data(mode="text")
                try:
                    op = decode_op(raw)
                except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                    sub.reject("bad_message", f"message: {str(exc)[:200]}")
                    continue
                if op.op == "ping":
                    sub.offer(PONG)
                    continue
                if resume is not None:
                    await resume
                    resume = None
                if op.op == "subscribe" and op.since is not None and not sub.started:
                    resume = asyncio.create_task(hub.subscribe(sub, op), name="pgqueue-ws-resume")
                elif op.op == "subscribe":
                    await hub.subscribe(sub, op)
                else:
                    hub.unsubscribe(sub, op)
    finally:
        if resume is not None:
            resume.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resume


async def _send(socket: WebSocket[Any, Any, Any], sub: Subscriber) -> None:
    """Drain the buffer to the socket, one frame per message (SPEC §5: no coalescing).

    A plain ``get()``: the earlier ``wait_for(get(), ping_s)`` made a task and a timer per
    frame; pings are ``_keepalive``'s job. While it waits on an empty buffer (``idle``),
    ``Subscriber.offer`` writes to the socket itself.
    """
    send, get = socket.send, sub.outbox.get
    while True:
        sub.idle = True
        item = await get()
        sub.idle = False
        if isinstance(item, Frame):
            await send(item.event)
        else:
            # A send that offer() started and the transport made wait. A task resumes it:
            # ``await`` refuses a coroutine suspended mid-await.
            await asyncio.ensure_future(item)
        sub.sent += 1


async def _keepalive(sub: Subscriber, ping_s: float) -> None:
    """Offer a ping when nothing was sent for a whole interval (so proxies keep it open)."""
    while True:
        sent = sub.sent
        await asyncio.sleep(ping_s)
        if sub.sent == sent and sub.outbox.empty():
            sub.offer(PING)
