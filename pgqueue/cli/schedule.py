"""``pgqueue schedule add|list|remove|pause|resume``: recurring tasks from the shell."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from pgqueue.cli.options import add_settings_flags, database_settings
from pgqueue.cli.table import format_table
from pgqueue.db.pool import create_pool
from pgqueue.errors import InvalidInput
from pgqueue.schedules import Schedule, Schedules
from pgqueue.settings import Settings

T = TypeVar("T")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "schedule", help="recurring tasks: add, list, remove, pause, resume"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a schedule: NAME CRON KIND [PAYLOAD]")
    add.add_argument("name")
    add.add_argument("cron", help="five fields, e.g. '*/15 * * * *', or @hourly/@daily...")
    add.add_argument("kind")
    add.add_argument("payload", nargs="?", default="{}", help="JSON (default {})")
    add.add_argument("--timezone", default="UTC", help="IANA zone the cron is read in")
    add.add_argument("--queue", default="default")
    add.add_argument("--priority", type=int)
    add.add_argument("--max-retries", type=int)
    add.add_argument("--timeout-s", type=float)
    add.add_argument("--user-id")
    add.add_argument("--tag", action="append", dest="tags")
    add.add_argument("--paused", action="store_true", help="create it disabled")
    add_settings_flags(add, "dsn")
    listing = actions.add_parser("list", help="every schedule with its next fire time")
    listing.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    add_settings_flags(listing, "dsn")
    for name in ("remove", "pause", "resume"):
        sub = actions.add_parser(name, help=f"{name} a schedule")
        sub.add_argument("name")
        add_settings_flags(sub, "dsn")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = database_settings(args)
    if args.action == "add":
        made = _with(settings, lambda s: s.create(_spec(args)))
        print(f"schedule {made.name}: next fire {made.next_fire_at.isoformat()}")
    elif args.action == "list":
        rows = _with(settings, lambda s: s.list())
        if args.json:
            for row in rows:
                print(msgspec.json.encode(row).decode())
        else:
            print(_table(rows))
    elif args.action == "remove":
        _with(settings, lambda s: s.delete(args.name))
        print(f"schedule {args.name}: removed")
    else:
        verb = args.action
        changed = _with(
            settings, lambda s: s.pause(args.name) if verb == "pause" else s.resume(args.name)
        )
        state = "enabled" if changed.enabled else "paused"
        print(f"schedule {changed.name}: {state}, next fire {changed.next_fire_at.isoformat()}")
    return 0


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    try:
        payload = msgspec.json.decode(args.payload)
    except msgspec.DecodeError as exc:
        raise InvalidInput("payload", f"is not valid JSON: {exc}") from None
    task: dict[str, Any] = {"kind": args.kind, "payload": payload, "queue": args.queue}
    for field in ("priority", "max_retries", "timeout_s", "user_id", "tags"):
        value = getattr(args, field)
        if value is not None:
            task[field] = value
    return {
        "name": args.name,
        "cron": args.cron,
        "timezone": args.timezone,
        "task": task,
        "enabled": not args.paused,
    }


def _with(settings: Settings, action: Callable[[Schedules], Awaitable[T]]) -> T:
    async def go() -> T:
        async with create_pool(settings.dsn, max_size=1) as pool:
            return await action(Schedules(pool, settings))

    return asyncio.run(go())


def _table(rows: list[Schedule]) -> str:
    header = ("NAME", "CRON", "TIMEZONE", "KIND", "QUEUE", "STATE", "NEXT FIRE (UTC)", "LAST FIRE")
    return format_table(
        header,
        [
            (
                r.name,
                r.cron,
                r.timezone,
                r.task.get("kind"),
                r.task.get("queue", "default"),
                "enabled" if r.enabled else "paused",
                r.next_fire_at.strftime("%Y-%m-%d %H:%M"),
                r.last_fire_at.strftime("%Y-%m-%d %H:%M") if r.last_fire_at else None,
            )
            for r in rows
        ],
    )
