"""``pgqueue token create|list|revoke``: API bearer tokens (stored hashed, shown once)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from pgqueue.api.auth import CACHE_TTL_S, Role, new_token, token_hash
from pgqueue.cli.options import add_settings_flags, database_settings
from pgqueue.db import tokens
from pgqueue.db.pool import connect
from pgqueue.errors import NotFound


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "token", help="create, list or revoke API tokens"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a token; it is printed once, on the last line")
    create.add_argument("--user", required=True, help="the user the token acts as")
    create.add_argument(
        "--role", default="user", choices=[r.value for r in Role], help="default: user"
    )
    create.add_argument("--note", help="what the token is for")
    actions.add_parser("list", help="all tokens (never the secrets)")
    revoke = actions.add_parser("revoke", help="revoke a token by id or prefix")
    revoke.add_argument("ref", help="the id or prefix shown by `pgqueue token list`")
    for sub in actions.choices.values():
        add_settings_flags(sub, "dsn")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = database_settings(args)
    return asyncio.run(_run(settings.dsn, args))


async def _run(dsn: str, args: argparse.Namespace) -> int:
    conn = await connect(dsn)
    async with conn:
        if args.action == "create":
            token = new_token()
            info = await tokens.insert(
                conn,
                token_hash=token_hash(token),
                prefix=token[:10],
                user_id=args.user,
                role=args.role,
                note=args.note,
            )
            print(f"token {info.id} ({info.prefix}…) for user {info.user_id}, role {info.role}")
            print("store it now: it is not shown again")
            print(token)
            return 0
        if args.action == "list":
            for info in await tokens.list_all(conn):
                state = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "live"
                used = f"{info.last_used_at:%Y-%m-%d %H:%M}" if info.last_used_at else "never"
                print(
                    f"{info.id:>5}  {info.prefix}…  {info.user_id:<20} {info.role:<7} "
                    f"{state:<24} used {used}  {info.note or ''}"
                )
            return 0
        revoked = await tokens.revoke(conn, args.ref)
        if not revoked:
            raise NotFound(f"no live token with id or prefix {args.ref!r}")
        for info in revoked:
            print(
                f"revoked token {info.id} ({info.prefix}…) of {info.user_id}; running servers"
                f" refuse it within {CACHE_TTL_S:g} s (their token cache)"
            )
        return 0
