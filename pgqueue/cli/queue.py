"""``pgqueue queue pause|resume|limit QUEUE``: steer a queue across all workers at once."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, LiteralString

from pgqueue.cli.options import add_settings_flags, settings_from_args
from pgqueue.db.pool import connect
from pgqueue.db.queries import QUERIES
from pgqueue.errors import InvalidInput


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "queue", help="pause or resume a queue, or cap how many of its tasks run at once"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (("pause", "stop claiming from QUEUE"), ("resume", "claim again")):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("queue")
        add_settings_flags(sub, "dsn")
    limit = actions.add_parser("limit", help="at most N running at once, across all workers")
    limit.add_argument("queue")
    limit.add_argument("n", help="a positive number, or 'none' to remove the limit")
    add_settings_flags(limit, "dsn")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if not settings.dsn:
        raise InvalidInput("dsn", "set PGQUEUE_DSN or pass --dsn")
    params: dict[str, Any] = {"queue": args.queue}
    query = {
        "pause": QUERIES["queue_pause"],
        "resume": QUERIES["queue_resume"],
        "limit": QUERIES["queue_set_limit"],
    }[args.action]
    if args.action == "limit":
        if args.n.lower() == "none":
            params["limit"] = None
        elif args.n.isascii() and args.n.isdigit() and int(args.n) > 0:
            params["limit"] = int(args.n)
        else:
            raise InvalidInput("n", f"{args.n!r} is not a positive number or 'none'")
    name, limit, paused = asyncio.run(_apply(settings.dsn, query, params))
    print(f"queue {name}: {'paused' if paused else 'active'}, limit {limit or 'none'}")
    return 0


async def _apply(
    dsn: str,
    query: LiteralString,
    params: dict[str, Any],
) -> tuple[str, int | None, bool]:
    conn = await connect(dsn)
    async with conn:
        cur = await conn.execute(query, params)
        row = await cur.fetchone()
    assert row is not None
    return row[0], row[1], row[2]
