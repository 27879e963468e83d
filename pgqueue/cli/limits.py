"""``pgqueue limits``: users' budgets and caps (SPEC §12).

``pgqueue limits`` lists every user with limits; ``pgqueue limits set USER --cost-per-day 5
--max-running 3`` replaces a user's limits (an option left out is removed); ``pgqueue limits
show USER`` prints them with the user's spend today, this month and per day.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import msgspec

from pgqueue.cli.options import add_settings_flags, database_settings
from pgqueue.cli.table import format_table
from pgqueue.db import limits
from pgqueue.db.pool import connect
from pgqueue.errors import InvalidInput
from pgqueue.limits import UserLimits, UserLimitsOut, UserName, UserSpend


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "limits", help="users' cost budgets and running caps: list, set, show"
    )
    add_settings_flags(parser, "dsn")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    put = actions.add_parser("set", help="replace USER's limits (left out: removed)")
    put.add_argument("user")
    put.add_argument("--cost-per-day", type=float, help="budget per UTC day")
    put.add_argument("--cost-per-month", type=float, help="budget per UTC calendar month")
    put.add_argument("--max-running", type=int, help="at most N running tasks at once")
    add_settings_flags(put, "dsn")
    show = actions.add_parser("show", help="USER's limits and spend")
    show.add_argument("user")
    add_settings_flags(show, "dsn")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = database_settings(args)
    print(asyncio.run(_run(settings.dsn, args)))
    return 0


def _user(name: str) -> str:
    try:
        return msgspec.convert(name, UserName)
    except msgspec.ValidationError as exc:
        raise InvalidInput("user", str(exc)) from None


async def _run(dsn: str, args: argparse.Namespace) -> str:
    conn = await connect(dsn)
    async with conn:
        if args.action == "set":
            try:
                wanted = msgspec.convert(
                    {
                        "cost_per_day": args.cost_per_day,
                        "cost_per_month": args.cost_per_month,
                        "max_running": args.max_running,
                    },
                    UserLimits,
                )
            except msgspec.ValidationError as exc:
                raise InvalidInput("limits", str(exc)) from None
            row = await limits.set_user_limits(conn, _user(args.user), wanted)
            return render_limits([row])
        if args.action == "show":
            user = _user(args.user)
            row = await limits.get_user_limits(conn, user)
            spend = await limits.get_user_usage(conn, user)
            return render_limits([row]) + "\n\n" + render_spend(spend)
        return render_limits(await limits.list_user_limits(conn))


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def render_limits(rows: list[UserLimitsOut]) -> str:
    if not rows:
        return "(no user has limits)"
    return format_table(
        ("user", "cost/day", "cost/month", "max running"),
        [
            (
                r.user_id,
                _money(r.cost_per_day),
                _money(r.cost_per_month),
                "-" if r.max_running is None else r.max_running,
            )
            for r in rows
        ],
    )


def render_spend(spend: UserSpend) -> str:
    head = (
        f"{spend.user_id}: spent {spend.cost_today:g} today, {spend.cost_this_month:g} this month"
        f" (UTC); {spend.running} running"
        + (f"; {spend.budget_exhausted} budget used up" if spend.budget_exhausted else "")
    )
    if not spend.days:
        return head
    table = format_table(
        ("day", "input tokens", "output tokens", "cost"),
        [(d.day, f"{d.input_tokens:g}", f"{d.output_tokens:g}", f"{d.cost:g}") for d in spend.days],
    )
    return head + "\n" + table
