"""``pgqueue dev``: the one-command start.

Without ``PGQUEUE_DSN`` it runs an embedded PostgreSQL (data under ``.pgqueue/``), migrates,
and runs in one process everything pgqueue has: the HTTP API, a worker with the demo
handlers, and the reaper. No auth: for a laptop, never for production.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Generator
from pathlib import Path
from typing import Any

import uvicorn

from pgqueue.cli.options import add_settings_flags, settings_from_args
from pgqueue.db.migrate import migrate
from pgqueue.db.pool import connect
from pgqueue.settings import Settings
from pgqueue.worker.loop import Worker


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dev", help="everything in one process, with an embedded PostgreSQL if no DSN is set"
    )
    parser.add_argument("--app", help="module:app to run instead of the demo handlers")
    parser.add_argument("--concurrency", type=int, default=10)
    add_settings_flags(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if not settings.dsn:
        from pgqueue.db.server import embedded_dsn

        data = Path(settings.data_dir).resolve()
        print(f"pgqueue dev: starting an embedded PostgreSQL, data in {data}", flush=True)
        overrides = {**_as_dict(settings), "dsn": embedded_dsn(data / "pg")}
        settings = Settings.from_env(None, **overrides)
    asyncio.run(_dev(settings, args))
    return 0


def _as_dict(settings: Settings) -> dict[str, Any]:
    import msgspec

    return msgspec.structs.asdict(settings)


async def _dev(settings: Settings, args: argparse.Namespace) -> None:
    from pgqueue.cli.worker import load_app

    conn = await connect(settings.dsn)
    async with conn:
        applied = await migrate(conn)
    app = load_app(args.app) if args.app else _demo_app()
    worker = Worker(app, settings, concurrency=args.concurrency)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    print(f"pgqueue dev: database {settings.dsn}")
    print(f"pgqueue dev: schema {'migrated: ' + ', '.join(applied) if applied else 'up to date'}")
    print(
        f"pgqueue dev: worker {worker.id} on queues {','.join(worker.queues)} "
        f"running {', '.join(app.kinds)}"
    )
    print(
        f'pgqueue dev: try  PGQUEUE_DSN="{settings.dsn}" pgqueue enqueue demo.agent '
        '\'{"goal": "hello"}\' --wait 30',
        flush=True,
    )
    server = _api_server(settings)
    print(
        f"pgqueue dev: API on http://{settings.host}:{settings.port} WITHOUT AUTH "
        f"(OpenAPI: /schema/openapi.json, live updates: ws://{settings.host}:{settings.port}/ws)",
        flush=True,
    )
    print(f"pgqueue dev: dashboard on http://{settings.host}:{settings.port}/ui", flush=True)
    runners = [
        asyncio.create_task(worker.run(), name="pgqueue-dev-worker"),
        asyncio.create_task(server.serve(), name="pgqueue-dev-api"),
    ]
    await asyncio.wait(
        [asyncio.ensure_future(stop.wait()), *runners], return_when=asyncio.FIRST_COMPLETED
    )
    print("pgqueue dev: shutting down", flush=True)
    worker.stop()
    server.should_exit = True
    for runner in runners:
        with contextlib.suppress(asyncio.CancelledError):
            await runner  # re-raises a runner's crash, after the others stopped


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: `dev` stops everything together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _api_server(settings: Settings) -> uvicorn.Server:
    from pgqueue.api.app import create_app

    config = uvicorn.Config(
        create_app(settings, insecure=True),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="on",
    )
    return _Server(config)


def _demo_app() -> Any:
    from pgqueue.demo import app

    return app
