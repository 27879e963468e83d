"""The ``pgqueue`` command: one module per subcommand (group) in this package.

Each module exposes ``register(subparsers)``, which adds its parser and sets ``run`` — a
function taking the parsed arguments and returning the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

import msgspec

from pgqueue.errors import PgQueueError
from pgqueue.logging import FORMATS
from pgqueue.logging import configure as configure_logging

# Subcommand modules, in the order `pgqueue --help` lists them.
COMMANDS = [
    "dev",
    "migrate",
    "serve",
    "worker",
    "enqueue",
    "watch",
    "token",
    "status",
    "queue",
    "limits",
    "why",
    "schedule",
    "purge",
    "signal",
    "health",
    "mcp",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgqueue", description="A durable task queue that needs nothing but PostgreSQL."
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=None,
        help="text, or json: one object per line with task_id, kind, queue, attempt, "
        "worker_id where they apply (PGQUEUE_LOG_FORMAT, default text)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"pgqueue.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `worker --processes` re-runs it
    log_format = args.log_format or os.environ.get("PGQUEUE_LOG_FORMAT") or "text"
    if log_format not in FORMATS:
        print(
            f"pgqueue: PGQUEUE_LOG_FORMAT must be text or json, got {log_format!r}", file=sys.stderr
        )
        return 2
    configure_logging(args.log_level, log_format)
    os.environ["PGQUEUE_LOG_FORMAT"] = log_format  # processes this one starts log alike
    try:
        status: int = args.run(args)
    except (PgQueueError, msgspec.ValidationError) as exc:
        print(f"pgqueue {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
