"""How a long-poll waits (SPEC §4 "Limits and shutdown"): ``?wait=`` on ``/tasks`` and the
claim's ``wait_s``.

A long-poll holds no database connection while it waits: it parks on a NOTIFY delivered by
the process's one Listener (``WakeupBoard`` for claims, a queue's wake-up; the Queue's
``TaskWatcher`` for ``?wait=``, a task's change). ``LongPolls.hold`` gives each one a
``Hold``: when the server starts shutting down (``LongPolls.drain``) the long-poll answers
at once with the current state; when its client disconnects (the ASGI ``http.disconnect``)
it ends without another query. A claim claims nothing in either case, so no task is leased
to a client that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Generator
from typing import Any

from litestar.types import Receive

from pgqueue.db.listener import Listener
from pgqueue.events import WAKEUP

log = logging.getLogger(__name__)


class Hold:
    """One open long-poll: ``drained`` is set when the server shuts down (answer now, with
    the current state), ``gone`` when the client disconnected (nobody to answer: stop, and
    do not even read the state again)."""

    __slots__ = ("drained", "gone")

    def __init__(self) -> None:
        self.drained = asyncio.Event()
        self.gone = asyncio.Event()

    @property
    def ended(self) -> bool:
        return self.drained.is_set() or self.gone.is_set()


class LongPolls:
    """The long-polls open in this process, and the one switch that ends them all."""

    def __init__(self) -> None:
        self._holds: set[Hold] = set()
        self.draining = False

    @contextlib.asynccontextmanager
    async def hold(self, receive: Receive) -> AsyncGenerator[Hold, None]:
        """A ``Hold`` for one long-poll. ``receive`` is the request's ASGI receive; its body
        must have been read already."""
        hold = Hold()
        if self.draining:
            hold.drained.set()
        self._holds.add(hold)
        watcher = asyncio.create_task(_set_on_disconnect(receive, hold.gone), name="pgqueue-poll")
        try:
            yield hold
        finally:
            self._holds.discard(hold)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    def drain(self) -> int:
        """End every open long-poll now, and every later one at once (shutdown). Returns how
        many were open."""
        self.draining = True
        for hold in self._holds:
            hold.drained.set()
        return len(self._holds)

    @property
    def open(self) -> int:
        return len(self._holds)


async def _set_on_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    """Set ``gone`` when the client goes away. After the request's body, the ASGI server's
    next message is ``http.disconnect``; for a GET whose empty body nobody read, that comes
    after one ``http.request``."""
    message: Any = await receive()
    while message["type"] != "http.disconnect":
        message = await receive()
    gone.set()


async def first_of(events: list[asyncio.Event], timeout: float) -> None:
    """Return when one of ``events`` is set or after ``timeout`` seconds."""
    if any(e.is_set() for e in events) or timeout <= 0:
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class WakeupBoard:
    """Events set when a queue gets a due task (or the listener reconnected)."""

    def __init__(self, listener: Listener) -> None:
        self._waiters: dict[asyncio.Event, frozenset[str]] = {}
        listener.subscribe(WAKEUP, self._on_wakeup)
        listener.on_reconnect(self._wake_all)

    @contextlib.contextmanager
    def watch(self, queues: list[str]) -> Generator[asyncio.Event, None, None]:
        event = asyncio.Event()
        self._waiters[event] = frozenset(queues)
        try:
            yield event
        finally:
            del self._waiters[event]

    def _on_wakeup(self, queue: str) -> None:
        for event, queues in self._waiters.items():
            if queue in queues:
                event.set()

    def _wake_all(self) -> None:
        for event in self._waiters:
            event.set()
