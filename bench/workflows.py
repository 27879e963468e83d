"""Workflow costs (SPEC §10, §11): `.venv/bin/python bench/workflows.py DSN [--quick]`.

Each measurement runs in a new migrated database on the server DSN names, and prints one line:
- unblock: one completion with 10,000 blocked dependents, the finish statement timed from the
  client (it unblocks them all in that statement), beside a finish with no dependents;
- dependent latency: a worker runs A, then B (depends on A); B.started_at - A.completed_at,
  both from the database clock, p50/p99 over N pairs;
- signal latency: tasks waiting for a signal; signals.sent_at -> the re-run's started_at,
  p50/p99;
- 100,000 waiting tasks: rows, and an idle worker's connections and statements per second
  (pg_stat_database.xact_commit) with them and without, and one reap's wake_expired_waits.

`--drain-baseline DIR` instead: the drain of 20,000 no-ops (bench/systems/pgqueue_bench.py,
one worker, concurrency 500) from this tree and from DIR, a checkout of a commit before the
workflow features (e.g. `git worktree add --detach /tmp/base f759bf5`), in alternating
rounds, each in a new empty database its own tree migrates. `--drain-triggers`: the same
with this tree against itself with the workflow triggers disabled (what the features cost a
task that uses none of them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgqueue.db import transitions
from pgqueue.db.migrate import migrate
from pgqueue.db.pool import connect
from pgqueue.db.transitions import finish
from pgqueue.outcomes import Completed
from pgqueue.queue import Queue
from pgqueue.settings import Settings
from pgqueue.worker.handlers import App
from pgqueue.worker.loop import Worker


def empty(server: str) -> tuple[str, str]:
    name = f"bench_wf_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, make_conninfo(server, dbname=name)


async def fresh(server: str) -> tuple[str, str]:
    name, dsn = empty(server)
    conn = await connect(dsn)
    async with conn:
        await migrate(conn)
    return name, dsn


def drop(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def unblock(q: Queue, dependents: int) -> tuple[float, float]:
    """Seconds for the finish statement of a task with `dependents` blocked dependents, and
    for one with none."""
    out = []
    for n in (dependents, 0):
        dep = await q.enqueue("dep", {}, queue=f"d{n}")
        for start in range(0, n, 5000):
            await q.enqueue_many(
                [{"kind": "child", "depends_on": [dep.id]} for _ in range(min(5000, n - start))]
            )
        (claimed,) = await transitions.claim(q.pool, "bench", [f"d{n}"], None, 1)
        row = finish(dep.id, claimed.attempts, "bench", Completed({"ok": 1}))
        t0 = time.perf_counter()
        await transitions.finish_many(q.pool, [row])
        out.append(time.perf_counter() - t0)
    async with q.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM pgqueue.tasks WHERE status = 'blocked'")
        row0 = await cur.fetchone()
        assert row0 == (0,), row0
    return out[0], out[1]


def app_for(signals: bool) -> App:
    app = App()

    @app.task("a")
    async def a(ctx: Any, payload: Any) -> int:
        return 1

    @app.task("b")
    async def b(ctx: Any, payload: Any) -> Any:
        if signals:
            return await ctx.wait_for_signal("go")
        return 2

    return app


async def latency(settings: Settings, q: Queue, pairs: int, signals: bool) -> list[float]:
    worker = Worker(app_for(signals), settings, concurrency=20)
    runner = asyncio.create_task(worker.run())
    await worker.started.wait()
    ids = []
    try:
        if signals:
            waiting = [await q.enqueue("b", {}) for _ in range(pairs)]
            for t in waiting:
                while (await q.get(t.id)).status != "waiting":
                    await asyncio.sleep(0.01)
            for t in waiting:
                await q.signal(t.id, "go", 1)
                await q.wait(t.id, timeout_s=30)
                ids.append(t.id)
        else:
            for _ in range(pairs):
                a = await q.enqueue("a", {})
                b = await q.enqueue("b", {}, depends_on=[a.id])
                await q.wait(b.id, timeout_s=30)
                ids.append((a.id, b.id))
    finally:
        worker.stop()
        await runner
    async with q.pool.connection() as conn:
        if signals:
            cur = await conn.execute(
                "SELECT extract(epoch FROM t.started_at - s.sent_at) FROM pgqueue.tasks t"
                " JOIN pgqueue.signals s ON s.task_id = t.id"
            )
        else:
            cur = await conn.execute(
                "SELECT extract(epoch FROM b.started_at - a.completed_at)"
                " FROM unnest(%s::uuid[], %s::uuid[]) AS p(a, b)"
                " JOIN pgqueue.tasks a ON a.id = p.a JOIN pgqueue.tasks b ON b.id = p.b",
                ([p[0] for p in ids], [p[1] for p in ids]),
            )
        return [float(r[0]) for r in await cur.fetchall()]


async def idle_cost(settings: Settings, q: Queue, dbname: str, waiting: int, secs: float) -> str:
    async with q.pool.connection() as conn:
        if waiting:
            await conn.execute(
                "INSERT INTO pgqueue.tasks (kind, status, waiting_for)"
                " SELECT 'b', 'waiting', jsonb_build_object('signal', 'go', 'until',"
                " now() + interval '1 day') FROM generate_series(1, %s)",
                (waiting,),
            )
        await conn.execute("VACUUM ANALYZE pgqueue.tasks")
    worker = Worker(app_for(True), settings, concurrency=10)
    runner = asyncio.create_task(worker.run())
    await worker.started.wait()
    await asyncio.sleep(2)
    server = make_conninfo(settings.dsn, dbname="postgres")

    def stats() -> tuple[int, int]:
        with psycopg.connect(server, autocommit=True) as c:
            c.execute("SELECT pg_stat_clear_snapshot()")
            row = c.execute(
                "SELECT xact_commit, (SELECT count(*) FROM pg_stat_activity WHERE datname = %s)"
                " FROM pg_stat_database WHERE datname = %s",
                (dbname, dbname),
            ).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

    x0, _ = stats()
    await asyncio.sleep(secs)
    x1, conns = stats()
    worker.stop()
    await runner
    async with q.pool.connection() as conn:
        t0 = time.perf_counter()
        await conn.execute("SELECT pgqueue.wake_expired_waits()")
        wake_ms = (time.perf_counter() - t0) * 1000
        cur = await conn.execute("SELECT count(*) FROM pgqueue.waiting_tasks")
        rows = (await cur.fetchone() or (0,))[0]
    return (
        f"waiting={rows}: transactions/s {(x1 - x0) / secs:.1f} (idle worker + reaper, stats"
        f" connections included), connections {conns}, wake_expired_waits {wake_ms:.2f} ms"
    )


WORKFLOW_TRIGGERS = (
    "tasks_update_finished", "tasks_insert_dependencies", "tasks_insert_edges",
    "tasks_insert_final",
)  # fmt: skip


async def without_workflows(server: str) -> tuple[str, str]:
    """A migrated database of this tree with the workflow triggers disabled."""
    name, dsn = await fresh(server)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for trigger in WORKFLOW_TRIGGERS:
            conn.execute(sql.SQL("ALTER TABLE pgqueue.tasks DISABLE TRIGGER {}").format(
                sql.Identifier(trigger)))  # fmt: skip
    return name, dsn


async def drain_vs(server: str, baseline: Path | None, rounds: int, n: int) -> None:
    """Drain rates of this tree and of ``baseline``, alternating which goes first; with no
    baseline, of this tree with its workflow triggers disabled."""
    here = Path(__file__).resolve().parent.parent
    other = f"baseline ({baseline})" if baseline else "this tree, workflow triggers off"
    trees = {"this tree": here, other: (baseline or here).resolve()}
    rates: dict[str, list[float]] = {label: [] for label in trees}
    for r in range(rounds):
        order = list(trees.items())
        for label, tree in order if r % 2 == 0 else order[::-1]:
            off = baseline is None and label == other
            name, dsn = await without_workflows(server) if off else empty(server)
            try:
                out = subprocess.run(
                    [sys.executable, str(tree / "bench/systems/pgqueue_bench.py"), "drain", dsn,
                     str(n)],
                    cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True,
                    text=True, timeout=600, check=True,
                )  # fmt: skip
            finally:
                drop(server, name)
            line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
            rates[label].append(float(json.loads(line)["tasks_per_s"]))
    for label, values in rates.items():
        print(
            f"drain {n} no-ops, {label}: median {statistics.median(values):,.0f}/s"
            f" (min {min(values):,.0f}, max {max(values):,.0f}, rounds {len(values)})"
        )
    ours, base = (statistics.median(v) for v in rates.values())
    print(f"this tree / baseline: {ours / base:.3f}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--drain-baseline", type=Path, help="a checkout to compare drains with")
    parser.add_argument(
        "--drain-triggers", action="store_true", help="drain with workflow triggers on vs off"
    )
    parser.add_argument("--rounds", type=int, default=5, help="with --drain-baseline")
    args = parser.parse_args()
    if args.drain_baseline or args.drain_triggers:
        await drain_vs(args.dsn, args.drain_baseline, args.rounds, 2000 if args.quick else 20_000)
        return
    dependents = 2000 if args.quick else 10_000
    pairs = 30 if args.quick else 200
    waiting = 10_000 if args.quick else 100_000
    for what in ("unblock", "deps", "signals", "idle0", "idle"):
        name, dsn = await fresh(args.dsn)
        settings = Settings.from_env({}, dsn=dsn, reap_s=1.0, poll_s=5.0)
        try:
            async with Queue(settings=settings) as q:
                if what == "unblock":
                    with_deps, without = await unblock(q, dependents)
                    print(
                        f"unblock {dependents} dependents: finish statement {with_deps * 1000:.0f}"
                        f" ms (a finish with no dependents: {without * 1000:.1f} ms)"
                    )
                elif what in ("deps", "signals"):
                    values = await latency(settings, q, pairs, what == "signals")
                    label = "signal->start" if what == "signals" else "last dep done->start"
                    print(
                        f"{label}: p50 {pct(values, 0.5) * 1000:.1f} ms, p99"
                        f" {pct(values, 0.99) * 1000:.1f} ms, mean"
                        f" {statistics.mean(values) * 1000:.1f} ms (n={len(values)})"
                    )
                else:
                    n = 0 if what == "idle0" else waiting
                    print(await idle_cost(settings, q, name, n, 20.0))
        finally:
            drop(args.dsn, name)


if __name__ == "__main__":
    asyncio.run(main())
