"""The ``pgqueue`` command: one module per subcommand (group) in this package.

Each module exposes ``register(subparsers)``, which adds its parser and sets ``run`` — a
function taking the parsed arguments and returning the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

import msgspec

from pgqueue.errors import PgQueueError

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
    "health",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgqueue", description="A durable task queue that needs nothing but PostgreSQL."
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"pgqueue.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `worker --processes` re-runs it
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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
