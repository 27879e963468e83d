"""Wait for task changes: one decode per notification, then a dict lookup per task id.

``Queue.wait`` and the HTTP long-polls (``?wait=``) park here instead of polling. With a
thousand waiters and thousands of changes a second, each notification is decoded once and
only the waiters of the tasks it names are woken.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator

from pgqueue.db.listener import Listener
from pgqueue.events import EVENTS, decode_changes
from pgqueue.tasks import TaskId


class TaskWatcher:
    """Wakes waiters of a task id whenever that task changes (or the listener reconnected)."""

    def __init__(self, listener: Listener) -> None:
        self._waiters: defaultdict[TaskId, set[asyncio.Event]] = defaultdict(set)
        listener.subscribe(EVENTS, self._on_changes)
        listener.on_reconnect(self._wake_all)

    @contextlib.contextmanager
    def watch(self, task_id: TaskId) -> Iterator[asyncio.Event]:
        """An event set on each change of ``task_id``; the caller clears it after a re-read."""
        event = asyncio.Event()
        self._waiters[task_id].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[task_id]

    def _on_changes(self, payload: str) -> None:
        if not self._waiters:
            return
        for change in decode_changes(payload):
            for event in self._waiters.get(change.task_id, ()):
                event.set()

    def _wake_all(self) -> None:
        # Notifications may have been lost while disconnected: everyone re-reads.
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()
