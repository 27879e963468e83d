"""``pgqueue serve``: the HTTP/WebSocket API under uvicorn, one or several processes.

Refuses to start without auth: it needs at least one live token in ``pgqueue.api_tokens``
(``pgqueue token create``), unless ``--insecure`` says every caller may do everything.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from pgqueue.cli.options import add_settings_flags, database_settings
from pgqueue.db import tokens
from pgqueue.db.migrate import current_version, latest_version
from pgqueue.db.pool import connect
from pgqueue.errors import InvalidInput
from pgqueue.logging import configure as configure_logging
from pgqueue.settings import Settings

if TYPE_CHECKING:
    from litestar import Litestar

# uvicorn's WebSocket protocol for the server processes (pgqueue/api/stream/wire.py).
WS_PROTOCOL = "pgqueue.api.stream.wire:FrameWriterProtocol"

# The supervisor of `serve --workers N`: uvicorn's process manager (it binds the socket,
# spawns the server processes, restarts one that dies, stops them on SIGTERM) and nothing
# more, so that it costs the memory of uvicorn alone. pgqueue's logging is loaded only for
# JSON lines (uvicorn's own text handlers otherwise).
_SUPERVISOR = """
import json, sys
given = json.loads(sys.argv[1])
if given["logs"]["json"]:
    from pgqueue.logging import configure
    configure(given["logs"]["level"], "json")
import uvicorn
uvicorn.run(**given["options"])
"""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="serve the HTTP and WebSocket API"
    )
    parser.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    parser.add_argument(
        "--insecure", action="store_true", help="no auth: every caller is an admin (dev only)"
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    add_settings_flags(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = database_settings(args)
    if args.workers < 1:
        raise InvalidInput("workers", f"must be >= 1, got {args.workers}")
    version, tokens = asyncio.run(_check(settings))
    if version < latest_version():
        print(
            f"pgqueue serve: schema at migration {version}, latest is {latest_version()}: "
            "run `pgqueue migrate` first",
            file=sys.stderr,
        )
        return 2
    if not args.insecure and tokens == 0:
        print(
            "pgqueue serve: refusing to start without auth: no API token exists.\n"
            "  create one:  pgqueue token create --user admin --role admin\n"
            "  or run without auth (every caller is an admin):  pgqueue serve --insecure",
            file=sys.stderr,
        )
        return 2
    from uvicorn.config import LOGGING_CONFIG

    # Each uvicorn process builds its app from the environment (--workers spawns them).
    for name, value in _as_env(settings).items():
        os.environ[name] = value
    os.environ["PGQUEUE_INSECURE"] = "1" if args.insecure else "0"
    mode = "WITHOUT AUTH (--insecure)" if args.insecure else "with token auth"
    print(
        f"pgqueue serve: http://{settings.host}:{settings.port} {mode}, "
        f"{args.workers} process(es); OpenAPI at /schema/openapi.json",
        flush=True,
    )
    json_logs = os.environ.get("PGQUEUE_LOG_FORMAT") == "json"
    options: dict[str, Any] = {
        "app": "pgqueue.cli.serve:app_from_env",
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "workers": args.workers,
        "access_log": args.access_log,
        "log_level": "warning",
        # SIGTERM: the app drains first (long-polls answered, WebSockets closed with 1001,
        # api/app.py); what is still running 5 s later is cancelled, so that with the
        # lifespan's own shutdown the process is gone within the 10 s of SPEC §4.
        "timeout_graceful_shutdown": 5,
        # JSON logs: uvicorn's lines go through the root logger too, not its own text handlers
        "log_config": None if json_logs else LOGGING_CONFIG,
        # websockets-sansio (it frames a message in about a third of wsproto's time; wsproto
        # is not installed: a new dependency for a slower path; uvicorn's other "websockets"
        # implementation runs on websockets.legacy, which is deprecated), with the frame
        # writer through which the hub writes each message's frame, built once, to every
        # subscriber (pgqueue/api/stream/wire.py). Named, not imported: importing it here
        # would load the whole app into a --workers supervisor.
        "ws": WS_PROTOCOL,
        "ws_ping_interval": 20.0,
        "ws_ping_timeout": 20.0,
        # No permessage-deflate: a change goes to every subscriber, and deflate compresses it
        # again for each one with a zlib context per connection (memory and CPU per frame;
        # docs/benchmarks.md has the A/B). Messages are < 1 KB.
        "ws_per_message_deflate": False,
    }
    if args.workers > 1:
        # This process has loaded the CLI, psycopg and its checks; as the supervisor of the
        # server processes it needs none of that. Replaced by a Python that imports only
        # uvicorn (same pid, so signals and exit status reach it as before).
        sys.stdout.flush()
        sys.stderr.flush()
        logs = {"level": args.log_level, "json": json_logs}
        payload = json.dumps({"logs": logs, "options": options})
        os.execv(sys.executable, [sys.executable, "-c", _SUPERVISOR, payload])  # noqa: S606 -- a fixed program
    import uvicorn

    uvicorn.run(**options)
    return 0


def app_from_env() -> Litestar:
    """The app of one server process (uvicorn's factory, run in each ``--workers`` process).

    Also tunes the garbage collector of that process: the objects that exist once the app is
    built (modules, routes, the app) are frozen out of collections, and young collections
    run every 10,000 allocations instead of 700. With 1,000 WebSocket subscribers, every
    change allocates a few objects per subscriber, so collections ran often and the older
    generations hold every connection's objects (pauses in the fan-out). The A/B with
    ``bench/ws_latency.py`` is in docs/benchmarks.md.
    """
    from pgqueue.api.app import app_from_env as build

    if not logging.getLogger().handlers:  # a --workers process: `main()` did not run here
        configure_logging("INFO", os.environ.get("PGQUEUE_LOG_FORMAT") or "text")
    app = build()
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    return app


async def _check(settings: Settings) -> tuple[int, int]:
    conn = await connect(settings.dsn)
    async with conn:
        version = await current_version(conn)
        if version < latest_version():
            return version, 0
        live = await tokens.count_live(conn)
    return version, live


def _as_env(settings: Settings) -> dict[str, str]:
    import msgspec

    return {
        f"PGQUEUE_{name.upper()}": str(value)
        for name, value in msgspec.structs.asdict(settings).items()
    }
