"""Long-poll waiters: `python waiters.py URL --waiters 1000 --body JSON [--header …]`.

Opens N keep-alive HTTP/1.1 connections and sends one POST on each (the URL carries
`?wait=S`), prints `sent N` once every request is written, then reads every response (they
come when the wait ends) and prints one JSON line: `{"answered", "errors", "statuses",
"min_s", "max_s"}` — min_s/max_s: send to response, so a wait that ended early shows. Used
by bench/run.py's `longpoll` (bench/extras.py), in its own process, like http_load.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_load import build_request, read_response


async def waiter(
    host: str, port: int, request: bytes, sent: list[int], took: list[float], statuses: Counter[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        t0 = time.perf_counter()
        writer.write(request)
        await writer.drain()
        sent[0] += 1
        statuses[await read_response(reader)] += 1
        took.append(time.perf_counter() - t0)
    finally:
        writer.close()


async def main(args: argparse.Namespace) -> None:
    host, port, request = build_request(args.url, args.body.encode(), args.header)
    sent = [0]
    took: list[float] = []
    statuses: Counter[int] = Counter()
    tasks = [
        asyncio.create_task(waiter(host, port, request, sent, took, statuses))
        for _ in range(args.waiters)
    ]
    while sent[0] < args.waiters and not all(t.done() for t in tasks):
        await asyncio.sleep(0.01)
    print(f"sent {sent[0]}", flush=True)
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    for e in errors[:3]:
        print(f"waiter failed: {type(e).__name__}: {e}", file=sys.stderr)
    summary = {
        "answered": len(took),
        "errors": len(errors),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "min_s": round(min(took), 3) if took else None,
        "max_s": round(max(took), 3) if took else None,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--body", required=True)
    parser.add_argument("--header", action="append", default=[])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(main(parser.parse_args()))
