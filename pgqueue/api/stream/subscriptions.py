"""Who follows what in this process: every open subscriber, indexed by task id and queue, so
the router finds the few interested in a change without looking at the others."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from pgqueue.api.stream.subscriber import Subscriber
from pgqueue.tasks import TaskId


class Subscriptions:
    """The subscribers of one hub and what each follows (everything, task ids, queues)."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self._by_task: defaultdict[TaskId, set[Subscriber]] = defaultdict(set)
        self._by_queue: defaultdict[str, set[Subscriber]] = defaultdict(set)
        self._all: set[Subscriber] = set()
        self.drained = asyncio.Event()  # set while nobody is connected
        self.drained.set()

    def __len__(self) -> int:
        return len(self.subscribers)

    def add(self, sub: Subscriber) -> None:
        self.subscribers.add(sub)
        self.drained.clear()

    def remove(self, sub: Subscriber) -> bool:
        """Forget ``sub`` and all it follows; True when nobody is left."""
        self.subscribers.discard(sub)
        self._all.discard(sub)
        for tid in sub.task_ids:
            _unindex(self._by_task, tid, sub)
        for queue in sub.queues:
            _unindex(self._by_queue, queue, sub)
        if self.subscribers:
            return False
        self.drained.set()
        return True

    def follow_all(self, sub: Subscriber, on: bool) -> None:
        sub.all = on
        if on:
            self._all.add(sub)
        else:
            self._all.discard(sub)

    def follow_queue(self, sub: Subscriber, queue: str) -> None:
        sub.queues.add(queue)
        self._by_queue[queue].add(sub)

    def unfollow_queue(self, sub: Subscriber, queue: str) -> None:
        sub.queues.discard(queue)
        _unindex(self._by_queue, queue, sub)

    def follow_task(self, sub: Subscriber, tid: TaskId) -> None:
        sub.task_ids.add(tid)
        self._by_task[tid].add(sub)

    def unfollow_task(self, sub: Subscriber, tid: TaskId) -> None:
        sub.task_ids.discard(tid)
        _unindex(self._by_task, tid, sub)

    def interested(self, task_id: TaskId, queue: str, owner: str | None) -> list[Subscriber]:
        """The subscribers a change of this task goes to: following it, its queue or all,
        not being replayed to, and allowed to read the task."""
        candidates = self._all.union(self._by_task.get(task_id, ()), self._by_queue.get(queue, ()))
        return [s for s in candidates if not s.catching_up and s.principal.may_read(owner)]


def _unindex(index: defaultdict[Any, set[Subscriber]], key: Any, sub: Subscriber) -> None:
    subs = index.get(key)
    if subs is not None:
        subs.discard(sub)
        if not subs:
            del index[key]
