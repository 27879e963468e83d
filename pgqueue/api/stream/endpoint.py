"""``WS /ws``: one connection's life. Authenticate, register with the hub, then read and apply
the client's ops until the client leaves or the hub asks to close. Writing is the
subscriber's (``Subscriber.offer``: straight to the socket, a drain task only while the
transport pushes back); pinging a silent connection is the hub's."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from litestar import WebSocket, websocket
from litestar.exceptions import NotAuthorizedException, WebSocketDisconnect

from pgqueue.api.auth import Principal
from pgqueue.api.stream.frames import CLOSE_TOO_SLOW, CLOSE_UNAUTHORIZED, PONG
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
    try:
        await asyncio.wait({receiver, sub.closing}, return_when=asyncio.FIRST_COMPLETED)
        if sub.closing.done():
            if sub.close_code == CLOSE_TOO_SLOW:
                hub.dropped += 1
                services.metrics.ws_dropped.inc()
            sub.stop_sending()  # its drain may be stuck writing to a client that does not read
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    socket.close(code=sub.close_code, reason=sub.close_reason), 5
                )
    finally:
        sub.stop_sending()  # no writes to a finished connection
        hub.remove(sub)
        services.metrics.ws_subscribers.dec()
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)


async def _receive(socket: WebSocket[Any, Any, Any], hub: Hub, sub: Subscriber) -> None:
    """Read and apply ops, one at a time. A resume (``since``) runs beside the reading, so a
    client that leaves during its replay is noticed; later ops wait for it."""
    resume: asyncio.Task[None] | None = None
    try:
        with contextlib.suppress(WebSocketDisconnect):
            while not sub.closing.done():
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
