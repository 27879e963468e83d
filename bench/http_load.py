"""HTTP load generator: `python http_load.py URL --body JSON [--connections 32] [--duration 10]`.

What wrk would do, on the standard library alone (wrk is not on a fresh machine, and httpx
spends more CPU per request than the server it should saturate): C keep-alive HTTP/1.1
connections on raw asyncio streams, each sending one pre-encoded POST, reading the status
line, the headers and exactly Content-Length bytes of body, then sending the next. Optionally
spread over several processes (`--processes`), so the generator itself is not the limit.

It runs in its own process(es), never inside the server it loads. Every response must carry
`--expect` (default 201); anything else, a malformed response or a dropped connection counts
as an error. The last stdout line is one JSON object:
`{"requests", "errors", "statuses", "seconds", "requests_per_s", "p50_ms", "p99_ms", "max_ms"}`
where requests counts only the expected responses and latency is send-to-last-byte per request.

Either `--duration S` (time-bound, after `--warmup S` not counted) or `--requests N` per
connection (count-bound, for big batch bodies). `--header 'Authorization: Bearer pgq_…'`
loads a server with auth on, as `pgqueue serve` runs by default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import time
from collections import Counter
from urllib.parse import urlsplit


def build_request(
    url: str, body: bytes, headers: list[str] | None = None
) -> tuple[str, int, bytes]:
    """Host, port and the request bytes, encoded once and sent as they are every time.

    ``headers``: extra ``Name: value`` lines, e.g. ``Authorization: Bearer …`` to load a
    server with auth on."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    extra = "".join(f"{h}\r\n" for h in headers or [])
    head = (
        f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra}"
        "\r\n"
    )
    return host, port, head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    """One response off a keep-alive connection; returns its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if length is not None:
        await reader.readexactly(length)
    elif chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)  # the chunk and its CRLF
            if size == 0:
                break
    else:
        raise ValueError("response without Content-Length or chunked body")
    return status


class Tally:
    """What one process saw: latencies of expected responses, other statuses, errors."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.errors = 0


async def connection(
    host: str,
    port: int,
    request: bytes,
    expect: int,
    tally: Tally,
    counting: asyncio.Event,
    stop: asyncio.Event,
    requests: int | None,
) -> None:
    """Send, read, repeat until stop (or `requests` sent); reconnect after any failure."""
    sent = 0
    while not stop.is_set() and (requests is None or sent < requests):
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            tally.errors += 1
            await asyncio.sleep(0.05)
            continue
        try:
            while not stop.is_set() and (requests is None or sent < requests):
                t0 = time.perf_counter()
                writer.write(request)
                status = await read_response(reader)
                elapsed = time.perf_counter() - t0
                sent += 1
                if not counting.is_set():
                    continue
                tally.statuses[status] += 1
                if status == expect:
                    tally.latencies.append(elapsed)
                else:
                    tally.errors += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            tally.errors += 1
            sent += 1
        finally:
            writer.close()


async def load(
    url: str,
    body: bytes,
    connections: int,
    duration: float | None,
    warmup: float,
    requests: int | None,
    expect: int,
    headers: list[str] | None = None,
) -> tuple[Tally, float]:
    """Run `connections` connections in this process; returns the tally and counted seconds."""
    host, port, request = build_request(url, body, headers)
    tally = Tally()
    counting, stop = asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(
            connection(host, port, request, expect, tally, counting, stop, requests)
        )
        for _ in range(connections)
    ]
    if duration is None:  # count-bound: every request counts
        counting.set()
        t0 = time.perf_counter()
        await asyncio.gather(*tasks)
        return tally, time.perf_counter() - t0
    await asyncio.sleep(warmup)
    counting.set()
    t0 = time.perf_counter()
    await asyncio.sleep(duration)
    elapsed = time.perf_counter() - t0
    counting.clear()  # responses after the window are not counted
    stop.set()
    await asyncio.gather(*tasks)
    return tally, elapsed


def run_process(
    args: argparse.Namespace, connections: int
) -> tuple[list[float], dict[int, int], int, float]:
    """One generator process (uvloop when installed: it halves the client's CPU per request)."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    tally, elapsed = runner(
        load(
            args.url,
            args.body.encode(),
            connections,
            args.duration,
            args.warmup,
            args.requests,
            args.expect,
            args.header,
        )
    )
    return tally.latencies, dict(tally.statuses), tally.errors, elapsed


def percentile(ordered: list[float], q: float) -> float:
    """The q-th value of an ascending list, as bench/systems/common.py takes p99."""
    return ordered[max(0, int(len(ordered) * q) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--body", required=True, help="JSON body; @FILE reads it from a file")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--duration", type=float, help="seconds counted (time-bound)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not counted first")
    parser.add_argument("--requests", type=int, help="requests per connection (count-bound)")
    parser.add_argument("--expect", type=int, default=201, help="the status every reply must have")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        help="an extra request header, 'Name: value' (repeatable), e.g. the bearer token",
    )
    args = parser.parse_args()
    if (args.duration is None) == (args.requests is None):
        parser.error("give exactly one of --duration and --requests")
    if args.body.startswith("@"):
        with open(args.body[1:]) as f:  # noqa: PTH123 - one read of a small file
            args.body = f.read()
    shares = [
        args.connections // args.processes + (i < args.connections % args.processes)
        for i in range(args.processes)
    ]
    if args.processes == 1:
        results = [run_process(args, shares[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
            results = pool.starmap(run_process, [(args, share) for share in shares])
    latencies = sorted(x * 1000 for r in results for x in r[0])
    statuses: Counter[int] = Counter()
    for r in results:
        statuses.update(r[1])
    errors = sum(r[2] for r in results)
    seconds = max(r[3] for r in results)
    summary = {
        "requests": len(latencies),
        "errors": errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds": round(seconds, 3),
        "requests_per_s": len(latencies) / seconds if seconds else 0.0,
        "p50_ms": percentile(latencies, 0.50) if latencies else None,
        "p99_ms": percentile(latencies, 0.99) if latencies else None,
        "max_ms": latencies[-1] if latencies else None,
    }
    print(json.dumps(summary), flush=True)
    sys.exit(0 if latencies else 1)


if __name__ == "__main__":
    main()
