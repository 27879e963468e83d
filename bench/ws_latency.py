"""WebSocket delivery latency: `python3 bench/ws_latency.py [--subscribers 1000] [--tasks 200]`.

Starts `pgqueue serve --insecure [--workers --server-workers]` in its own process, spreads N
WebSocket subscribers to `/ws` (`{"op": "subscribe", "all": true}`) over `--client-procs`
client processes (default 4, on uvloop), enqueues tasks one at a time through the database
(the commit time is taken when the INSERT returns), and measures, for every subscriber and
task, the time from commit to the `created` message. Clients stamp `time.time()` when a
frame's last byte is read and decode only the type, event and task id (msgspec, into a
three-field Struct); `--client-impl raw` (default) parses RFC 6455 frames by hand,
`websockets` uses that library's client (about twice the client CPU per message).

Reported besides: the server's RSS (summed over its process tree) with all subscribers
connected and after the run; the server's and the clients' CPU per delivered message; the
median fan-out time (first to last receipt of one task). `--receipts PATH` keeps every stamp.

The last stdout line is one JSON object (bench/run.py parses it):
`{"subscribers", "tasks", "delivered", "expected", "p50_ms", "p99_ms", "max_ms",
"server_rss_mb"}`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import fresh_database  # first: it re-executes this script in bench/.venv

ROOT = Path(__file__).resolve().parent.parent

import msgspec  # noqa: E402 - this one and the next two exist only in bench/.venv
import psycopg  # noqa: E402
import uvloop  # noqa: E402
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


class _RawSubscriber(asyncio.Protocol):
    """The cheapest receive path: RFC 6455 client framing by hand on a uvloop transport.

    The `websockets` client cost ~100 us of CPU per received message here (2x the server's), so
    the clients, not the server, set the latency on a shared 2-core machine. This one parses
    frame headers itself (~10x less CPU) and still checks what it relies on: the 101 handshake
    with the right Sec-WebSocket-Accept, unmasked, unfragmented text frames; it answers pings.
    Like browsers and the `websockets` client, it offers permessage-deflate (the server
    decides) and inflates compressed frames. A frame is stamped when its last byte is read.
    """

    def __init__(self, host: str, key: bytes, got: dict[str, list[float]]) -> None:
        self.host, self.key, self.got = host, key, got
        self.buffer = bytearray()
        loop = asyncio.get_running_loop()
        self.handshaken = loop.create_future()
        self.subscribed = loop.create_future()
        self.closed = loop.create_future()
        self.transport: Any = None  # uvloop's TCPTransport is no asyncio.Transport subclass
        self.decode = msgspec.json.Decoder(_Message).decode
        self.inflate: Any = None  # a zlib decompressor once the server accepted deflate

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(
            b"GET /ws HTTP/1.1\r\nHost: " + self.host.encode() + b"\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + self.key + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        )

    def send_frame(self, opcode: int, payload: bytes) -> None:
        """A client frame: FIN, masked (RFC 6455 requires it), payload < 126 bytes."""
        assert self.transport is not None
        assert len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buffer
        buf += data
        if not self.handshaken.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1").lower()
            accept = base64.b64encode(
                hashlib.sha1(self.key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
            )
            if " 101 " not in head.split("\r\n")[0] or accept.decode().lower() not in head:
                raise ConnectionError(f"bad handshake: {head!r}")
            if "permessage-deflate" in head:
                # client_no_context_takeover was not asked for: one inflater per connection
                self.inflate = zlib.decompressobj(wbits=-15)
            del buf[: end + 4]
            self.handshaken.set_result(None)
        while len(buf) >= 2:
            first, length = buf[0], buf[1]
            if first & 0x80 == 0 or length & 0x80:
                raise ConnectionError("fragmented or masked frame from the server")
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length, offset = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, offset = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < offset + length:
                return
            payload = bytes(buf[offset : offset + length])
            del buf[: offset + length]
            if first & 0x40:  # RSV1: a compressed message (RFC 7692)
                payload = self.inflate.decompress(payload + b"\x00\x00\xff\xff")
            self.frame(first & 0x0F, payload, now)

    def frame(self, opcode: int, payload: bytes, now: float) -> None:
        if opcode == 0x1:  # text
            message = self.decode(payload)
            if message.event == "created" and message.task is not None:
                self.got.setdefault(message.task.id, []).append(now)
            elif message.type == "subscribed" and not self.subscribed.done():
                self.subscribed.set_result(None)
        elif opcode == 0x9:  # ping: pong with the same payload, or uvicorn closes us
            self.send_frame(0xA, payload)
        elif opcode == 0x8 and self.transport is not None:  # close
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshaken.done():
            self.handshaken.set_exception(exc or ConnectionError("closed during handshake"))
        if not self.closed.done():
            self.closed.set_result(None)


async def _raw_subscriber(
    url: str, connected: list[int], got: dict[str, list[float]], closed: list[int]
) -> None:
    hostport = url.split("//", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    key = base64.b64encode(os.urandom(16))
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(
        lambda: _RawSubscriber(hostport, key, got), host, int(port)
    )
    await asyncio.wait_for(protocol.handshaken, 120)
    protocol.send_frame(0x1, b'{"op": "subscribe", "all": true}')
    await asyncio.wait_for(protocol.subscribed, 120)
    connected[0] += 1
    await protocol.closed
    closed[0] += 1


async def client_main(url: str, n: int, impl: str) -> None:
    """Connect n subscribers, say "ready", then on "expect T" wait for n*T receipts and dump."""
    connected, closed = [0], [0]
    got: dict[str, list[float]] = {}
    subs = []
    for _ in range(n):  # paced a little, so the server's accept backlog never overflows
        subscriber = _raw_subscriber if impl == "raw" else _subscriber
        subs.append(asyncio.create_task(subscriber(url, connected, got, closed)))
        await asyncio.sleep(0.001)
    while connected[0] + closed[0] < n:
        await asyncio.sleep(0.05)
    print(f"ready {connected[0]}", flush=True)
    cpu_start = time.process_time()
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    expected = n * int(line.split()[1])
    deadline = time.monotonic() + 60
    while sum(map(len, got.values())) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for task in subs:
        task.cancel()
    await asyncio.gather(*subs, return_exceptions=True)
    cpu_s = time.process_time() - cpu_start
    print(json.dumps({"got": got, "closed": closed[0], "cpu_s": cpu_s}), flush=True)


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


def tree_rss_each_mb(pid: int) -> list[float]:
    """RSS of each process of the tree, in MB (the supervisor first)."""
    each = []
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{p}/status").read_text().splitlines()
            each.append(next((int(s.split()[1]) for s in status if s.startswith("VmRSS")), 0))
    return [round(kb / 1024, 1) for kb in each]


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
        "--client-impl",
        choices=["raw", "websockets"],
        default="raw",
        help="raw: hand-parsed frames (default, cheapest); websockets: the websockets client",
    )
    parser.add_argument("--receipts", help="write every commit and receipt time here (JSON)")
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
                args.client_impl,
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
        rss_each = tree_rss_each_mb(server.pid)
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
    if args.receipts:
        receipts = {"committed": committed, "received": [result["got"] for result in results]}
        Path(args.receipts).write_text(json.dumps(receipts))
    # Per task, first to last receipt: how long one change takes to fan out to everyone.
    spreads = sorted(
        max(stamps) - min(stamps)
        for tid in committed
        if (stamps := [t for result in results for t in result["got"].get(tid, ())])
    )
    spread_ms = statistics.median(spreads) * 1000 if spreads else 0.0
    closed = sum(result["closed"] for result in results)
    client_cpu_s = sum(result["cpu_s"] for result in results)
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
        f"max {summary['max_ms']} ms; fan-out (first to last receipt of a task) median "
        f"{spread_ms:.1f} ms; server RSS {summary['server_rss_mb']} MB "
        f"(per process, connected: {rss_each}); server CPU "
        f"user {user_s:.2f} s + system {sys_s:.2f} s "
        f"({(user_s + sys_s) * 1e6 / max(1, len(lat)):.0f} us per message); clients' CPU "
        f"{client_cpu_s:.2f} s ({client_cpu_s * 1e6 / max(1, len(lat)):.0f} us per message)"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--client":
        _, hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard_limit, hard_limit))
        uvloop.run(client_main(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    else:
        asyncio.run(main())
