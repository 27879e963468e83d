"""pgqueue-only figures of issue 3: `python3 bench/extras.py [--dsn SERVER]`.

- idle: statements per second an idle worker process costs the database (xact_commit delta
  of its own database over 20 s; nothing else connected);
- rss: resident memory of one worker process at concurrency 100 after draining 5,000 tasks;
- scale: drain 20,000 tasks with 4 worker processes against 1 (wall time until all done).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import fresh_database  # moves into bench/.venv when started with plain python3

ROOT = Path(__file__).resolve().parent.parent


def worker(dsn: str, concurrency: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT / "bench" / "systems")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgqueue",
            "--log-level",
            "WARNING",
            "worker",
            "pgqueue_bench:app",
            "--concurrency",
            str(concurrency),
        ],
        env=env,
        cwd=ROOT,
    )


def count(dsn: str, query: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()  # type: ignore[arg-type]
    return int(row[0]) if row else 0


def wait_done(dsn: str, n: int) -> None:
    while count(dsn, "SELECT count(*) FROM pgqueue.tasks WHERE status = 'completed'") < n:
        time.sleep(0.01)


def enqueue(dsn: str, n: int) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "bench/systems/pgqueue_bench.py"), "bulk", dsn, str(n)],
        check=True,
        capture_output=True,
    )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(timeout=60)


def idle(server: str) -> float:
    dsn = fresh_database(server, "bench_idle")
    enqueue(dsn, 1)  # migrates
    procs = [worker(dsn, 10)]
    time.sleep(5)
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    query = f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{name}'"
    before = count(server, query)
    time.sleep(20)
    after = count(server, query)
    stop(procs)
    return (after - before - 1) / 20  # minus our own second look


def rss(server: str) -> float:
    dsn = fresh_database(server, "bench_rss")
    enqueue(dsn, 5000)
    procs = [worker(dsn, 100)]
    wait_done(dsn, 5000)
    status = Path(f"/proc/{procs[0].pid}/status").read_text().splitlines()
    kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    stop(procs)
    return kb / 1024


def scale(server: str, processes: int) -> float:
    dsn = fresh_database(server, f"bench_scale{processes}")
    enqueue(dsn, 20000)
    t0 = time.perf_counter()
    procs = [worker(dsn, 500 // processes) for _ in range(processes)]
    wait_done(dsn, 20000)
    rate = 20000 / (time.perf_counter() - t0)
    stop(procs)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    print(f"idle worker: {idle(args.dsn):.2f} transactions/s")
    print(f"worker RSS at concurrency 100 after 5,000 tasks: {rss(args.dsn):.0f} MB")
    one, four = scale(args.dsn, 1), scale(args.dsn, 4)
    print(
        f"drain 20,000 (incl. process start): 1 process {one:,.0f}/s, 4 processes {four:,.0f}/s "
        f"({four / one:.2f}x)"
    )


if __name__ == "__main__":
    main()
