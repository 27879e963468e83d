"""``pgqueue serve --workers 2`` as a user runs it: two server processes under a supervisor that
holds nothing but uvicorn (the CLI's checks and psycopg are left behind when it replaces
itself), both answering HTTP and WebSockets, and SIGTERM ending the whole tree within 10 s."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import websockets
from uvicorn.importer import import_from_string

from pgqueue.api.stream.wire import FrameWriterProtocol
from pgqueue.cli import serve
from pgqueue.settings import Settings
from tests.api.conftest import Tokens, free_port, serve_process, wait_healthy
from tests.api.test_long_polls import close_code
from tests.helpers import wait_for


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def proc_file(pid: int, name: str) -> str:
    """/proc/<pid>/<name> as text (NULs of cmdline as spaces)."""
    return Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_supervisor_names_the_protocol_the_servers_run() -> None:
    """serve.py names the protocol as a string (importing it would load the app into the
    supervisor); uvicorn must resolve it to the one wire.py defines."""
    assert import_from_string(serve.WS_PROTOCOL) is FrameWriterProtocol


async def test_two_server_processes_under_a_lean_supervisor(
    api_settings: Settings, tokens: Tokens, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    proc = serve_process(api_settings, port, "--workers", "2")
    processes.append(proc)
    url = f"http://127.0.0.1:{port}"
    await wait_healthy(url, proc)

    def servers() -> list[int]:
        return [pid for pid in children(proc.pid) if "spawn_main" in proc_file(pid, "cmdline")]

    async def two_servers() -> bool:
        return len(servers()) == 2

    await wait_for(two_servers, timeout=30, what="two server processes")
    # The same pid, now a Python that loaded uvicorn and not the CLI's psycopg (libpq)
    assert "uvicorn.run" in proc_file(proc.pid, "cmdline")
    assert "psycopg" not in proc_file(proc.pid, "maps")
    assert all("psycopg" in proc_file(pid, "maps") for pid in servers())

    headers = {"Authorization": f"Bearer {tokens.alice}"}
    sockets = [
        await websockets.connect(f"ws://127.0.0.1:{port}/ws?token={tokens.alice}")
        for _ in range(16)
    ]
    try:
        for ws in sockets:
            await ws.send(json.dumps({"op": "subscribe", "all": True}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
            created = await http.post("/tasks", json={"kind": "two-servers"})
            assert created.status_code == 201, created.text
            task_id = created.json()["id"]
        for ws in sockets:  # whichever process each connection reached
            message = json.loads(await asyncio.wait_for(ws.recv(), 15))
            assert (message["event"], message["task"]["id"]) == ("created", task_id)

        pids = [proc.pid, *children(proc.pid)]
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert all([await close_code(ws) == 1001 for ws in sockets])
        await asyncio.to_thread(proc.wait, 10)

        async def all_gone() -> bool:
            return not any(alive(pid) for pid in pids)

        await wait_for(all_gone, timeout=10, what="every process to end")
        assert time.monotonic() - sent < 10
        assert proc.returncode in (0, -signal.SIGTERM), proc.stderr.read() if proc.stderr else None
    finally:
        for ws in sockets:
            await ws.close()
