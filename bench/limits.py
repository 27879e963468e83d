"""SPEC §12's performance promises (issue 14), measured: `python bench/limits.py`.

    python bench/limits.py --rounds 3 --baseline f759bf5
    python bench/limits.py --rounds 1 --quick          # a smoke run of the harness

Each figure comes from a fresh database and a process of its own; rounds interleave every
measurement so a slow minute on a shared machine spreads over all of them. Printed: one
markdown table of medians with min-max, and each round's raw figures on stderr.

- drain: 20,000 pre-queued no-ops, no limit set, one worker at concurrency 500 (the `drain`
  of bench/run.py), for this tree and for `--baseline` (a commit exported with `git archive`
  and imported through PYTHONPATH, so "before" runs in the same session on the same server).
- fair: 100 users x 1,000 pending no-ops (enqueued user after user: the worst order for a
  plain claim) drained with `fair: true`, against the same drain without it.
- rate: `rate_limit {tasks: 100, per_s: 1}`, 5,000 no-ops, two workers at concurrency 500;
  starts counted from the audit trail over the 30 s after the first.
- latency: one user's 100,000 no-ops in a fair queue, a worker at concurrency 10 draining
  them; then, five times, another user's single task: how many claims (distinct claim
  transactions in the audit trail) started from its enqueue up to and including the one that
  took it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# -- one measurement, in its own process ---------------------------------------------------


async def _one(metric: str, dsn: str, quick: bool) -> dict[str, float]:
    import pgqueue
    from pgqueue.db.migrate import migrate
    from pgqueue.db.pool import connect
    from pgqueue.settings import Settings
    from pgqueue.worker.loop import Worker

    app = pgqueue.App()

    @app.task("noop")
    async def noop(ctx: pgqueue.Context, payload: Any) -> None:
        return None

    conn = await connect(dsn)
    await migrate(conn)
    settings = Settings.from_env({}, dsn=dsn)
    scale = 5 if quick else 1

    async def drain(worker: Worker, n: int) -> float:
        t0 = time.perf_counter()
        task = asyncio.create_task(worker.run())
        while worker.outbox.recorded < n:
            await asyncio.sleep(0.005)
        rate = n / (time.perf_counter() - t0)
        worker.stop()
        await task
        return rate

    async with conn, pgqueue.Queue(settings=settings) as q:
        if metric == "drain":
            n = 20_000 // scale
            await q.enqueue_many([{"kind": "noop", "payload": {"i": i}} for i in range(n)])
            await conn.execute("VACUUM ANALYZE pgqueue.tasks")
            return {"tasks_per_s": await drain(Worker(app, settings, concurrency=500), n)}

        if metric in ("fair", "unfair"):
            users, each = 100, 1000 // scale
            if metric == "fair":
                await conn.execute("SELECT pgqueue.set_fair('default', true)")
            for u in range(users):
                await q.enqueue_many([{"kind": "noop", "user_id": f"user{u:03}"}] * each)
            await conn.execute("VACUUM ANALYZE pgqueue.tasks")
            n = users * each
            return {"tasks_per_s": await drain(Worker(app, settings, concurrency=500), n)}

        if metric == "rate":
            window = 30.0 / scale
            await conn.execute("SELECT pgqueue.set_rate_limit('default', 100, 1)")
            await q.enqueue_many([{"kind": "noop"}] * 5000)
            workers = [Worker(app, settings, concurrency=500) for _ in range(2)]
            tasks = [asyncio.create_task(w.run()) for w in workers]
            first = None
            while first is None:
                cur = await conn.execute(
                    "SELECT min(at) FROM pgqueue.events WHERE event = 'started'"
                )
                first = (await cur.fetchone() or [None])[0]
                await asyncio.sleep(0.05)
            await asyncio.sleep(window + 1.5)
            for w in workers:
                w.stop()
            await asyncio.gather(*tasks)
            cur = await conn.execute(
                "SELECT count(*) FROM pgqueue.events WHERE event = 'started'"
                " AND at >= %s AND at < %s + make_interval(secs => %s)",
                (first, first, window),
            )
            started = (await cur.fetchone() or [0])[0]
            return {"starts_per_s": started / window}

        if metric == "latency":
            await conn.execute("SELECT pgqueue.set_fair('default', true)")
            await q.enqueue_many([{"kind": "noop", "user_id": "big"}] * (100_000 // scale))
            await conn.execute("VACUUM ANALYZE pgqueue.tasks")
            worker = Worker(app, settings, concurrency=10)
            task = asyncio.create_task(worker.run())
            while worker.outbox.recorded < 1000:
                await asyncio.sleep(0.01)
            worst = 0
            for _ in range(5):
                small = await q.enqueue("noop", {}, user_id="small")
                done = await q.wait(small.id, timeout_s=30)
                cur = await conn.execute(
                    "SELECT count(DISTINCT (worker_id, at)) FROM pgqueue.events"
                    " WHERE event = 'started' AND at >= %s AND at <= %s",
                    (small.created_at, done.started_at),
                )
                worst = max(worst, int((await cur.fetchone() or [0])[0]))
                await asyncio.sleep(0.3)
            worker.stop()
            await task
            return {"claim_cycles": float(worst)}
    raise SystemExit(f"unknown metric {metric}")


# -- the driver ----------------------------------------------------------------------------


def _run_one(server: str, metric: str, src: Path, quick: bool) -> dict[str, float] | None:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = f"bench_limits_{metric}_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        env = {**os.environ, "PYTHONPATH": str(src)}
        args = [
            sys.executable,
            str(HERE / "limits.py"),
            "one",
            metric,
            make_conninfo(server, dbname=name),
        ]
        out = subprocess.run(
            [*args, *(["--quick"] if quick else [])],
            env=env,
            cwd=src,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if out.returncode != 0:
            print(f"{metric} ({src}) failed:\n{out.stderr[-2000:]}", file=sys.stderr)
            return None
        result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
        return result
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _cell(values: list[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:,.1f}"
    return f"{statistics.median(values):,.1f} ({min(values):,.1f}–{max(values):,.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--baseline", default=None, help="commit to compare the no-limit drain with"
    )
    parser.add_argument("--quick", action="store_true", help="sizes ÷ 5: checks the harness only")
    parser.add_argument("--only", default="drain,fair,rate,latency")
    args = parser.parse_args()
    chosen = args.only.split(",")

    with tempfile.TemporaryDirectory(prefix="pgqueue-baseline-") as tmp:
        base = None
        if args.baseline and "drain" in chosen:
            base = Path(tmp)
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.baseline], capture_output=True, check=True
            )
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
        results: dict[str, list[float]] = {}

        def add(key: str, value: float | None) -> None:
            results.setdefault(key, [])
            if value is not None:
                results[key].append(value)

        for round_no in range(1, args.rounds + 1):
            plan: list[tuple[str, str, Path]] = []
            if "drain" in chosen:
                pair = [("drain", "drain_head", ROOT)]
                if base is not None:
                    pair.append(("drain", "drain_base", base))
                plan += pair if round_no % 2 else pair[::-1]
            if "fair" in chosen:
                pair = [("unfair", "unfair", ROOT), ("fair", "fair", ROOT)]
                plan += pair if round_no % 2 else pair[::-1]
            if "rate" in chosen:
                plan.append(("rate", "rate", ROOT))
            if "latency" in chosen:
                plan.append(("latency", "latency", ROOT))
            for metric, key, src in plan:
                got = _run_one(args.dsn, metric, src, args.quick)
                value = None if got is None else next(iter(got.values()))
                print(f"round {round_no}: {key} = {value}", file=sys.stderr)
                add(key, value)

    rows = [("metric", "median (min–max)", "target", "met?")]
    if results.get("drain_head"):
        head = statistics.median(results["drain_head"])
        rows.append(
            (
                "drain 20,000 no-ops, no limit, tasks/s (this tree)",
                _cell(results["drain_head"]),
                "",
                "",
            )
        )
        if results.get("drain_base"):
            before = statistics.median(results["drain_base"])
            rows.append(
                (f"drain, before ({args.baseline}), tasks/s", _cell(results["drain_base"]), "", "")
            )
            rows.append(
                (
                    "drain, this tree / before",
                    f"{head / before:.3f}",
                    "≥ 0.95",
                    "yes" if head / before >= 0.95 else "no",
                )
            )
    if results.get("fair") and results.get("unfair"):
        fair, unfair = statistics.median(results["fair"]), statistics.median(results["unfair"])
        rows.append(("drain 100 users × 1,000, unfair, tasks/s", _cell(results["unfair"]), "", ""))
        rows.append(
            ("drain 100 users × 1,000, fair: true, tasks/s", _cell(results["fair"]), "", "")
        )
        rows.append(
            (
                "fair / unfair",
                f"{fair / unfair:.3f}",
                "≥ 0.70",
                "yes" if fair / unfair >= 0.7 else "no",
            )
        )
    if results.get("rate"):
        ok = all(95 <= r <= 105 for r in results["rate"])
        rows.append(
            (
                "rate limit 100/s: starts/s over 30 s",
                _cell(results["rate"]),
                "95–105",
                "yes" if ok else "no",
            )
        )
    if results.get("latency"):
        worst = max(results["latency"])
        rows.append(
            (
                "one-task user behind 100,000 (fair): claim cycles, worst of 5 per round",
                _cell(results["latency"]),
                "≤ 2",
                "yes" if worst <= 2 else "no",
            )
        )
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows[1:]:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "one":
        quick = "--quick" in sys.argv
        print(json.dumps(asyncio.run(_one(sys.argv[2], sys.argv[3], quick))))
    else:
        main()
