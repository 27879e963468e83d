"""Wait for task changes: one decode per notification, then a dict lookup per task id.

``Queue.wait`` and the HTTP long-polls (``?wait=``) park here instead of polling. With a
thousand waiters and thousands of changes a second, each notification is decoded once and
only the waiters of the tasks it names are woken.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Generator

from pgqueue.db.listener import Listener
from pgqueue.events import EVENTS, decode_changes
from pgqueue.tasks import Status, TaskId


class Watch:
    """One waiter's view of a task: ``changed`` is set on each change; ``status`` is the
    status the latest change announced; ``resync`` says notifications may have been lost
    (the listener reconnected), so only a re-read can tell."""

    __slots__ = ("changed", "resync", "status")

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.status: Status | None = None
        self.resync = False

    def needs_read(self) -> bool:
        """Whether what woke the waiter could have ended the task: a change that announced a
        terminal status, or lost notifications. A progress report needs no re-read."""
        return self.resync or (self.status is not None and self.status.terminal)


class TaskWatcher:
    """Wakes waiters of a task id whenever that task changes (or the listener reconnected)."""

    def __init__(self, listener: Listener) -> None:
        self._waiters: defaultdict[TaskId, set[Watch]] = defaultdict(set)
        listener.subscribe(EVENTS, self._on_changes)
        listener.on_reconnect(self._wake_all)

    @contextlib.contextmanager
    def watch(self, task_id: TaskId) -> Generator[asyncio.Event, None, None]:
        """An event set on each change of ``task_id``; the caller clears it after a re-read."""
        with self.follow(task_id) as watch:
            yield watch.changed

    @contextlib.contextmanager
    def follow(self, task_id: TaskId) -> Generator[Watch, None, None]:
        """A ``Watch`` of ``task_id``, updated from each notification about it."""
        watch = Watch()
        self._waiters[task_id].add(watch)
        try:
            yield watch
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(watch)
                if not waiters:
                    del self._waiters[task_id]

    def _on_changes(self, payload: str) -> None:
        if not self._waiters:
            return
        for change in decode_changes(payload):
            for watch in self._waiters.get(change.task_id, ()):
                watch.status = change.status
                watch.changed.set()

    def _wake_all(self) -> None:
        # Notifications may have been lost while disconnected: everyone re-reads.
        for waiters in self._waiters.values():
            for watch in waiters:
                watch.resync = True
                watch.changed.set()
