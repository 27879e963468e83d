"""Waiting for a task to finish on NOTIFY alone (``Queue.wait``, the HTTP long-polls,
``ctx.wait_children``): no connection is held while waiting."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

from pgqueue.tasks import Task, TaskId
from pgqueue.watch import TaskWatcher


async def until_terminal(
    watcher: TaskWatcher,
    read: Callable[[TaskId], Awaitable[Task]],
    task_id: TaskId,
    timeout_s: float | None,
    stop: asyncio.Event | None,
) -> Task:
    """The task once it is terminal, or its current state after ``timeout_s`` (or once
    ``stop`` is set).

    It reads the task once, then waits on NOTIFY alone: only a change announcing a terminal
    status (or a listener reconnect, which may have lost notifications) makes it read again,
    and the end of the wait reads the current state once. A re-read every few seconds per
    waiter kept the database busy for nothing (500 abandoned long-polls were 100 queries a
    second).
    """
    loop = asyncio.get_running_loop()
    deadline = math.inf if timeout_s is None else loop.time() + timeout_s
    with watcher.follow(task_id) as watch:
        task = await read(task_id)  # after subscribing: no change slips in between
        while not task.status.terminal:
            if not await _changed(watch.changed, stop, deadline - loop.time()):
                return await read(task_id)
            watch.changed.clear()
            if watch.needs_read():
                watch.resync = False
                task = await read(task_id)
        return task


async def _changed(changed: asyncio.Event, stop: asyncio.Event | None, timeout: float) -> bool:
    """Wait until ``changed`` is set (True), or ``stop`` is set or ``timeout`` passes (False)."""
    if timeout <= 0 or (stop is not None and stop.is_set()):
        return changed.is_set()
    waiters = {asyncio.ensure_future(changed.wait())}
    if stop is not None:
        waiters.add(asyncio.ensure_future(stop.wait()))
    try:
        await asyncio.wait(
            waiters,
            timeout=None if math.isinf(timeout) else timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        for waiter in waiters:
            waiter.cancel()
    return changed.is_set() and not (stop is not None and stop.is_set())
