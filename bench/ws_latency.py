"""WebSocket delivery latency: `python3 bench/ws_latency.py [--subscribers 1000] [--tasks 200]`.

Starts `pgqueue serve --insecure` in its own process, spreads N WebSocket subscribers to `/ws`
(`{"op": "subscribe", "all": true}`) over `--client-procs` client processes (default 4), so
the measuring side is not one event loop decoding every frame of the run; enqueues tasks one
at a time through the database (the commit time is taken when the INSERT returns), and
measures, for every subscriber and task, the time from commit to the `created` message.
Clients stamp `time.time()` as soon as a frame is read, before decoding it, and decode only
the type, event and task id (msgspec, into a three-field Struct). Also reports the server's
RSS (summed over its process tree) with all subscribers connected and after the run.

The last stdout line is one JSON object (bench/run.py parses it):
`{"subscribers", "tasks", "delivered", "expected", "p50_ms", "p99_ms", "max_ms",
"server_rss_mb"}`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import fresh_database  # first: it re-executes this script in bench/.venv

ROOT = Path(__file__).resolve().parent.parent

import msgspec  # noqa: E402 - this one and the next two exist only in bench/.venv
import psycopg  # noqa: E402
import websockets  # noqa: E402

# -- one client process: `ws_latency.py --client URL N` --------------------------------------


class _Task(msgspec.Struct):
    id: str


class _Message(msgspec.Struct):
    """The three fields a receipt needs; msgspec skips the rest of the task unparsed."""

    type: str
    event: str | None = None
    task: _Task | None = None


async def _subscriber(
    url: str, connected: list[int], got: dict[str, list[float]], closed: list[int]
) -> None:
    decode = msgspec.json.Decoder(_Message).decode
    try:
        # Default client options: it offers permessage-deflate, the server decides.
        async with websockets.connect(url, max_queue=None, open_timeout=120) as ws:
            await ws.send('{"op": "subscribe", "all": true}')
            await ws.recv()  # "subscribed"
            connected[0] += 1
            while True:
                raw = await ws.recv(decode=False)
                now = time.time()
                message = decode(raw)
                if message.event == "created" and message.task is not None:
                    got.setdefault(message.task.id, []).append(now)
    except websockets.ConnectionClosed:
        closed[0] += 1


async def client_main(url: str, n: int) -> None:
    """Connect n subscribers, say "ready", then on "expect T" wait for n*T receipts and dump."""
    connected, closed = [0], [0]
    got: dict[str, list[float]] = {}
    subs = []
    for _ in range(n):  # paced a little, so the server's accept backlog never overflows
        subs.append(asyncio.create_task(_subscriber(url, connected, got, closed)))
        await asyncio.sleep(0.001)
    while connected[0] + closed[0] < n:
        await asyncio.sleep(0.05)
    print(f"ready {connected[0]}", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    expected = n * int(line.split()[1])
    deadline = time.monotonic() + 60
    while sum(map(len, got.values())) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for task in subs:
        task.cancel()
    await asyncio.gather(*subs, return_exceptions=True)
    print(json.dumps({"got": got, "closed": closed[0]}), flush=True)


# -- the coordinator --------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (uvicorn --workers starts children)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    return tree


def tree_rss_mb(pid: int) -> float:
    """RSS of the process tree, in MB (shared pages counted once per process)."""
    total_kb = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{p}/status").read_text().splitlines()
            total_kb += next((int(s.split()[1]) for s in status if s.startswith("VmRSS")), 0)
    return total_kb / 1024


def tree_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds (user, system) used so far by the process tree."""
    user = system = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            user, system = user + int(fields[11]), system + int(fields[12])
    return user / os.sysconf("SC_CLK_TCK"), system / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between tasks")
    parser.add_argument(
        "--client-procs", type=int, default=4, help="client processes sharing the subscribers"
    )
    parser.add_argument(
        "--server-workers", type=int, default=1, help="`pgqueue serve --workers` (default 1)"
    )
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    dsn = fresh_database(args.dsn, f"bench_ws_{args.port}")  # one per port: runs may overlap
    subprocess.run(
        [sys.executable, "-m", "pgqueue", "migrate", "--dsn", dsn], check=True, capture_output=True
    )
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PGQUEUE_PORT": str(args.port)}
    serve = ["serve", "--insecure", "--workers", str(args.server_workers)]
    server = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "--log-level", "WARNING", *serve],
        env=env,
        cwd=ROOT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)),
    )
    clients: list[asyncio.subprocess.Process] = []
    try:
        await asyncio.sleep(3 + args.server_workers)
        if server.poll() is not None:  # e.g. the port was taken: never measure someone else's
            raise SystemExit(f"pgqueue serve exited with {server.returncode}; see above")
        url = f"ws://127.0.0.1:{args.port}/ws"
        procs = max(1, min(args.client_procs, args.subscribers))
        shares = [args.subscribers // procs + (i < args.subscribers % procs) for i in range(procs)]
        clients = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--client",
                url,
                str(share),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 30,  # the final line holds every receipt of that client
            )
            for share in shares
        ]
        for client in clients:
            assert client.stdout is not None
            ready = await asyncio.wait_for(client.stdout.readline(), timeout=180)
            assert ready.startswith(b"ready"), ready
        rss_connected = tree_rss_mb(server.pid)
        cpu_before = tree_cpu_s(server.pid)
        committed: dict[str, float] = {}
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            for i in range(args.tasks):
                cur = await conn.execute(
                    "INSERT INTO pgqueue.tasks (kind, payload)"
                    " VALUES ('ws.bench', %s) RETURNING id",
                    (json.dumps({"i": i}),),
                )
                row = await cur.fetchone()
                committed[str(row[0])] = time.time()
                await asyncio.sleep(args.pause)
        results = []
        for client in clients:
            assert client.stdin is not None
            client.stdin.write(f"expect {args.tasks}\n".encode())
            await client.stdin.drain()
        for client in clients:
            assert client.stdout is not None
            results.append(json.loads(await asyncio.wait_for(client.stdout.readline(), 120)))
            await client.wait()
        cpu_after = tree_cpu_s(server.pid)
        user_s, sys_s = (
            after - before for after, before in zip(cpu_after, cpu_before, strict=True)
        )
        rss_mb = max(rss_connected, tree_rss_mb(server.pid))
    finally:
        for client in clients:
            if client.returncode is None:
                client.kill()
        server.terminate()
        server.wait(timeout=30)
    lat = sorted(
        (t - committed[tid]) * 1000
        for result in results
        for tid, stamps in result["got"].items()
        if tid in committed
        for t in stamps
    )
    closed = sum(result["closed"] for result in results)
    expected = args.subscribers * args.tasks
    summary = {
        "subscribers": args.subscribers,
        "tasks": args.tasks,
        "delivered": len(lat),
        "expected": expected,
        "p50_ms": round(statistics.median(lat), 2) if lat else None,
        "p99_ms": round(percentile(lat, 0.99), 2) if lat else None,
        "max_ms": round(lat[-1], 2) if lat else None,
        "server_rss_mb": round(rss_mb, 1),
    }
    print(
        f"{args.subscribers} subscribers in {len(clients)} client processes x {args.tasks} tasks "
        f"({args.pause}s apart), {args.server_workers} server process(es): delivered "
        f"{summary['delivered']} of {expected}, {closed} connections closed by the server; "
        f"commit->subscriber p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms, "
        f"max {summary['max_ms']} ms; server RSS {summary['server_rss_mb']} MB; server CPU "
        f"user {user_s:.2f} s + system {sys_s:.2f} s "
        f"({(user_s + sys_s) * 1e6 / max(1, len(lat)):.0f} us per message)"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--client":
        _, hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard_limit, hard_limit))
        asyncio.run(client_main(sys.argv[2], int(sys.argv[3])))
    else:
        asyncio.run(main())
