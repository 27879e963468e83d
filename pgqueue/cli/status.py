"""``pgqueue status``: a live terminal view of queues, workers and recent failures.

Reads the operator views (sql/views/), so it shows exactly what psql users see. Refreshes
every ``--interval`` seconds until Ctrl-C; ``--once`` prints one snapshot and exits (for
scripts and tests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

import psycopg

from pgqueue.cli.options import add_settings_flags, database_settings
from pgqueue.cli.table import format_table
from pgqueue.db import stats
from pgqueue.db.pool import connect
from pgqueue.errors import InvalidInput
from pgqueue.stats import Overview

_CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status", help="live view of queues, workers and recent failures"
    )
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    parser.add_argument("--interval", type=float, default=2.0, help="refresh seconds (2)")
    parser.add_argument("--failures", type=int, default=10, help="recent failures shown (10)")
    add_settings_flags(parser, "dsn")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = database_settings(args)
    if args.interval <= 0:
        raise InvalidInput("interval", "must be > 0")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_watch(settings.dsn, args))
    return 0


def render(snap: Overview) -> str:
    """The snapshot as text: three tables under a one-line summary."""
    totals = [sum(getattr(q, f) for q in snap.queues) for f in ("due", "running", "failed")]
    out = [
        f"pgqueue status  {snap.at:%Y-%m-%d %H:%M:%S} UTC  ·  {len(snap.workers)} workers  ·  "
        f"{totals[0]} due  ·  {totals[1]} running  ·  {totals[2]} failed  ·  "
        f"{snap.stalled} stalled",
        "",
        "QUEUES",
        format_table(
            (
                "queue",
                "state",
                "limits",
                "due",
                "pending",
                "running",
                "done/min",
                "oldest due",
                "completed",
                "failed",
                "cancelled",
            ),
            [
                (
                    q.name,
                    "PAUSED" if q.paused else "active",
                    (q.limits_text() or "")
                    + "".join(f", {kind} breaker OPEN" for kind in q.open_breakers),
                    q.due,
                    q.pending,
                    q.running,
                    q.completed_last_minute,
                    f"{q.oldest_due_age_s:.0f}s",
                    q.completed,
                    q.failed,
                    q.cancelled,
                )
                for q in snap.queues
            ],
        )
        if snap.queues
        else "  (no queues yet)",
        "",
        "WORKERS",
        format_table(
            ("worker", "queues", "running", "heartbeat", "alive"),
            [
                (
                    w.id,
                    ",".join(w.queues),
                    f"{w.running_tasks}/{w.concurrency}",
                    f"{w.heartbeat_age_s:.0f}s ago",
                    "yes" if w.alive else "NO",
                )
                for w in snap.workers
            ],
        )
        if snap.workers
        else "  (no live workers)",
        "",
        "RECENT FAILURES",
        format_table(
            ("failed at", "queue", "kind", "tries", "exit", "error"),
            [
                (
                    f"{f.failed_at:%H:%M:%S}",
                    f.queue,
                    f.kind,
                    f.attempts,
                    f.exit_code,
                    _one_line(f"{f.error_type}: {f.error_message}", 70),
                )
                for f in snap.failures
            ],
        )
        if snap.failures
        else "  (none)",
    ]
    return "\n".join(out)


async def _watch(dsn: str, args: argparse.Namespace) -> None:
    conn = await connect(dsn)
    async with conn:
        while True:
            try:
                text = render(await stats.overview(conn, args.failures))
            except psycopg.OperationalError as exc:
                if args.once:
                    raise
                text = f"pgqueue status: database unreachable ({exc}); retrying"
                with contextlib.suppress(psycopg.Error):
                    conn = await connect(dsn)
            if args.once:
                sys.stdout.write(text + "\n")
                return
            sys.stdout.write(_CLEAR + text + "\n")
            sys.stdout.flush()
            await asyncio.sleep(args.interval)


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
