"""One LISTEN connection per process, fanned out in memory.

Every component that wants notifications (the worker core, ``Queue.wait`` and
``ctx.wait_children()``, the WebSocket stream, claim long-polls) subscribes a callback here
instead of holding a connection of its own. Channels are added at run time: the first
subscriber of a channel makes the connection LISTEN on it, so a ``Queue`` inside a worker
shares the worker's connection. The connection lives outside the pool (it is busy forever)
and is autocommit, as LISTEN needs.

When the connection drops, the listener reconnects (a supervised loop: log, back off, carry
on) and then calls every ``on_reconnect`` callback: notifications sent meanwhile are lost, so
subscribers must resynchronise from the tables (NOTIFY is a hint, the tables are the truth).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from psycopg import sql

from pgqueue.services.supervisor import supervise

log = logging.getLogger(__name__)

Callback = Callable[[str], None]


class Listener:
    """LISTEN on the channels subscribed to and call subscribers with each payload.

    Callbacks run on the event loop and must not block: set an event, put into a queue.
    """

    def __init__(self, dsn: str, channels: Iterable[str] = ()) -> None:
        self._dsn = dsn
        self._subscribers: dict[str, list[Callback]] = {c: [] for c in channels}
        self._listening: set[str] = set()  # channels LISTENed on the current connection
        self._changed = asyncio.Event()  # a channel was added: LISTEN on it
        self._listened = asyncio.Event()  # set (and replaced) after each round of LISTENs
        self._reconnect_callbacks: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._first = True
        self.error: BaseException | None = None  # the last connection failure, for health checks

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._subscribers)

    def subscribe(self, channel: str, callback: Callback) -> Callable[[], None]:
        """Call ``callback(payload)`` for each notification on ``channel``; returns unsubscribe.

        A new channel is LISTENed on at once (``await listen(channel)`` to know when).
        """
        self._subscribers.setdefault(channel, []).append(callback)
        if channel not in self._listening:
            self._changed.set()

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers[channel].remove(callback)

        return unsubscribe

    async def listen(self, channel: str, timeout_s: float = 10.0) -> None:
        """Return once the connection LISTENs on ``channel`` (nothing sent after is missed)."""
        self._subscribers.setdefault(channel, [])
        if channel in self._listening:
            return
        if self._task is None:
            raise ConnectionError(f"listener not started: cannot LISTEN on {channel!r}")
        self._changed.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while channel not in self._listening:
            listened = self._listened
            try:
                await asyncio.wait_for(listened.wait(), timeout=deadline - loop.time())
            except TimeoutError:
                raise ConnectionError(f"could not LISTEN on {channel!r}: {self.error!r}") from None

    def on_reconnect(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after the connection was lost and re-established."""
        self._reconnect_callbacks.append(callback)
        return lambda: self._reconnect_callbacks.remove(callback)

    async def start(self, timeout_s: float = 10.0) -> None:
        """Connect and LISTEN; returns once listening, so no notification after it is missed."""
        if self._task is None:
            loop = supervise("listener", self._listen_until_lost, every_s=5.0, backoff_s=0.1)
            self._task = asyncio.create_task(loop, name="pgqueue-listener")
        waiter = asyncio.ensure_future(self._connected.wait())
        done, _ = await asyncio.wait(
            {waiter, self._task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            waiter.cancel()
            raise ConnectionError(f"could not LISTEN within {timeout_s}s: {self.error!r}")

    async def stop(self, timeout_s: float = 10.0) -> None:
        if self._task is not None:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
            if not done:
                log.error("listener did not stop within %.0fs; leaving it", timeout_s)
            self._task = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def _listen_until_lost(self) -> float:
        """One connection's life: LISTEN, dispatch, add channels as they come; raise on loss."""
        try:
            conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
        except psycopg.OperationalError as exc:
            self.error = exc
            raise
        try:
            async with conn:
                await self._listen_new(conn)
                self._connected.set()
                self.error = None
                if not self._first:
                    self._fire_reconnect()
                self._first = False
                while True:
                    await self._dispatch_until_changed(conn)
                    await self._listen_new(conn)
        except Exception as exc:
            self.error = exc
            raise
        finally:
            self._connected.clear()
            self._listening.clear()

    async def _listen_new(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._changed.clear()
        for channel in sorted(self._subscribers.keys() - self._listening):
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self._listening.add(channel)
        self._listened.set()
        self._listened = asyncio.Event()

    async def _dispatch_until_changed(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Deliver notifications until a channel is added (or the connection fails: raise).

        Stopping the ``notifies()`` wait to run a LISTEN loses nothing: what arrives in
        between waits in psycopg's backlog and comes first on the next wait.
        """
        reader = asyncio.ensure_future(self._dispatch_forever(conn))
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({reader, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        if reader.done() and not reader.cancelled():
            reader.result()  # the connection's failure, raised here

    async def _dispatch_forever(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async for notify in conn.notifies():
            self._dispatch(notify.channel, notify.payload)
        raise psycopg.OperationalError("the LISTEN connection closed")

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
