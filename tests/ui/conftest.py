"""Browser-test fixtures: a real ``pgqueue serve`` with tokens, a real worker process, and
Debian's Chromium driven by Playwright (never a browser Playwright downloads).

Every page records console errors and uncaught exceptions; a test fails at teardown if any
appeared, except the browser's own "Failed to load resource" lines for answers the test
expects (``Page.allow``), e.g. the 404 of a task the token may not see.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from playwright.async_api import async_playwright

from pgqueue.settings import Settings
from tests.api.conftest import create_token, free_port, serve_process, wait_healthy
from tests.helpers import fast_settings, stop_processes, worker_process

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ENABLE = (
    "the browser tests need Chromium: install it (Debian/Ubuntu: `apt-get install chromium`; "
    "CI's .ci/run does) so that `chromium` is on PATH, then run `pytest tests/ui`"
)

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Without Chromium every browser test is skipped, saying how to enable it."""
    if CHROMIUM is not None:
        return
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.skip(reason=ENABLE))


# The browser logs a failed fetch as an error of its own; these are matched against it.
_FAILED_LOAD = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")
# Until GET /tasks/{id}/why is served everywhere, the page's probe for it may be a 404.
_WHY = (404, re.compile(r"/tasks/[^/]+/why$"))


class Tokens(msgspec.Struct):
    admin: str
    alice: str
    bob: str
    worker: str


class Stack(msgspec.Struct):
    """A served API with its tokens, and the worker running tests/ui/apps.py."""

    url: str
    port: int
    tokens: Tokens
    settings: Settings
    gates: Path

    def http(self, token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def gate(self, name: str) -> str:
        return str(self.gates / name)

    def open_gate(self, path: str) -> None:
        Path(path).touch()


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    stop_processes(procs, timeout=20)
    for proc in procs:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
async def stack(dsn: str, tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> Stack:
    # Nothing here tests stalls: a long stall time keeps a loaded machine's late heartbeat
    # from requeueing a task the browser is watching.
    settings = fast_settings(dsn, stall_s=30.0)
    tokens = Tokens(
        admin=await create_token(dsn, "root", "admin"),
        alice=await create_token(dsn, "alice", "user"),
        bob=await create_token(dsn, "bob", "user"),
        worker=await create_token(dsn, "w", "worker"),
    )
    port = free_port()
    server = serve_process(settings, port)
    started.append(server)
    started.append(worker_process(settings, "tests.ui.apps:app", "--queues", "default"))
    url = f"http://127.0.0.1:{port}"
    await wait_healthy(url, server)
    gates = tmp_path / "gates"
    gates.mkdir()
    return Stack(url=url, port=port, tokens=tokens, settings=settings, gates=gates)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        await chromium.close()


class Problems:
    """What a page logged that a clean dashboard never logs."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[tuple[int, re.Pattern[str]]] = [_WHY]
        self.allowed_messages: list[re.Pattern[str]] = []

    def allow(self, status: int, url_pattern: str) -> None:
        """Expect the browser to log a failed load of ``status`` for URLs matching this."""
        self.allowed.append((status, re.compile(url_pattern)))

    def allow_message(self, pattern: str) -> None:
        """Expect a console error matching this (e.g. the stream's refused reconnects)."""
        self.allowed_messages.append(re.compile(pattern))

    def on_console(self, message: Any) -> None:
        if message.type != "error":
            return
        if any(p.search(message.text) for p in self.allowed_messages):
            return
        failed = _FAILED_LOAD.match(message.text)
        url = message.location.get("url", "")
        if failed and any(
            int(failed.group(1)) == status and pattern.search(url)
            for status, pattern in self.allowed
        ):
            return
        self.errors.append(f"console error: {message.text} ({url})")

    def on_page_error(self, error: Any) -> None:
        self.errors.append(f"uncaught: {error}")


@pytest.fixture
def problems() -> Problems:
    return Problems()


@pytest.fixture
async def new_page(
    browser: Any, problems: Problems, started: list[subprocess.Popen[bytes]]
) -> AsyncIterator[Any]:
    """``await new_page(width=1280)``: a page in a fresh context (its own sessionStorage).

    Depends on ``started`` so that pages close before the servers they talk to stop (a
    stopped server would make the page log its reconnect attempts)."""
    contexts: list[Any] = []

    async def make(width: int = 1280, height: int = 860) -> Any:
        context = await browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        context.set_default_timeout(20_000)
        page = await context.new_page()
        page.on("console", problems.on_console)
        page.on("pageerror", problems.on_page_error)
        return page

    yield make
    for context in contexts:
        await context.close()
    assert problems.errors == []


async def sign_in(page: Any, url: str, token: str) -> None:
    """Open the dashboard and sign in by keyboard: type the token, press Enter."""
    await page.goto(f"{url}/ui")
    await page.locator("#token").fill(token)
    await page.locator("#token").press("Enter")
    await page.locator("#nav").wait_for(state="visible")
    await page.locator('#live[data-state="live"]').wait_for()
