"""``pgqueue migrate``: create or upgrade the schema (idempotent, safe when run concurrently)."""

from __future__ import annotations

import argparse
from typing import Any

from pgqueue.cli.connection import on_database
from pgqueue.cli.options import add_settings_flags, database_settings
from pgqueue.db.migrate import migrate


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "migrate", help="create or upgrade the pgqueue schema"
    )
    add_settings_flags(parser, "dsn")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = database_settings(args)
    applied = on_database(settings.dsn, migrate)
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0
