"""``pgqueue health``: a container health check that needs nothing but pgqueue itself.

The slim image has no curl. ``pgqueue health`` asks the API's ``/readyz`` (database
reachable, schema current, listener connected); ``pgqueue health --worker`` asks the database
whether a worker on this host (a container's host name is its own) heartbeated within the
stall time. Exit 0 healthy, 1 not, with the reason on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from typing import Any

import httpx
import psycopg

from pgqueue.cli.options import add_settings_flags, settings_from_args
from pgqueue.db.health import live_workers_on_host
from pgqueue.db.pool import connect
from pgqueue.errors import InvalidInput
from pgqueue.settings import Settings

TIMEOUT_S = 5.0


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "health", help="health check: the API's /readyz, or a live worker on this host"
    )
    parser.add_argument(
        "--url", help="the readiness URL (default http://127.0.0.1:$PGQUEUE_PORT/readyz)"
    )
    parser.add_argument(
        "--worker", action="store_true", help="check for a live worker on this host instead"
    )
    add_settings_flags(parser, "dsn", "port", "stall_s")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.worker:
        return _worker(settings)
    url = args.url or f"http://127.0.0.1:{settings.port}/readyz"
    try:
        response = httpx.get(url, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        print(f"pgqueue health: {url}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"pgqueue health: {url}: {response.status_code} {response.text}", file=sys.stderr)
        return 1
    return 0


def _worker(settings: Settings) -> int:
    if not settings.dsn:
        raise InvalidInput("dsn", "set PGQUEUE_DSN or pass --dsn")
    host = socket.gethostname()
    try:
        alive = asyncio.run(_count(settings, host))
    except psycopg.Error as exc:
        print(f"pgqueue health: database: {exc}", file=sys.stderr)
        return 1
    if alive == 0:
        print(
            f"pgqueue health: no worker on {host} heartbeated in the last {settings.stall_s:g}s",
            file=sys.stderr,
        )
        return 1
    return 0


async def _count(settings: Settings, host: str) -> int:
    conn = await connect(settings.dsn, connect_timeout=int(TIMEOUT_S))
    async with conn:
        return await live_workers_on_host(conn, host, settings.stall_s)
