"""``pgqueue why ID``: every reason a task is not running (SPEC §12), one per line."""

from __future__ import annotations

import argparse
from typing import Any

from pgqueue.cli.connection import on_database
from pgqueue.cli.options import (
    add_settings_flags,
    database_settings,
    task_id_arg,
)
from pgqueue.db import limits
from pgqueue.limits import Why
from pgqueue.tasks import TaskId


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "why", help="why a task is not running (every reason that holds now)"
    )
    parser.add_argument("id", help="the task id")
    add_settings_flags(parser, "dsn")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = database_settings(args)
    task_id = task_id_arg(args.id)
    why = on_database(settings.dsn, lambda conn: limits.why(conn, task_id))
    print(render(task_id, why))
    return 0


def render(task_id: TaskId, why: Why) -> str:
    if not why.reasons:
        if why.status == "pending":
            return f"task {task_id} is pending and next in line: a worker claims it now"
        return f"task {task_id} is {why.status}: nothing holds it back"
    lines = [f"task {task_id} is {why.status}:"]
    lines += [f"  {r.code:<18} {r.detail}" for r in why.reasons]
    return "\n".join(lines)
