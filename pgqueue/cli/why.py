"""``pgqueue why ID``: every reason a task is not running (SPEC §12), one per line."""

from __future__ import annotations

import argparse
import asyncio
import uuid
from typing import Any

from pgqueue.cli.options import add_settings_flags, settings_from_args
from pgqueue.db import limits
from pgqueue.db.pool import connect
from pgqueue.errors import InvalidInput
from pgqueue.limits import Why
from pgqueue.tasks import TaskId


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "why", help="why a task is not running (every reason that holds now)"
    )
    parser.add_argument("id", help="the task id")
    add_settings_flags(parser, "dsn")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if not settings.dsn:
        raise InvalidInput("dsn", "set PGQUEUE_DSN or pass --dsn")
    try:
        task_id = TaskId(uuid.UUID(args.id))
    except ValueError:
        raise InvalidInput("id", f"{args.id!r} is not a task id (a UUID)") from None
    print(render(task_id, asyncio.run(_why(settings.dsn, task_id))))
    return 0


async def _why(dsn: str, task_id: TaskId) -> Why:
    conn = await connect(dsn)
    async with conn:
        return await limits.why(conn, task_id)


def render(task_id: TaskId, why: Why) -> str:
    if not why.reasons:
        if why.status == "pending":
            return f"task {task_id} is pending and next in line: a worker claims it now"
        return f"task {task_id} is {why.status}: nothing holds it back"
    lines = [f"task {task_id} is {why.status}:"]
    lines += [f"  {r.code:<18} {r.detail}" for r in why.reasons]
    return "\n".join(lines)
