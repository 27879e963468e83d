"""How far one PostgreSQL goes on this machine (issue 12, docs/scaling.md).

`python bench/scaling.py --dsn postgresql://postgres@127.0.0.1:5432/postgres [--rounds 3]`

Runs in pgqueue's own environment (no peers needed). For each configuration, in rounds
interleaved so load from elsewhere on the machine spreads over all of them, on a new
database each time:

- **workers P = 1, 2, 4**: 20,000 no-op tasks in a paused queue, P `pgqueue worker`
  processes (concurrency 100 each) registered, the clock runs from resuming the queue to the
  last completion. CPU seconds of the worker processes and of the PostgreSQL backends serving
  this database (from /proc, backends found in pg_stat_activity) are taken over the same
  window, so the limit can be attributed: PostgreSQL or Python;
- **API processes A = 1, 2** (`pgqueue serve --workers A --insecure`): `POST /tasks` from
  bench/http_load.py (64 keep-alive connections, 2 load processes) for 10 s, requests/s and
  latency p50/p99, with the same CPU split (server processes vs backends);
- **connections**: pg_stat_activity counted per configuration while it runs (pool + LISTEN);
- **churn per task**: pg_stat_user_tables of tasks and events after a drain, per task
  (inserts, updates, HOT updates, dead rows), the input of migration 0009's autovacuum settings.

Prints one JSON line per measurement and a table of medians (min-max) at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TICKS = os.sysconf("SC_CLK_TCK")
DRAIN_TASKS = 20_000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fresh_database(server: str, name: str) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(server, dbname=name)
    subprocess.run(
        [sys.executable, "-m", "pgqueue", "migrate", "--dsn", dsn],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return dsn


def drop_database(server: str, dsn: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name)))
        )


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included), 0 once it has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def tree(pid: int) -> list[int]:
    """pid and its descendants (uvicorn --workers forks server processes)."""
    found = [pid]
    for child in (
        Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if Path(f"/proc/{pid}/task/{pid}/children").exists()
        else []
    ):
        found += tree(int(child))
    return found


def backends(conn: psycopg.Connection[Any], dbname: str) -> list[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (dbname,),
    ).fetchall()
    return [int(r[0]) for r in rows]


class CpuWindow:
    """CPU seconds of some client processes and of a database's backends over a window."""

    def __init__(self, conn: psycopg.Connection[Any], dbname: str, clients: list[int]) -> None:
        self.conn, self.dbname, self.clients = conn, dbname, clients
        self.start_client = {p: cpu_seconds(p) for c in clients for p in tree(c)}
        self.start_db = {p: cpu_seconds(p) for p in backends(conn, dbname)}
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, float]:
        seconds = time.perf_counter() - self.t0
        client = sum(
            cpu_seconds(p) - self.start_client.get(p, 0.0) for c in self.clients for p in tree(c)
        )
        db = sum(
            cpu_seconds(p) - self.start_db.get(p, 0.0) for p in backends(self.conn, self.dbname)
        )
        return {
            "seconds": seconds,
            "python_cpu_s": client,
            "postgres_cpu_s": db,
            "python_cores": client / seconds,
            "postgres_cores": db / seconds,
        }


def connections(conn: psycopg.Connection[Any], dbname: str) -> int:
    return len(backends(conn, dbname))


