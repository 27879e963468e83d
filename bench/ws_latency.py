"""WebSocket delivery latency: `python3 bench/ws_latency.py [--subscribers 1000] [--tasks 200]`.

Starts `pgqueue serve --insecure` in its own process, connects N WebSocket subscribers to
`/ws` with `{"op": "subscribe", "all": true}`, enqueues tasks one at a time through the
database (the commit time is taken when the INSERT returns), and measures, for every
subscriber and task, the time from commit to the `created` message. Also reports the server
process's RSS with all subscribers connected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import fresh_database

ROOT = Path(__file__).resolve().parent.parent


async def subscriber(
    url: str, ready: asyncio.Event, got: dict[str, list[float]], count: list[int]
) -> None:
    async with websockets.connect(url, max_queue=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "all": True}))
        await ws.recv()  # "subscribed"
        count[0] += 1
        if count[0] == count[1]:
            ready.set()
        async for raw in ws:
            now = time.time()
            message = json.loads(raw)
            if message.get("type") == "task" and message.get("event") == "created":
                got.setdefault(message["task"]["id"], []).append(now)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between tasks")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    dsn = fresh_database(args.dsn, "bench_ws")
    subprocess.run(
        [sys.executable, "-m", "pgqueue", "migrate", "--dsn", dsn], check=True, capture_output=True
    )
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PGQUEUE_PORT": str(args.port)}
    server = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "--log-level", "WARNING", "serve", "--insecure"],
        env=env,
        cwd=ROOT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)),
    )
    try:
        await asyncio.sleep(3)
        url = f"ws://127.0.0.1:{args.port}/ws"
        ready = asyncio.Event()
        got: dict[str, list[float]] = {}
        count = [0, args.subscribers]
        subs = [
            asyncio.create_task(subscriber(url, ready, got, count)) for _ in range(args.subscribers)
        ]
        await asyncio.wait_for(ready.wait(), timeout=120)
        rss_mb = (
            int(
                next(
                    line.split()[1]
                    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines()
                    if line.startswith("VmRSS")
                )
            )
            / 1024
        )
        committed: dict[str, float] = {}
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            for i in range(args.tasks):
                cur = await conn.execute(
                    "INSERT INTO pgqueue.tasks (kind, payload)"
                    " VALUES ('ws.bench', %s) RETURNING id",
                    (json.dumps({"i": i}),),
                )
                row = await cur.fetchone()
                assert row is not None
                committed[str(row[0])] = time.time()
                await asyncio.sleep(args.pause)
        deadline = time.monotonic() + 60
        while sum(len(v) for v in got.values()) < args.tasks * args.subscribers:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        lat = sorted(
            (t - committed[tid]) * 1000 for tid, ts in got.items() for t in ts if tid in committed
        )
        delivered = len(lat)
        for s in subs:
            s.cancel()
        await asyncio.gather(*subs, return_exceptions=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(
        f"{args.subscribers} subscribers x {args.tasks} tasks ({args.pause}s apart): "
        f"delivered {delivered} "
        f"of {args.subscribers * args.tasks}; commit->subscriber p50 "
        f"{statistics.median(lat):.1f} ms, p99 {lat[int(len(lat) * 0.99) - 1]:.1f} ms, "
        f"max {lat[-1]:.1f} ms; server RSS with subscribers connected {rss_mb:.0f} MB"
    )


if __name__ == "__main__":
    asyncio.run(main())
