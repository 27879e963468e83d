"""``pgqueue purge --older-than 7d``: delete finished tasks (and their events) now."""

from __future__ import annotations

import argparse
import asyncio
import re
from typing import Any

from pgqueue.cli.options import add_settings_flags, database_settings
from pgqueue.db.pool import create_pool
from pgqueue.errors import InvalidInput
from pgqueue.retention import purge_finished

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")


def parse_duration(text: str, field: str = "older-than") -> float:
    """``90s``, ``15m``, ``12h``, ``7d``, ``2w`` as seconds; InvalidInput naming ``field``."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise InvalidInput(field, f"{text!r} is not a duration like 90s, 15m, 12h, 7d or 2w")
    return float(match.group(1)) * _UNITS[match.group(2)]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "purge", help="delete completed, failed and cancelled tasks older than a duration"
    )
    parser.add_argument(
        "--older-than", required=True, help="e.g. 7d, 12h (finished longer ago than this)"
    )
    add_settings_flags(parser, "dsn")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    older_than_s = parse_duration(args.older_than)
    settings = database_settings(args)
    deleted = asyncio.run(_purge(settings.dsn, older_than_s))
    print(f"deleted {deleted} finished tasks older than {args.older_than}")
    return 0


async def _purge(dsn: str, older_than_s: float) -> int:
    async with create_pool(dsn, max_size=1) as pool:
        return await purge_finished(pool, older_than_s)
