"""What one `pgqueue serve` process costs its database while nothing changes: statements/s.

`python3 bench/long_polls.py [--waiters 1000] [--wait 30] [--seconds 20] [--dsn SERVER]`

One `pgqueue serve --insecure` process on a new database, connected through the counting
proxy (bench/statement_counter.py: every Query and Execute on the wire, BEGIN/COMMIT
included). With `--waiters 0` it has no client at all (the idle API process). Otherwise
`--waiters` keep-alive connections each send one `POST /tasks?wait=S` (raw asyncio streams,
like http_load.py: a client that costs little CPU), and once every task exists and the
server is holding every request, the statements of a window of `--seconds` (ending before
the first wait runs out) are counted. No worker runs, so nothing changes: what the server
sends then is its maintenance loops plus whatever the waiting costs. The most frequent
statements go to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # moves into bench/.venv when started with plain python3

# isort: split
import psycopg
from extras import free_port, log, migrate, scalar
from statement_counter import StatementCounter

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


async def start_server(dsn: str, port: int) -> asyncio.subprocess.Process:
    env = {"PGQUEUE_DSN": dsn, "PGQUEUE_PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgqueue",
        "--log-level",
        "WARNING",
        "serve",
        "--insecure",
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status = await reader.readline()
            writer.close()
            if b" 200 " in status:
                return proc
        except OSError:
            pass
        if proc.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError("pgqueue serve did not become ready")
        await asyncio.sleep(0.1)


async def one_waiter(port: int, wait: float, i: int) -> int:
    """POST one task with ?wait=; returns the HTTP status once the server answers."""
    body = json.dumps({"kind": "bench.noop", "payload": {"i": i}}).encode()
    head = (
        f"POST /tasks?wait={wait:g} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        status = await reader.readline()
        return int(status.split()[1])
    finally:
        writer.close()


async def measure(server: str, waiters: int, wait: float, seconds: float) -> dict[str, float]:
    dsn = compare.fresh_database(server, "bench_long_polls")
    migrate(dsn)
    count = "SELECT count(*) FROM pgqueue.tasks"
    with StatementCounter(dsn) as counter:
        port = free_port()
        proc = await start_server(counter.dsn, port)
        try:
            await asyncio.sleep(5)  # start-up, the first scheduler and retention passes
            clients: list[asyncio.Task[int]] = []
            t0 = time.monotonic()
            if waiters:
                clients = [asyncio.create_task(one_waiter(port, wait, i)) for i in range(waiters)]
                with psycopg.connect(dsn, autocommit=True) as conn:  # not through the proxy
                    while scalar(conn, count) < waiters:
                        if time.monotonic() - t0 > wait - 5:
                            raise RuntimeError("the waiters' tasks were not all created in time")
                        await asyncio.sleep(0.05)
                await asyncio.sleep(1)  # each request reads its task once, then waits
                window = min(seconds, wait - (time.monotonic() - t0) - 2)
            else:
                window = seconds
            first, before = counter.snapshot()
            await asyncio.sleep(window)
            last, after = counter.snapshot()
            answered = sum(c.done() for c in clients)
            statuses = await asyncio.gather(*clients, return_exceptions=True)
        finally:
            proc.terminate()
            await proc.wait()
    for text, n in (after - before).most_common(8):
        log(f"    in the window the server sent {n:4d} x {text}")
    ok = sum(s == 201 for s in statuses)
    return {
        "waiters": waiters,
        "window_s": round(window, 1),
        "statements_per_s": (last - first) / window,
        "answered_early": answered,
        "answered_201": ok,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--wait", type=float, default=30)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    result = asyncio.run(measure(args.dsn, args.waiters, args.wait, args.seconds))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
