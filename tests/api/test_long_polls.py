"""Long-polls and shutdown (SPEC §4 "Limits and shutdown", issue 9 item 12), against real
servers: an abandoned long-poll ends with its client and costs the database nothing while
it waits; a claim whose client is gone leases nothing; SIGTERM answers open long-polls,
closes WebSockets with 1001 and exits within 10 s."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import time

import httpx
import psycopg
import websockets

from pgqueue.settings import Settings
from tests.api.conftest import Api, Tokens, free_port, serve_process, serving, wait_healthy
from tests.helpers import counting_statements, fast_settings, wait_for


def xact_commits(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def commits_per_s(dsn: str, seconds: float = 3) -> float:
    """Transactions committed in this test's database per second, over ``seconds``. An idle
    backend flushes its counters up to 10 s late (PGSTAT_IDLE_INTERVAL), so the window opens
    once they have been still... or 12 s have passed."""
    last = xact_commits(dsn)
    for _ in range(12):
        await asyncio.sleep(1)
        now = xact_commits(dsn)
        if now - last <= 2 * seconds:  # about what the background loops do in a second
            break
        last = now
    before = xact_commits(dsn)
    await asyncio.sleep(seconds)
    return (xact_commits(dsn) - before) / seconds


async def open_long_poll(
    port: int, request: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request.encode())
    await writer.drain()
    return reader, writer


async def close_code(ws: websockets.ClientConnection) -> int | None:
    """Read until the server closes the socket; the code it closed with."""
    while True:
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


async def gauge(url: str, name: str) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        text = (await http.get("/metrics")).text
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, name
    return float(match.group(1))


async def test_abandoned_long_polls_end_and_leave_the_database_idle(
    api: Api, alice: httpx.AsyncClient, dsn: str
) -> None:
    task = (await alice.post("/tasks", json={"kind": "nobody-runs-this"})).json()
    batch = {"tasks": [{"kind": "nobody-runs-this"}] * 250}
    made = [t["id"] for t in (await alice.post("/tasks/batch", json=batch)).json()]
    port = int(api.url.rsplit(":", 1)[1])
    idle = await commits_per_s(dsn)
    head = f"Host: x\r\nAuthorization: Bearer {api.tokens.alice}\r\n"
    polls: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for i in range(500):
        # half wait on one task, half on one each
        path = f"/tasks/{task['id'] if i % 2 else made[i // 2]}?wait=300"
        polls.append(await open_long_poll(port, f"GET {path} HTTP/1.1\r\n{head}\r\n"))

    async def all_parked() -> bool:
        return await gauge(api.url, "pgqueue_http_long_polls") >= 500

    await wait_for(all_parked, timeout=60, what="500 long-polls parked")
    waiting = await commits_per_s(dsn)
    for _, writer in polls:  # the clients give up
        writer.close()

    async def all_ended() -> bool:
        return await gauge(api.url, "pgqueue_http_long_polls") == 0

    await wait_for(all_ended, timeout=30, what="abandoned long-polls to end")
    after = await commits_per_s(dsn)
    # They used to re-read every 5 s each (100/s) and outlive their clients by 300 s.
    assert waiting < idle + 20, (idle, waiting)
    assert after < idle + 20, (idle, after)


async def test_waiting_posts_send_no_statement_while_nothing_changes(
    dsn: str, tokens: Tokens
) -> None:
    """Issue 15: ``POST /tasks?wait=`` waiters park on the one listener; 200 of them cost the
    database nothing over a few seconds (only the maintenance loops speak: a reaper pass, a
    scheduler probe). A re-read per waiter every 5 s would be 120 statements here."""
    body = json.dumps({"kind": "nobody-runs-this"})
    request = (
        f"POST /tasks?wait=30 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tokens.alice}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    )
    with counting_statements(dsn) as counter:
        async with serving(fast_settings(counter.dsn, reap_s=5.0)) as url:
            port = int(url.rsplit(":", 1)[1])
            polls = [await open_long_poll(port, request) for _ in range(200)]

            async def all_parked() -> bool:
                return await gauge(url, "pgqueue_http_long_polls") >= 200

            await wait_for(all_parked, timeout=60, what="200 waiting POSTs parked")
            await asyncio.sleep(0.5)  # each has read its task once
            before, texts_before = counter.snapshot()
            await asyncio.sleep(3.0)
            after, texts_after = counter.snapshot()
            for _, writer in polls:
                writer.close()

            async def all_ended() -> bool:
                return await gauge(url, "pgqueue_http_long_polls") == 0

            await wait_for(all_ended, timeout=30, what="the abandoned waits to end")
    assert after - before <= 10, texts_after - texts_before


async def test_a_claim_whose_client_left_leases_nothing(
    api: Api, worker: httpx.AsyncClient, alice: httpx.AsyncClient
) -> None:
    port = int(api.url.rsplit(":", 1)[1])
    body = json.dumps({"worker_id": "ghost", "queues": ["ghosts"], "wait_s": 30})
    _, writer = await open_long_poll(
        port,
        f"POST /tasks/claim HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api.tokens.worker}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}",
    )

    async def parked() -> bool:
        return await gauge(api.url, "pgqueue_http_long_polls") == 1

    await wait_for(parked, timeout=30, what="the claim to park")
    writer.close()

    async def gone() -> bool:
        return await gauge(api.url, "pgqueue_http_long_polls") == 0

    await wait_for(gone, timeout=30, what="the claim to end")
    task = (await alice.post("/tasks", json={"kind": "k", "queue": "ghosts"})).json()
    await asyncio.sleep(2 * api.settings.poll_s)  # a ghost claim would have taken it by now
    assert (await alice.get(f"/tasks/{task['id']}")).json()["status"] == "pending"


async def test_sigterm_answers_long_polls_closes_websockets_and_exits_fast(
    api_settings: Settings, tokens: Tokens, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    proc = serve_process(api_settings, port)
    processes.append(proc)
    url = f"http://127.0.0.1:{port}"
    await wait_healthy(url, proc)
    headers = {"Authorization": f"Bearer {tokens.alice}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
        task = (await http.post("/tasks", json={"kind": "nobody-runs-this"})).json()
        poll = asyncio.create_task(http.get(f"/tasks/{task['id']}", params={"wait": 40}))
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws?token={tokens.alice}")
        await ws.send(json.dumps({"op": "subscribe", "all": True}))
        await asyncio.wait_for(ws.recv(), 10)
        await wait_for(
            lambda: gauge(url, "pgqueue_http_long_polls"), timeout=30, what="the poll to park"
        )
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        answer = await asyncio.wait_for(poll, 10)
        assert answer.status_code == 200 and answer.json()["status"] == "pending"
        assert time.monotonic() - sent < 5
        assert await close_code(ws) == 1001  # going away, not uvicorn's 1012
        await asyncio.to_thread(proc.wait, 10)
        assert time.monotonic() - sent < 10
        # uvicorn re-raises the signal once it has shut down: "killed by SIGTERM", as asked
        assert proc.returncode in (0, -signal.SIGTERM), proc.stderr.read() if proc.stderr else None
