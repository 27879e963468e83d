"""``pgqueue signal ID NAME JSON``: send a signal to a task (SPEC §8, §11)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import msgspec

from pgqueue.cli.options import add_settings_flags, database_settings
from pgqueue.errors import InvalidInput
from pgqueue.queue import Queue
from pgqueue.settings import Settings


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "signal", help="send a signal to a task (a task waiting for it runs again)"
    )
    parser.add_argument("id", help="the task's id")
    parser.add_argument("name", help="the signal's name, as the handler waits for it")
    parser.add_argument("payload", nargs="?", default="null", help="JSON payload (default null)")
    add_settings_flags(parser, "dsn")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        payload = msgspec.json.decode(args.payload)
    except msgspec.DecodeError as exc:
        raise InvalidInput("payload", f"is not JSON: {exc}") from None
    settings = database_settings(args)
    task = asyncio.run(_signal(settings, args.id, args.name, payload))
    print(msgspec.json.encode(task).decode())
    return 0


async def _signal(settings: Settings, task_id: str, name: str, payload: Any) -> Any:
    async with Queue(settings=settings) as queue:
        return await queue.signal(task_id, name, payload)
