"""Gap-free resume (SPEC §5): ``event_id`` on every change, ``since`` on subscribe, against two
``pgqueue serve`` processes, with writers whose transactions overlap and commit out of start
order. Every client's received set is compared with the audit trail."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import websockets

from pgqueue.settings import Settings
from pgqueue.stream import Position
from tests.api.conftest import Api, Tokens, free_port, serve_process, wait_healthy
from tests.helpers import wait_for

QUEUE = "resume"


def row_id(event_id: str) -> int:
    """The audit row a change message stands for (the position's id; tests know the format)."""
    return Position.decode(event_id).after_id


async def writer(dsn: str, n: int, seed: int, *, laggard: bool = False) -> None:
    """Transactions that insert and update tasks of QUEUE, pausing mid-transaction, so they
    overlap and commit in another order than they started (a laggard holds each one open
    long enough for many later ones to commit first)."""
    rng = random.Random(seed)
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        mine: list[str] = []
        for i in range(n):
            async with conn.transaction():
                cur = await conn.execute(
                    "INSERT INTO pgqueue.tasks (kind, queue) VALUES (%s, %s) RETURNING id::text",
                    (f"w{seed}.{i}", QUEUE),
                )
                row = await cur.fetchone()
                assert row is not None
                mine.append(row[0])
                await asyncio.sleep(rng.uniform(0.3, 0.6) if laggard else rng.uniform(0, 0.03))
                if len(mine) > 1:
                    await conn.execute(
                        "UPDATE pgqueue.tasks SET progress = %s WHERE id = %s",
                        (json.dumps({"percent": i % 100}), rng.choice(mine[:-1])),
                    )
                if rng.random() < 0.2:
                    await conn.execute(
                        "UPDATE pgqueue.tasks SET status = 'cancelled', completed_at = now()"
                        " WHERE id = %s",
                        (mine[-1],),
                    )


class Client:
    """A subscriber that drops its connection every few changes and resumes, from its last
    event_id, on the other server."""

    def __init__(self, urls: list[str], token: str, seed: int, since: str) -> None:
        self.urls, self.token, self.rng = urls, token, random.Random(seed)
        self.since = since
        self.received: list[int] = []
        self.reconnects = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        turn = self.rng.randrange(len(self.urls))
        while not self.stop.is_set():
            url = "ws" + self.urls[turn % len(self.urls)].removeprefix("http") + "/ws"
            turn += 1
            budget = self.rng.randint(3, 60)  # changes to take before dropping the connection
            # max_queue=None: a client that stops reading mid-replay still reads the server's
            # close (with a bounded queue, websockets stops reading and waits 10 s for it)
            async with websockets.connect(
                url,
                additional_headers={"Authorization": f"Bearer {self.token}"},
                max_size=None,
                max_queue=None,
            ) as ws:
                op = {"op": "subscribe", "queues": [QUEUE], "since": self.since}
                await ws.send(json.dumps(op))
                while budget > 0 and not self.stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 0.5)
                    except TimeoutError:
                        continue
                    message = json.loads(raw)
                    assert message["type"] != "error", message
                    if message["type"] == "task":
                        self.received.append(row_id(message["event_id"]))
                        self.since = message["event_id"]
                        budget -= 1
            self.reconnects += 1


@pytest.fixture
def servers(api_settings: Settings, tokens: Tokens, processes: list[Any]) -> Iterator[list[str]]:
    """Two ``pgqueue serve`` processes; their logs are printed after the test."""
    urls: list[str] = []
    started: list[subprocess.Popen[bytes]] = []
    for _ in range(2):
        port = free_port()
        started.append(serve_process(api_settings, port))
        urls.append(f"http://127.0.0.1:{port}")
    processes.extend(started)
    yield urls
    for proc in started:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        print(err.decode(errors="replace")[-5000:])


async def test_resume_across_servers_misses_nothing_and_repeats_nothing(
    api: Api, servers: list[str], dsn: str
) -> None:
    for url in servers:
        await wait_healthy(url)
    token = api.tokens.admin
    # A first change gives the clients their starting point.
    ws_url = "ws" + servers[0].removeprefix("http") + "/ws"
    async with websockets.connect(
        ws_url, additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        await ws.send(json.dumps({"op": "subscribe", "queues": [QUEUE]}))
        async with httpx.AsyncClient(base_url=servers[0], timeout=30) as http:
            r = await http.post(
                "/tasks",
                json={"kind": "seed", "queue": QUEUE},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 201
        while (message := json.loads(await asyncio.wait_for(ws.recv(), 15)))["type"] != "task":
            pass
        seed_event = message["event_id"]

    clients = [Client(servers, token, seed, seed_event) for seed in range(6)]
    running = [asyncio.create_task(c.run()) for c in clients]
    started = time.monotonic()
    writers = [writer(dsn, 25, seed) for seed in range(16)]
    writers += [writer(dsn, 4, 100 + seed, laggard=True) for seed in range(3)]
    await asyncio.gather(*writers)
    written = time.monotonic() - started

    with psycopg.connect(dsn) as conn:
        expected = {
            r[0]
            for r in conn.execute(
                "SELECT e.id FROM pgqueue.events e JOIN pgqueue.tasks t ON t.id = e.task_id"
                " WHERE t.queue = %s AND t.kind <> 'seed'",
                (QUEUE,),
            )
        }

    async def caught_up() -> bool:
        return all(expected <= set(c.received) for c in clients)

    with contextlib.suppress(AssertionError):  # compared below, with the figures
        await wait_for(caught_up, timeout=90, interval=0.2, what="every client to catch up")
    for c in clients:
        c.stop.set()
    await asyncio.gather(*running)
    elapsed = time.monotonic() - started
    print(f"writers done after {written:.1f} s, clients caught up after {elapsed:.1f} s")

    for c in clients:
        got = set(c.received)
        gaps = expected - got
        duplicates = len(c.received) - len(got)
        print(
            f"client: {len(c.received)} changes, {c.reconnects} reconnects, "
            f"{len(gaps)} gaps, {duplicates} duplicates"
        )
        assert not gaps, f"missed {len(gaps)} of {len(expected)} changes"
        assert duplicates == 0
        assert got == expected  # and nothing that is not in the trail
        assert c.reconnects >= 10
    print(
        f"{len(writers)} writers, {len(expected)} events, "
        f"{sum(c.reconnects for c in clients)} reconnects, {elapsed:.1f} s"
    )
