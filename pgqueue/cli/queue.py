"""``pgqueue queue pause|resume|limit|rate-limit|per-user|fair|breaker QUEUE …``: steer a queue
across all workers at once (SPEC §12 limits included)."""

from __future__ import annotations

import argparse
import re
from typing import Any

import msgspec

from pgqueue.cli.connection import on_database
from pgqueue.cli.options import add_settings_flags, database_settings
from pgqueue.db import queues
from pgqueue.errors import InvalidInput
from pgqueue.limits import CircuitBreaker, QueueSettings, RateLimit
from pgqueue.stats import limit_parts

_RATIO = re.compile(r"^(\d+)/(\d+(?:\.\d+)?)s?$", re.ASCII)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "queue", help="pause or resume a queue, or set its limits (concurrency, rate, ...)"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (("pause", "stop claiming from QUEUE"), ("resume", "claim again")):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("queue")
        add_settings_flags(sub, "dsn")
    for name, value, text in (
        ("limit", "n", "at most N running at once, across all workers ('none' removes it)"),
        ("rate-limit", "rate", "at most N starts in any S seconds: N/S, e.g. 100/60 ('none')"),
        ("per-user", "n", "at most N running tasks per user_id ('none' removes it)"),
        ("fair", "on_off", "on: serve the user with the fewest running tasks first; off"),
        ("breaker", "rule", "after F failures in a row of a kind, rest it C s: F/C ('none')"),
    ):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("queue")
        sub.add_argument(value)
        add_settings_flags(sub, "dsn")
    parser.set_defaults(run=run)


def _positive(text: str, field: str) -> int | None:
    if text.lower() == "none":
        return None
    if text.isascii() and text.isdigit() and int(text) > 0:  # '²'.isdigit() holds too
        return int(text)
    raise InvalidInput(field, f"{text!r} is not a positive number or 'none'")


def _ratio(text: str, field: str) -> tuple[int, float] | None:
    if text.lower() == "none":
        return None
    match = _RATIO.match(text.strip())
    if match is None:
        raise InvalidInput(field, f"{text!r} is not N/S like 100/60, or 'none'")
    return int(match.group(1)), float(match.group(2))


def changes_of(args: argparse.Namespace) -> dict[str, Any]:
    """The setting this command line asks for, validated like the API's."""
    try:
        if args.action in ("pause", "resume"):
            return {"paused": args.action == "pause"}
        if args.action == "limit":
            return {"concurrency_limit": _positive(args.n, "n")}
        if args.action == "rate-limit":
            pair = _ratio(args.rate, "rate")
            if pair is None:
                return {"rate_limit": None}
            return {"rate_limit": msgspec.convert({"tasks": pair[0], "per_s": pair[1]}, RateLimit)}
        if args.action == "per-user":
            return {"per_user_concurrency": _positive(args.n, "n")}
        if args.action == "fair":
            if args.on_off not in ("on", "off"):
                raise InvalidInput("on_off", f"{args.on_off!r} is neither 'on' nor 'off'")
            return {"fair": args.on_off == "on"}
        pair = _ratio(args.rule, "rule")
        if pair is None:
            return {"circuit_breaker": None}
        rule = {"failures": pair[0], "cool_down_s": pair[1]}
        return {"circuit_breaker": msgspec.convert(rule, CircuitBreaker)}
    except msgspec.ValidationError as exc:
        raise InvalidInput(args.action, str(exc)) from None


def describe(q: QueueSettings) -> str:
    parts = ["paused" if q.paused else "active", f"limit {q.concurrency_limit or 'none'}"]
    parts += limit_parts(q, lambda seconds: f"{seconds:g}")
    return f"queue {q.name}: " + ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    settings = database_settings(args)
    changes = changes_of(args)
    print(describe(on_database(settings.dsn, lambda c: queues.configure(c, args.queue, changes))))
    return 0
