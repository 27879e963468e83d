"""``pgqueue migrate``: create or upgrade the schema (idempotent, safe when run concurrently)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from pgqueue.cli.options import add_settings_flags, settings_from_args
from pgqueue.db.migrate import migrate
from pgqueue.db.pool import connect
from pgqueue.errors import InvalidInput


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "migrate", help="create or upgrade the pgqueue schema"
    )
    add_settings_flags(parser, "dsn")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if not settings.dsn:
        raise InvalidInput("dsn", "set PGQUEUE_DSN or pass --dsn")
    applied = asyncio.run(_migrate(settings.dsn))
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


async def _migrate(dsn: str) -> list[str]:
    conn = await connect(dsn)
    async with conn:
        return await migrate(conn)
