"""``pgqueue mcp --url URL --token T``: the API's tools for agents, over MCP on stdio (SPEC §16).

stdout carries the protocol; logs go to stderr. Needs the extra: ``pip install 'pgqueue[mcp]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "mcp",
        help="Model Context Protocol server on stdio, its tools calling the HTTP API",
        description="Serve enqueue_task, get_task, wait_task, list_tasks, cancel_task, "
        "retry_task, signal_task and why_task over MCP (stdio), each a call of the HTTP API "
        "with the given token: the token's rights are the tools' rights.",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("PGQUEUE_URL", "http://127.0.0.1:8000"),
        help="the pgqueue API (PGQUEUE_URL, default http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("PGQUEUE_TOKEN"),
        help="the API token the tools act with (PGQUEUE_TOKEN)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        from pgqueue.mcp.server import serve
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "mcp":
            print("pgqueue mcp needs the mcp extra: pip install 'pgqueue[mcp]'", file=sys.stderr)
            return 2
        raise
    asyncio.run(serve(args.url, args.token))
    return 0
