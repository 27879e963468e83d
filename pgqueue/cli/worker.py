"""``pgqueue worker module:app``: run an App's handlers, against the database or over HTTP."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import sys
from typing import Any

from pgqueue import logging as log_context
from pgqueue.cli.options import add_settings_flags, settings_from_args
from pgqueue.errors import InvalidInput
from pgqueue.settings import Settings
from pgqueue.worker.handlers import App
from pgqueue.worker.loop import Worker


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "worker", help="run the handlers of an App (module:attribute)"
    )
    parser.add_argument("app", help="where the App is, e.g. myproject.tasks:app")
    parser.add_argument("--queues", help="comma-separated queues (default: the App's queues)")
    parser.add_argument("--concurrency", type=int, default=10, help="tasks at once (default 10)")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="P",
        help="run and supervise P worker processes, each with --concurrency (default 1)",
    )
    parser.add_argument("--worker-id", help="default: host:pid:random")
    parser.add_argument(
        "--allow-command",
        action="store_true",
        help="also run the built-in `command` kind (runs programs: only on trusted workers)",
    )
    parser.add_argument("--url", help="remote worker: the pgqueue API's base URL (no DSN needed)")
    parser.add_argument("--token", help="remote worker: a worker token (PGQUEUE_TOKEN)")
    add_settings_flags(parser)
    parser.set_defaults(run=run)


def load_app(spec: str) -> App:
    """Import ``module:attribute`` and check it is an App."""
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise InvalidInput("app", f"{spec!r} is not module:attribute")
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput("app", f"cannot import {module_name!r}: {exc}") from None
    app = getattr(module, attribute or "app", None)
    if not isinstance(app, App):
        raise InvalidInput("app", f"{spec!r} is not a pgqueue.App")
    return app


def run(args: argparse.Namespace) -> int:
    if args.processes < 1:
        raise InvalidInput("processes", f"must be >= 1, got {args.processes}")
    if args.processes > 1 and args.worker_id:
        # One id for several processes (or for a restarted one) would share leases.
        raise InvalidInput("worker_id", "cannot be given with --processes: each needs its own")
    app = load_app(args.app)  # also in the supervisor: a bad APP fails once, here
    if args.processes > 1:
        from pgqueue.cli.processes import Supervisor, without_processes_flag

        return Supervisor(without_processes_flag(args.argv), args.processes).run()
    if args.allow_command:
        from pgqueue.worker.command import register_command

        register_command(app)
    queues = [q for q in (args.queues or "").split(",") if q] or None
    if args.url:
        return asyncio.run(_run_remote(app, args, queues))
    settings = settings_from_args(args)
    if not settings.dsn:
        raise InvalidInput("dsn", "set PGQUEUE_DSN or pass --dsn (or --url for a remote worker)")
    asyncio.run(
        run_worker(
            app, settings, queues=queues, concurrency=args.concurrency, worker_id=args.worker_id
        )
    )
    return 0


async def run_worker(app: App, settings: Settings, **options: Any) -> None:
    """Run a Worker until SIGTERM or SIGINT, then shut down gracefully."""
    worker = Worker(app, settings, **options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    with log_context.bind(worker_id=worker.id):  # every log line of this worker names it
        await worker.run()


async def _run_remote(app: App, args: argparse.Namespace, queues: list[str] | None) -> int:
    import os

    from pgqueue.worker.remote import run_remote_worker

    token = args.token or os.environ.get("PGQUEUE_TOKEN")
    if not token:
        raise InvalidInput("token", "a remote worker needs --token or PGQUEUE_TOKEN")
    await run_remote_worker(
        app,
        args.url,
        token,
        queues or app.queues,
        args.concurrency,
        worker_id=args.worker_id,
        settings=settings_from_args(args),  # the webhook options, as for a local worker
    )
    return 0
