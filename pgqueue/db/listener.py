"""One LISTEN connection per process, fanned out in memory.

Every component that wants notifications (the worker loop, ``Queue.wait``, the WebSocket
stream) subscribes a callback here instead of holding a connection of its own. The
connection lives outside the pool (it is busy forever) and is autocommit, as LISTEN needs.

When the connection drops, the listener reconnects with backoff and then calls every
``on_reconnect`` callback: notifications sent meanwhile are lost, so subscribers must
resynchronise from the tables (NOTIFY is a hint, the tables are the truth).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

Callback = Callable[[str], None]


class Listener:
    """LISTEN on a fixed set of channels and call subscribers with each payload.

    Callbacks run on the event loop and must not block: set an event, put into a queue.
    """

    def __init__(self, dsn: str, channels: Iterable[str]) -> None:
        self._dsn = dsn
        self._channels = tuple(channels)
        self._subscribers: dict[str, list[Callback]] = {c: [] for c in self._channels}
        self._reconnect_callbacks: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.error: BaseException | None = None  # the last connection failure, for health checks

    def subscribe(self, channel: str, callback: Callback) -> Callable[[], None]:
        """Call ``callback(payload)`` for each notification on ``channel``; returns unsubscribe."""
        if channel not in self._subscribers:
            raise ValueError(f"listener does not LISTEN on {channel!r}")
        self._subscribers[channel].append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers[channel].remove(callback)

        return unsubscribe

    def on_reconnect(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after the connection was lost and re-established."""
        self._reconnect_callbacks.append(callback)
        return lambda: self._reconnect_callbacks.remove(callback)

    async def start(self, timeout_s: float = 10.0) -> None:
        """Connect and LISTEN; returns once listening, so no notification after it is missed."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pgqueue-listener")
        waiter = asyncio.ensure_future(self._connected.wait())
        done, _ = await asyncio.wait(
            {waiter, self._task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            waiter.cancel()
            raise ConnectionError(f"could not LISTEN within {timeout_s}s: {self.error!r}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def _run(self) -> None:
        delay = 0.1
        first = True
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
            except psycopg.OperationalError as exc:
                self.error = exc
                log.warning("listener cannot connect (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                async with conn:
                    for channel in self._channels:
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self._connected.set()
                    self.error = None
                    delay = 0.1
                    if not first:
                        self._fire_reconnect()
                    first = False
                    async for notify in conn.notifies():
                        self._dispatch(notify.channel, notify.payload)
            except psycopg.OperationalError as exc:
                self.error = exc
                log.warning("listener connection lost (%s); reconnecting", exc)
            finally:
                self._connected.clear()
            await asyncio.sleep(delay)

    def _dispatch(self, channel: str, payload: str) -> None:
        for callback in tuple(self._subscribers.get(channel, ())):
            try:
                callback(payload)
            except Exception:
                # One broken subscriber must not starve the others; its failure is logged.
                log.exception("listener subscriber failed on %s", channel)

    def _fire_reconnect(self) -> None:
        for callback in tuple(self._reconnect_callbacks):
            try:
                callback()
            except Exception:
                log.exception("listener reconnect callback failed")