def start_workers(dsn: str, n: int, concurrency: int) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(HERE / "systems")}
    argv = [
        sys.executable,
        "-m",
        "pgqueue",
        "--log-level",
        "WARNING",
        "worker",
        "pgqueue_bench:app",
        "--concurrency",
        str(concurrency),
    ]
    return [subprocess.Popen(argv, env=env, cwd=ROOT) for _ in range(n)]


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_until(conn: psycopg.Connection[Any], query: str, at_least: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(query).fetchone()  # type: ignore[arg-type]
        if row and int(row[0]) >= at_least:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{query} < {at_least} after {timeout} s")
        time.sleep(0.02)


CHURN = """SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, n_dead_tup
             FROM pg_stat_user_tables WHERE schemaname = 'pgqueue'
              AND relname IN ('tasks', 'events')"""


def drain(server: str, processes: int, concurrency: int = 100) -> dict[str, Any]:
    dsn = fresh_database(server, f"bench_scale_w{processes}")
    dbname = str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pgqueue.pause_queue('default')")
            conn.execute(
                "INSERT INTO pgqueue.tasks (kind, payload) "
                "SELECT 'noop', jsonb_build_object('i', g) FROM generate_series(1, %s) g",
                (DRAIN_TASKS,),
            )
            procs = start_workers(dsn, processes, concurrency)
            wait_until(conn, "SELECT count(*) FROM pgqueue.workers", processes, 60)
            time.sleep(1)
            idle_connections = connections(conn, dbname)
            window = CpuWindow(conn, dbname, [p.pid for p in procs])
            conn.execute("SELECT pgqueue.resume_queue('default')")
            peak = idle_connections
            deadline = time.monotonic() + 600
            while True:
                done = conn.execute(
                    "SELECT count(*) FROM pgqueue.tasks WHERE status = 'completed'"
                ).fetchone()
                peak = max(peak, connections(conn, dbname))
                if done and done[0] >= DRAIN_TASKS:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("drain did not finish in 600 s")
                time.sleep(0.05)
            cpu = window.stop()
            lat = conn.execute(
                "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP ("
                " ORDER BY extract(epoch FROM completed_at - started_at)) FROM pgqueue.tasks"
            ).fetchone()
            time.sleep(0.6)  # statistics are flushed by backends at most every 500 ms
            churn = {
                r[0]: dict(zip(("ins", "upd", "hot_upd", "del", "dead"), r[1:], strict=True))
                for r in conn.execute(CHURN).fetchall()
            }
        return {
            "what": f"workers={processes}",
            "tasks_per_s": DRAIN_TASKS / cpu["seconds"],
            **cpu,
            "claim_to_done_p50_ms": lat[0][0] * 1000 if lat else None,
            "claim_to_done_p99_ms": lat[0][1] * 1000 if lat else None,
            "connections_idle": idle_connections,
            "connections_peak": peak,
            "churn_per_task": {
                t: {k: v / DRAIN_TASKS for k, v in c.items()} for t, c in churn.items()
            },
        }
    finally:
        stop_all(procs)
        drop_database(server, dsn)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(dsn: str, processes: int) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PGQUEUE_PORT": str(port)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgqueue",
            "--log-level",
            "WARNING",
            "serve",
            "--insecure",
            "--workers",
            str(processes),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("pgqueue serve did not become ready")
            time.sleep(0.1)
        time.sleep(1 + processes)  # every server process up
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def api(server: str, processes: int, seconds: float = 10) -> dict[str, Any]:
    dsn = fresh_database(server, f"bench_scale_a{processes}")
    dbname = str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])
    try:
        with serving(dsn, processes) as (base, proc), psycopg.connect(dsn, autocommit=True) as conn:
            idle_connections = connections(conn, dbname)
            window = CpuWindow(conn, dbname, [proc.pid])
            out = subprocess.run(
                [
                    sys.executable,
                    str(HERE / "http_load.py"),
                    f"{base}/tasks",
                    "--body",
                    json.dumps({"kind": "noop", "payload": {"n": 1}}),
                    "--connections",
                    "64",
                    "--processes",
                    "2",
                    "--duration",
                    str(seconds),
                    "--warmup",
                    "0",
                ],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            cpu = window.stop()
            peak = connections(conn, dbname)
            result = json.loads(out.stdout.strip().splitlines()[-1])
        return {
            "what": f"api={processes}",
            "requests_per_s": result["requests_per_s"],
            "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"],
            "errors": result["errors"],
            **cpu,
            "connections_idle": idle_connections,
            "connections_peak": peak,
        }
    finally:
        drop_database(server, dsn)


def cell(values: list[float]) -> str:
    med = statistics.median(values)
    return (
        f"{med:,.0f} ({min(values):,.0f}–{max(values):,.0f})" if len(values) > 1 else f"{med:,.0f}"
    )


def share(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:.2f} ({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else f"{med:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", required=True, help="a server where bench_* databases may be made")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["workers", "api"], default=None)
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {}
    for round_no in range(args.rounds):
        plan: list[tuple[str, Any]] = []
        if args.only in (None, "workers"):
            plan += [(f"workers={p}", lambda p=p: drain(args.dsn, p)) for p in (1, 2, 4)]
        if args.only in (None, "api"):
            plan += [(f"api={a}", lambda a=a: api(args.dsn, a)) for a in (1, 2)]
        for name, run in plan:
            log(f"round {round_no + 1}: {name}")
            result = run()
            print(json.dumps(result), flush=True)
            results.setdefault(name, []).append(result)
    header = (
        "configuration",
        "throughput /s",
        "p50 / p99 ms",
        "Python cores",
        "PostgreSQL cores",
        "connections (idle / peak)",
    )
    print("\n| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    for name, runs in results.items():
        rate = [r.get("tasks_per_s") or r.get("requests_per_s") for r in runs]
        p50, p99 = (
            ("claim_to_done_p50_ms", "claim_to_done_p99_ms")
            if name.startswith("workers")
            else ("p50_ms", "p99_ms")
        )
        lat = (
            f"{statistics.median(r[p50] for r in runs):.1f} / "
            f"{statistics.median(r[p99] for r in runs):.1f}"
        )
        print(
            f"| {name} | {cell(rate)} | {lat} | {share([r['python_cores'] for r in runs])} | "
            f"{share([r['postgres_cores'] for r in runs])} | "
            f"{statistics.median(r['connections_idle'] for r in runs):.0f} / "
            f"{statistics.median(r['connections_peak'] for r in runs):.0f} |"
        )


if __name__ == "__main__":
    main()
