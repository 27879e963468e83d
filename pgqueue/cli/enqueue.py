"""``pgqueue enqueue KIND JSON``: enqueue one task from the shell and print it as JSON.

With ``--wait S`` it follows the task like ``pgqueue watch`` (a live progress bar on a
terminal, plain lines otherwise, on stderr) and exits 0 completed, 1 failed, 2 cancelled,
3 not finished within S seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import msgspec

from pgqueue.cli.options import add_settings_flags, database_settings
from pgqueue.cli.watch import finish, follow
from pgqueue.errors import InvalidInput
from pgqueue.queue import Queue, new_task
from pgqueue.settings import Settings
from pgqueue.tasks import NewTask, Task


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("enqueue", help="enqueue one task")
    parser.add_argument("kind")
    parser.add_argument("payload", nargs="?", default="{}", help="JSON (default {})")
    parser.add_argument("--queue", default="default")
    parser.add_argument("--priority", type=int, default=0)
    parser.add_argument("--delay-s", type=float, default=0.0)
    parser.add_argument("--max-retries", type=int, default=3)
    parser.add_argument("--timeout-s", type=float)
    parser.add_argument("--idempotency-key")
    parser.add_argument("--tag", action="append", default=[], dest="tags")
    parser.add_argument(
        "--wait",
        type=float,
        metavar="S",
        help="follow it up to S seconds (exit 0 completed, 1 failed, 2 cancelled, 3 not done)",
    )
    add_settings_flags(parser, "dsn")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = database_settings(args)
    try:
        payload = msgspec.json.decode(args.payload)
    except msgspec.DecodeError as exc:
        raise InvalidInput("payload", f"is not valid JSON: {exc}") from None
    task = new_task(
        {
            "kind": args.kind,
            "payload": payload,
            "queue": args.queue,
            "priority": args.priority,
            "delay_s": args.delay_s,
            "max_retries": args.max_retries,
            "timeout_s": args.timeout_s,
            "idempotency_key": args.idempotency_key,
            "tags": args.tags,
        }
    )
    result = asyncio.run(_enqueue(settings, task, args.wait))
    if args.wait is not None:
        return finish(result)
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    return 0


async def _enqueue(settings: Settings, task: NewTask, wait: float | None) -> Task:
    async with Queue(settings=settings) as queue:
        if wait is not None:
            await queue.watcher()  # listening before the task exists: no change is missed
        enqueued = (await queue.submit(task)).task
        if wait is None:
            return enqueued
        return await follow(queue, enqueued.id, timeout_s=wait)
