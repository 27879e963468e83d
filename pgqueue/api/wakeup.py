"""Claim long-polls wait here for a ``pgqueue_wakeup`` NOTIFY on one of their queues.

One subscription to the process's Listener serves every parked claim; a notification wakes
only the claims of its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from pgqueue.db.listener import Listener
from pgqueue.events import WAKEUP


class WakeupBoard:
    """Events set when a queue gets a due task (or the listener reconnected)."""

    def __init__(self, listener: Listener) -> None:
        self._waiters: dict[asyncio.Event, frozenset[str]] = {}
        listener.subscribe(WAKEUP, self._on_wakeup)
        listener.on_reconnect(self._wake_all)

    @contextlib.contextmanager
    def watch(self, queues: list[str]) -> Iterator[asyncio.Event]:
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
