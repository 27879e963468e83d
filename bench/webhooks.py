"""Webhook delivery (SPEC §13): `.venv/bin/python bench/webhooks.py DSN [--quick]`.

A receiver on 127.0.0.1 (a thread of this process) checks every signature and notes when
each delivery arrived; one in-process worker runs the tasks and the built-in deliveries.
- latency: tasks with a callback_url enqueued one at a time (paced, so this is delivery
  latency, not a backlog); the task's completed_at (DB clock, same host) -> the receiver
  had the body, p50/p99; every delivery answered 200.
- failures: the receiver answers 500 to the first delivery of some events and, for others,
  reads the body, counts it as received, and drops the connection without an answer (the
  answer lost on the way back: the case at-least-once delivery repeats). Reported: events,
  deliveries seen, events never delivered (must be 0), duplicates (events a receiver saw
  more than once), and the time until every event had been delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workflows import drop, fresh, pct

from pgqueue.queue import Queue
from pgqueue.settings import Settings
from pgqueue.webhooks import verify
from pgqueue.worker.handlers import App
from pgqueue.worker.loop import Worker

SECRET = "bench-secret"


class Receiver:
    """What the HTTP receiver saw; ``fail_500`` and ``drop`` name the events whose first
    delivery is answered 500 or not answered at all."""

    def __init__(self, fail_500: float = 0.0, drop: float = 0.0) -> None:
        self.fail_500, self.drop = fail_500, drop
        self.lock = threading.Lock()
        self.seen: Counter[str] = Counter()  # bodies processed per event id
        self.first_at: dict[str, float] = {}  # first processed arrival per task id
        self.fate: dict[str, str] = {}
        self.rng = random.Random(13)
        self.bad_signatures = 0
        self.answered_500 = 0
        self.dropped = 0

    def handle(self, event_id: str, body: bytes, header: str) -> str:
        """'ok', '500' or 'drop' for this delivery."""
        with self.lock:
            if not verify(SECRET, header, body):
                self.bad_signatures += 1
            if event_id not in self.fate:
                roll = self.rng.random()
                self.fate[event_id] = (
                    "500" if roll < self.fail_500 else "drop" if roll < self.fail_500 + self.drop
                    else "ok"
                )  # fmt: skip
                if self.fate[event_id] == "500":
                    self.answered_500 += 1
                    return "500"
            elif self.fate[event_id] == "500" and self.seen[event_id] == 0:
                self.fate[event_id] = "ok"
            task_id = msgspec.json.decode(body)["task"]["id"]
            self.first_at.setdefault(task_id, time.time())
            self.seen[event_id] += 1
            if self.fate[event_id] == "drop" and self.seen[event_id] == 1:
                self.dropped += 1
                return "drop"
            return "ok"


def serve(state: Receiver) -> tuple[ThreadingHTTPServer, str]:
    class Handle(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            what = state.handle(
                self.headers["Pgqueue-Event-Id"], body, self.headers["Pgqueue-Signature"]
            )
            if what == "drop":
                self.close_connection = True
                return
            self.send_response(500 if what == "500" else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/hook"


app = App()


@app.task("job")
async def job(ctx: Any, payload: Any) -> int:
    return 1


async def run(settings: Settings, q: Queue, state: Receiver, url: str, n: int, paced: bool) -> Any:
    worker = Worker(app, settings, concurrency=50)
    runner = asyncio.create_task(worker.run())
    await worker.started.wait()
    t0 = time.perf_counter()
    try:
        if paced:
            ids = []
            for _ in range(n):
                ids.append((await q.enqueue("job", {}, callback_url=url)).id)
                await asyncio.sleep(0.01)
        else:
            ids = [t.id for t in await q.enqueue_many(
                [{"kind": "job", "callback_url": url} for _ in range(n)])]  # fmt: skip
        while len(state.first_at) < n and time.perf_counter() - t0 < 600:
            await asyncio.sleep(0.02)
        took = time.perf_counter() - t0
    finally:
        worker.stop()
        await runner
    async with q.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id::text, extract(epoch FROM completed_at) FROM pgqueue.tasks"
            " WHERE id = ANY(%s)",
            (ids,),
        )
        done = {row[0]: float(row[1]) for row in await cur.fetchall()}
    return done, took


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    args = parser.parse_args()
    n = 50 if args.quick else 500
    for what in ("latency", "failures"):
        name, dsn = await fresh(args.dsn)
        settings = Settings.from_env(
            {}, dsn=dsn, webhook_secret=SECRET, webhook_allow_hosts="127.0.0.1", reap_s=1.0
        )
        state = Receiver() if what == "latency" else Receiver(fail_500=0.2, drop=0.1)
        server, url = serve(state)
        try:
            async with Queue(settings=settings) as q:
                done, took = await run(settings, q, state, url, n, paced=what == "latency")
        finally:
            server.shutdown()
            drop(args.dsn, name)
        missed = n - len(state.first_at)
        if what == "latency":
            lat = [state.first_at[t] - done[t] for t in state.first_at]
            print(
                f"webhook latency (completed_at -> received), n={len(lat)}: p50"
                f" {pct(lat, 0.5) * 1000:.1f} ms, p99 {pct(lat, 0.99) * 1000:.1f} ms, mean"
                f" {statistics.mean(lat) * 1000:.1f} ms; missed {missed}, bad signatures"
                f" {state.bad_signatures}"
            )
        else:
            duplicates = sum(1 for c in state.seen.values() if c > 1)
            print(
                f"webhooks under failures, {n} events: {state.answered_500} first deliveries"
                f" answered 500, {state.dropped} received but unanswered; deliveries processed"
                f" {sum(state.seen.values())}, events missed {missed}, duplicates {duplicates}"
                f" (events seen twice), all delivered after {took:.1f} s, bad signatures"
                f" {state.bad_signatures}"
            )


if __name__ == "__main__":
    asyncio.run(main())
