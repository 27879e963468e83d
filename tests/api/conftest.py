"""API fixtures: a real uvicorn server on a free port (in this process or as a subprocess),
tokens of each role, and clients that speak real HTTP and WebSocket to it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn
from litestar import Litestar

from pgqueue.api import create_app
from pgqueue.api.auth import new_token, token_hash
from pgqueue.cli.serve import WS_PROTOCOL
from pgqueue.client import Client
from pgqueue.db import tokens as db_tokens
from pgqueue.db.pool import connect
from pgqueue.settings import Settings
from tests.helpers import ROOT, fast_settings, stop_processes, wait_for


class Tokens(msgspec.Struct):
    admin: str
    alice: str
    bob: str
    worker: str


class Api(msgspec.Struct):
    """A running server: its base URL and tokens."""

    url: str
    tokens: Tokens
    settings: Settings

    def http(self, token: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60)

    def client(self, token: str | None) -> Client:
        return Client(self.url, token, timeout_s=60)

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/ws"


async def create_token(dsn: str, user: str, role: str) -> str:
    token = new_token()
    conn = await connect(dsn)
    async with conn:
        await db_tokens.insert(
            conn,
            token_hash=token_hash(token),
            prefix=token[:10],
            user_id=user,
            role=role,
            note="test",
        )
    return token


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    with contextlib.closing(free_socket()) as sock:
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(
    settings: Settings,
    ws: str = WS_PROTOCOL,
    apps: list[Litestar] | None = None,
    **app_options: Any,
) -> AsyncGenerator[str, None]:
    """uvicorn serving create_app(settings) in this event loop; yields the base URL.

    ``ws``: uvicorn's WebSocket protocol, by default the one ``pgqueue serve`` runs; ``apps``
    gets the app appended, for a test that looks inside it."""
    sock = free_socket()
    port = sock.getsockname()[1]
    app = create_app(settings, **app_options)
    if apps is not None:
        apps.append(app)
    # (no permessage-deflate, as `pgqueue serve`: the frame writer is offered only without it)
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", ws=ws, ws_per_message_deflate=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        if task.done():
            task.result()
        return server.started

    await wait_for(started, timeout=30, what="uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)
        sock.close()


@pytest.fixture
def api_settings(dsn: str) -> Settings:
    return fast_settings(dsn)


@pytest.fixture
async def tokens(dsn: str) -> Tokens:
    return Tokens(
        admin=await create_token(dsn, "root", "admin"),
        alice=await create_token(dsn, "alice", "user"),
        bob=await create_token(dsn, "bob", "user"),
        worker=await create_token(dsn, "w", "worker"),
    )


@pytest.fixture
async def api(api_settings: Settings, tokens: Tokens) -> AsyncIterator[Api]:
    async with serving(api_settings) as url:
        yield Api(url=url, tokens=tokens, settings=api_settings)


@pytest.fixture
async def alice(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with api.http(api.tokens.alice) as c:
        yield c


@pytest.fixture
async def bob(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with api.http(api.tokens.bob) as c:
        yield c


@pytest.fixture
async def admin(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with api.http(api.tokens.admin) as c:
        yield c


@pytest.fixture
async def worker(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with api.http(api.tokens.worker) as c:
        yield c


def serve_process(settings: Settings, port: int, *args: str) -> subprocess.Popen[bytes]:
    """``pgqueue serve`` as a separate OS process."""
    env = {
        **os.environ,
        "PGQUEUE_DSN": settings.dsn,
        "PGQUEUE_LISTEN_DSN": settings.listen_dsn,
        "PGQUEUE_PORT": str(port),
        "PGQUEUE_HEARTBEAT_S": str(settings.heartbeat_s),
        "PGQUEUE_REAP_S": str(settings.reap_s),
        "PGQUEUE_POLL_S": str(settings.poll_s),
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "--log-level", "WARNING", "serve", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def wait_healthy(url: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:

        async def ready() -> bool:
            if proc is not None and proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"server exited {proc.returncode}: {out!r} {err!r}")
            try:
                return (await http.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(ready, timeout=30, what=f"{url} to be ready")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; terminated (then killed) after it."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    stop_processes(started, timeout=15)
    for proc in started:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
