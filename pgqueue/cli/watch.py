"""``pgqueue watch ID``: follow a task live until it ends (also ``enqueue … --wait``).

On a terminal a progress bar is redrawn in place — percent, message, the latest event and
the status; otherwise (a pipe, a CI log) each event is one plain line. Either way it goes to
stderr, and the task as JSON goes to stdout once the wait ends, so scripts can parse it.
Exit status (SPEC §8): 0 completed, 1 failed, 2 cancelled, 3 still not finished when the
wait ran out.

Woken by the task's notifications (``Queue.watcher``); each change reads the task and only
the events not shown yet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import shutil
import sys
from typing import Any, TextIO

import msgspec

from pgqueue.cli.options import (
    add_settings_flags,
    database_settings,
    task_id_arg,
)
from pgqueue.db.events import task_events_after
from pgqueue.jsonvalue import is_object
from pgqueue.queue import Queue
from pgqueue.tasks import Event, Status, Task, TaskId

EXIT_CODES = {Status.COMPLETED: 0, Status.FAILED: 1, Status.CANCELLED: 2}
NOT_FINISHED = 3
RECHECK_S = 5.0  # a re-read even without a notification (one lost in a reconnect)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "watch",
        help="follow a task live until it ends (exit 0 completed, 1 failed, 2 cancelled)",
    )
    parser.add_argument("id", help="the task's id")
    parser.add_argument(
        "--timeout", type=float, metavar="S", help="stop after S seconds (exit 3 if not done)"
    )
    add_settings_flags(parser, "dsn")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = database_settings(args)
    task_id = task_id_arg(args.id)

    async def main() -> Task:
        async with Queue(settings=settings) as queue:
            return await follow(queue, task_id, timeout_s=args.timeout)

    return finish(asyncio.run(main()))


def finish(task: Task) -> int:
    """Print the task as JSON on stdout; its exit status."""
    sys.stdout.write(msgspec.json.encode(task).decode() + "\n")
    return EXIT_CODES.get(task.status, NOT_FINISHED)


async def follow(
    queue: Queue, task_id: TaskId, *, timeout_s: float | None = None, out: TextIO | None = None
) -> Task:
    """Show the task's progress until it is terminal or ``timeout_s`` passed; return it."""
    stream: TextIO = out or sys.stderr
    display: Display = Bar(stream) if stream.isatty() else Lines(stream)
    watcher = await queue.watcher()
    loop = asyncio.get_running_loop()
    deadline = math.inf if timeout_s is None else loop.time() + timeout_s
    last_event = 0
    with watcher.watch(task_id) as changed:
        while True:
            changed.clear()  # before the reads: a change during them wakes the next round
            task = await queue.get(task_id)
            events = await task_events_after(queue.pool, task_id, last_event)
            if events:
                last_event = events[-1].id
            display.show(task, events)
            remaining = deadline - loop.time()
            if task.status.terminal or remaining <= 0:
                display.close(task)
                return task
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=min(remaining, RECHECK_S))


class Display:
    """How a task's progress is drawn."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def show(self, task: Task, events: list[Event]) -> None:
        raise NotImplementedError

    def close(self, task: Task) -> None:
        raise NotImplementedError


def _percent(task: Task) -> float | None:
    value = (task.progress or {}).get("percent")
    return float(value) if isinstance(value, int | float) else None


def _message(task: Task) -> str:
    value = (task.progress or {}).get("message")
    return printable(value) if isinstance(value, str) else ""


def printable(text: str) -> str:
    """``text`` without control characters: a handler's message must not move the cursor,
    clear the operator's screen or break the one-line bar (newlines become spaces)."""
    return "".join(c if c.isprintable() else " " for c in text)


def _outcome(task: Task) -> str:
    if task.status is Status.FAILED and task.error:
        return printable(f"failed: {task.error.get('type')}: {task.error.get('message')}")
    return str(task.status)


class Lines(Display):
    """One plain line per event: for logs and pipes."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        self.started = False

    def show(self, task: Task, events: list[Event]) -> None:
        if not self.started:
            self.started = True
            self.out.write(f"task {task.id} ({task.kind} on {task.queue}): {task.status}\n")
        for event in events:
            line = f"{event.at:%H:%M:%S} {event.event} ({event.status}, attempt {event.attempt})"
            data = event.data
            if event.event == "progress" and is_object(data):
                percent = data.get("percent")
                if isinstance(percent, int | float):
                    line += f" {percent:.0f}%"
                message = data.get("message")
                if isinstance(message, str):
                    line += f" {printable(message)}"
            self.out.write(line + "\n")
        self.out.flush()

    def close(self, task: Task) -> None:
        self.out.write(f"task {task.id}: {_outcome(task)}\n")
        self.out.flush()


class Bar(Display):
    """A progress bar redrawn in place on a terminal."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        self.latest = ""

    def show(self, task: Task, events: list[Event]) -> None:
        if events:
            self.latest = events[-1].event
        width = shutil.get_terminal_size((80, 24)).columns
        percent = _percent(task)
        if task.status is Status.COMPLETED:
            percent = 100.0
        cells = max(10, min(40, width // 3))
        filled = round(cells * (percent or 0) / 100)
        bar = "█" * filled + "░" * (cells - filled)
        shown = f"{percent:3.0f}%" if percent is not None else "  -%"
        text = f"{bar} {shown} {task.status}"
        if task.attempts > 1:
            text += f" (attempt {task.attempts})"
        if self.latest:
            text += f" · {self.latest}"
        if _message(task):
            text += f" · {_message(task)}"
        # \r and erase-line: the bar stays on one line, cut to the terminal's width
        self.out.write("\r\x1b[2K" + text[: width - 1])
        self.out.flush()

    def close(self, task: Task) -> None:
        self.out.write(f"\ntask {task.id}: {_outcome(task)}\n")
        self.out.flush()
