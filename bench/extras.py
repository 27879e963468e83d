"""pgqueue-only measurements of issue 3, one function each; bench/run.py calls them per round.

Each runs pgqueue as shipped, in processes of its own (`pgqueue worker`, `pgqueue serve`
with a user's bearer token), against a new database, and returns plain numbers:

- `idle_cost`: what an idle worker process costs the database per second: statements
  counted on the wire by a proxy (bench/statement_counter.py; pg_stat_statements would
  need shared_preload_libraries, i.e. a server restart) and transactions from
  pg_stat_database; `api_idle_cost` the same for an API process no client talks to;
- `longpoll_cost`: the statements/s 1,000 parked `POST /tasks?wait=30` cost, counted the
  same way (waiters from bench/waiters.py in their own process);
- `producer_latency`: bench/systems/pgqueue_bench.py `producer` (probe latency under a
  concurrent producer);
- `worker_rss`: resident memory of one worker at concurrency 100 after draining 5,000 tasks;
- `processes_drain`: 20,000 tasks drained by N worker processes, timed from resuming the
  paused queue (processes started and registered first, so interpreter start-up is not in
  the figure) until the last task is completed;
- `build_preloaded`: a template database holding 1,000,000 finished and 100,000
  future-dated tasks, copied per round for the scale drain (`compare.run_one(template=…)`);
- `http_single`, `http_batch`: `POST /tasks` and `POST /tasks/batch` with a bearer token
  against one server process, load from bench/http_load.py in separate processes;
- `websocket`: bench/ws_latency.py as a subprocess, its last stdout line as JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# (importing compare moves into bench/.venv when started with plain python3)
from compare import fresh_database, run_one

# isort: split
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from statement_counter import StatementCounter

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def log(message: str) -> None:
    """Progress goes to stderr; stdout is kept for results."""
    print(message, file=sys.stderr, flush=True)


def migrate(dsn: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pgqueue", "migrate", "--dsn", dsn], check=True, capture_output=True
    )


def worker(dsn: str, concurrency: int) -> subprocess.Popen[bytes]:
    """`pgqueue worker` with bench/systems/pgqueue_bench.py's no-op handler."""
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(HERE / "systems")}
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


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(timeout=60)


def scalar(conn: psycopg.Connection, query: str) -> int:  # type: ignore[type-arg]
    row = conn.execute(query).fetchone()  # type: ignore[arg-type]
    return int(row[0]) if row else 0


def wait_for(dsn: str, query: str, at_least: int, timeout: float = 300) -> None:
    """Poll `query` (one number) on one connection every 20 ms until it reaches at_least."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while scalar(conn, query) < at_least:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{query} stayed below {at_least} for {timeout} s")
            time.sleep(0.02)


def wait_completed(dsn: str, n: int) -> None:
    wait_for(dsn, "SELECT count(*) FROM pgqueue.tasks WHERE status = 'completed'", n)


def enqueue(dsn: str, n: int) -> None:
    """n no-op tasks in one call (migrates first), through pgqueue's own bulk enqueue."""
    subprocess.run(
        [sys.executable, str(HERE / "systems" / "pgqueue_bench.py"), "bulk", dsn, str(n)],
        check=True,
        capture_output=True,
    )


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def idle_cost(server: str, seconds: float = 30) -> dict[str, float]:
    """What one idle worker costs its database, per second, over a window of `seconds`.

    statements_per_s: every statement the worker sent (bench/statement_counter.py counts
    them on the wire; BEGIN and COMMIT included, as pg_stat_statements would).
    transactions_per_s: xact_commit + xact_rollback of its database (nothing else connects
    to it). Backends report those when idle, at most once a second and up to ten seconds
    late, so the window is long. The most frequent statements go to stderr.
    """
    dsn = fresh_database(server, "bench_idle")
    migrate(dsn)
    return _idle(server, dsn, "worker", lambda via: _started_worker(via, 10), seconds)


def api_idle_cost(server: str, seconds: float = 30) -> dict[str, float]:
    """idle_cost for one `pgqueue serve` process (token auth on, as it runs by default) that
    no client talks to."""
    dsn, _ = api_database(server, "bench_idle_api")
    return _idle(server, dsn, "API", lambda via: serving(via, dsn), seconds)


@contextlib.contextmanager
def _started_worker(dsn: str, concurrency: int) -> Iterator[None]:
    procs = [worker(dsn, concurrency)]
    try:
        yield
    finally:
        stop(procs)


def _idle(
    server: str,
    dsn: str,
    what: str,
    start: Callable[[str], contextlib.AbstractContextManager[object]],
    seconds: float,
) -> dict[str, float]:
    """Statements and transactions per second of the process `start(via)` runs on database
    `dsn` (`via`: its DSN through the counting proxy), in a window of `seconds` after 5 s of
    start-up."""
    name = conninfo_to_dict(dsn)["dbname"]
    query = (  # read from the server's database: our own look does not count here
        f"SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '{name}'"
    )
    with StatementCounter(dsn) as counter, start(counter.dsn):
        time.sleep(5)  # start-up, first heartbeat, first scheduler and retention passes
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            before = scalar(conn, query)
            first, before_texts = counter.snapshot()
            time.sleep(seconds)
            last, texts = counter.snapshot()
            conn.execute("SELECT pg_stat_clear_snapshot()")
            after = scalar(conn, query)
    for text, n in (texts - before_texts).most_common(6):
        log(f"    in the window the idle {what} sent {n:4d} x {text}")
    return {
        "statements_per_s": (last - first) / seconds,
        "transactions_per_s": (after - before) / seconds,
    }


def pgbench_binary() -> str:
    """pgbench from PATH or Debian's server packages; RuntimeError naming the package if absent."""
    found = shutil.which("pgbench") or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True)),
        None,
    )
    if found is None:
        raise RuntimeError(
            "pgbench not found: apt-get install -y postgresql (or postgresql-client)"
        )
    return found


def pgbench_inserts(server: str, clients: int, seconds: float) -> float:
    """Single-row INSERTs, each its own durable commit, by `clients` pgbench connections for
    `seconds`: rows/s. The table is a bare one (bigserial key, jsonb payload), like
    bench/systems/rawsql_bench.py's, so this is the server's ceiling, not a queue's."""
    dsn = fresh_database(server, "bench_floor")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE jobs (id bigserial PRIMARY KEY, payload jsonb NOT NULL)")
    script = Path(tempfile.mkdtemp()) / "insert.sql"
    script.write_text("INSERT INTO jobs (payload) VALUES ('{\"i\": 1}');\n")
    out = subprocess.run(
        [
            pgbench_binary(),
            "-n",
            "-f",
            str(script),
            "-c",
            str(clients),
            "-j",
            str(min(clients, 2)),
            "-T",
            str(int(seconds)),
            dsn,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    # "tps = 1234.5 (without initial connection time)": one INSERT per transaction
    tps = re.search(r"^tps = ([0-9.]+)", out.stdout, re.MULTILINE)
    if tps is None:
        raise RuntimeError(f"pgbench printed no tps:\n{out.stdout[-1000:]}{out.stderr[-1000:]}")
    return float(tps.group(1))


def worker_rss(server: str, n: int = 5000, concurrency: int = 100) -> float:
    """MB resident in one worker process at `concurrency` after it drained n tasks."""
    dsn = fresh_database(server, "bench_rss")
    enqueue(dsn, n)
    procs = [worker(dsn, concurrency)]
    try:
        wait_completed(dsn, n)
        return rss_mb(procs[0].pid)
    finally:
        stop(procs)


def processes_drain(server: str, processes: int, n: int = 20000, concurrency: int = 500) -> float:
    """Tasks/s drained by `processes` workers sharing `concurrency`, from a paused queue.

    The queue is paused, filled, the workers started and registered in pgqueue.workers; the
    clock starts when the queue is resumed (which wakes them by NOTIFY) and stops when the
    last task is completed.
    """
    dsn = fresh_database(server, f"bench_procs{processes}")
    migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pgqueue.pause_queue('default')")
    enqueue(dsn, n)
    procs = [worker(dsn, concurrency // processes) for _ in range(processes)]
    try:
        wait_for(dsn, "SELECT count(*) FROM pgqueue.workers", processes, timeout=60)
        time.sleep(1)  # each settles into its idle wait
        with psycopg.connect(dsn, autocommit=True) as conn:
            t0 = time.perf_counter()
            conn.execute("SELECT pgqueue.resume_queue('default')")
        wait_completed(dsn, n)
        return n / (time.perf_counter() - t0)
    finally:
        stop(procs)


PRELOAD = [
    # No event rows and no NOTIFY for history that never happened live.
    "ALTER TABLE pgqueue.tasks DISABLE TRIGGER USER",
    # Finished an hour ago: younger than retention (7 days), which the worker also runs.
    """INSERT INTO pgqueue.tasks (kind, payload, status, attempts, created_at, run_at,
                                 started_at, completed_at, updated_at, result)
       SELECT 'noop', jsonb_build_object('i', g), 'completed', 1, now() - interval '1 hour',
              now() - interval '1 hour', now() - interval '1 hour', now() - interval '1 hour',
              now() - interval '1 hour', 'null'
         FROM generate_series(1, %(finished)s::int) g""",
    """INSERT INTO pgqueue.tasks (kind, payload, run_at)
       SELECT 'noop', jsonb_build_object('i', g), now() + interval '30 days'
         FROM generate_series(1, %(future)s::int) g""",
    "ALTER TABLE pgqueue.tasks ENABLE TRIGGER USER",
]


def build_preloaded(server: str, finished: int, future: int) -> str:
    """A migrated template database with `finished` completed and `future` future-dated tasks.

    Built once per run; each round copies it (CREATE DATABASE … TEMPLATE), so every round
    starts from the same fresh state. Connections to it are then refused, as a template's
    must be (a stray one would make the copy fail).
    """
    name = "bench_scale_template"
    t0 = time.perf_counter()
    dsn = fresh_database(server, name)
    migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            for statement in PRELOAD:
                params = {"finished": finished, "future": future} if "%(" in statement else None
                conn.execute(statement, params)  # type: ignore[arg-type]
        conn.execute("VACUUM ANALYZE pgqueue.tasks")
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name))
        )
    seconds = time.perf_counter() - t0
    log(f"preloaded {finished:,} finished + {future:,} future tasks in {seconds:.0f} s")
    return name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token(dsn: str, user: str = "bench") -> str:
    """A `user` token made the way an operator makes one (`pgqueue token create`, which prints
    the secret on its last line)."""
    out = subprocess.run(
        [sys.executable, "-m", "pgqueue", "token", "create", "--user", user, "--dsn", dsn],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return out.stdout.strip().splitlines()[-1]


def api_database(server: str, name: str = "bench_http") -> tuple[str, str]:
    """A new migrated database with one user token: (dsn, bearer header line)."""
    dsn = fresh_database(server, name)
    migrate(dsn)
    return dsn, f"Authorization: Bearer {token(dsn)}"


@contextlib.contextmanager
def serving(dsn: str, direct: str | None = None) -> Iterator[str]:
    """`pgqueue serve` (one process, token auth on) on database `dsn`; yields its base URL.

    `direct`: the database's own DSN when `dsn` goes through a proxy (readiness is then
    watched on the port alone: /readyz would itself send a statement)."""
    port = free_port()
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PGQUEUE_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "--log-level", "WARNING", "serve"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        preexec_fn=raise_fd_limit,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not ready(base, direct is not None):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("pgqueue serve did not become ready")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def ready(base: str, port_only: bool) -> bool:
    """Whether the server answers: /readyz 200, or (port_only) a TCP connect succeeds."""
    try:
        if port_only:
            host, port = base.removeprefix("http://").split(":")
            socket.create_connection((host, int(port)), timeout=1).close()
            return True
        with urllib.request.urlopen(f"{base}/readyz", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def raise_fd_limit() -> None:
    """The soft open-files limit up to the hard one (thousands of sockets in one process)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def http_load(url: str, *args: str) -> dict[str, float]:
    """bench/http_load.py in its own process(es); its JSON summary."""
    out = subprocess.run(
        [sys.executable, str(HERE / "http_load.py"), url, *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = out.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"http_load.py failed:\n{out.stderr[-2000:]}")
    result: dict[str, float] = json.loads(lines[-1])
    return result


SINGLE_BODY = json.dumps({"kind": "bench.noop", "payload": {"n": 1}})


def http_single(server: str, seconds: float, connections: int = 32) -> dict[str, float]:
    """`POST /tasks` with a user's bearer token, one task each, from `connections` keep-alive
    connections (like wrk -c32)."""
    dsn, bearer = api_database(server)
    with serving(dsn) as base:
        return http_load(
            f"{base}/tasks",
            "--header",
            bearer,
            "--body",
            SINGLE_BODY,
            "--connections",
            str(connections),
            "--duration",
            str(seconds),
        )


def http_batch(server: str, calls: int, size: int = 10000) -> dict[str, float]:
    """`POST /tasks/batch` of `size` tasks, `calls` times one after another on one connection.

    Adds tasks_per_s (tasks in all calls / seconds of all calls) to http_load's summary.
    """
    body = HERE / "results" / f"batch-{size}.json"
    body.parent.mkdir(exist_ok=True)
    body.write_text(json.dumps({"tasks": [json.loads(SINGLE_BODY)] * size}))
    dsn, bearer = api_database(server)
    with serving(dsn) as base:
        result = http_load(
            f"{base}/tasks/batch",
            "--header",
            bearer,
            "--body",
            f"@{body}",
            "--connections",
            "1",
            "--requests",
            str(calls),
        )
    result["tasks_per_s"] = result["requests"] * size / result["seconds"]
    return result


def longpoll_cost(
    server: str, waiters: int = 1000, wait_s: float = 30, window_s: float = 15
) -> dict[str, float]:
    """Statements/s the database gets from one `pgqueue serve` process while `waiters`
    clients each hold a `POST /tasks?wait=wait_s` open and nothing changes (no worker: every
    task stays pending), counted on the wire (bench/statement_counter.py) in a window of
    `window_s` that starts once all are parked and ends before the first wait does.

    Parked: every task is in the table and the counter has been still for 0.5 s (each
    long-poll reads its task once after the enqueue, then waits on NOTIFY alone). Then the
    waiters (bench/waiters.py, their own process) must all be answered 201 after ~wait_s:
    a wait that ended early would make the window's figure meaningless, so it is an error.
    """
    dsn, bearer = api_database(server, "bench_longpoll")
    with StatementCounter(dsn) as counter, serving(counter.dsn, dsn) as base:
        time.sleep(2)  # the server's start-up statements
        t_start = time.monotonic()
        client = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "waiters.py"),
                f"{base}/tasks?wait={wait_s:g}",
                "--waiters",
                str(waiters),
                "--body",
                SINGLE_BODY,
                "--header",
                bearer,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(dsn, "SELECT count(*) FROM pgqueue.tasks", waiters, timeout=wait_s / 2)
            still = counter.snapshot()[0]
            while True:
                time.sleep(0.5)
                now = counter.snapshot()[0]
                if now == still:
                    break
                still = now
            parked_s = time.monotonic() - t_start
            first, before = counter.snapshot()
            log(f"    {waiters} waiters parked in {parked_s:.1f} s ({first} statements so far)")
            time.sleep(window_s)
            last, texts = counter.snapshot()
            if time.monotonic() - t_start > wait_s - 1:
                raise RuntimeError(f"parking took {parked_s:.1f} s: the window overran the wait")
            out, _ = client.communicate(timeout=wait_s + 60)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
    for text, n in (texts - before).most_common(6):
        log(f"    in the window {waiters} parked long-polls cost {n:4d} x {text}")
    result = json.loads(out.strip().splitlines()[-1])
    if result["answered"] != waiters or result["statuses"] != {"201": waiters}:
        raise RuntimeError(f"not every waiter got its 201: {result}")
    if result["min_s"] < wait_s - 1:
        raise RuntimeError(f"a wait of {wait_s} s ended after {result['min_s']} s: {result}")
    per_s = (last - first) / window_s
    return {
        "statements_per_s": per_s,
        "per_100_waiters": per_s / (waiters / 100),
        "parked_s": parked_s,
    }


def producer_latency(
    server: str, rate: float, processes: int, batch: int, concurrency: int, probes: int
) -> dict[str, float]:
    """bench/systems/pgqueue_bench.py `producer`: enqueue → handler start of `probes` tasks
    while `processes` producer processes enqueue `rate` tasks/s (`batch` per call) into the
    same queue a worker of `concurrency` drains; with the rates achieved over the window."""
    params = (rate, processes, batch, concurrency, probes)
    return run_one(server, "pgqueue", "producer", *(str(a) for a in params))


def websocket(
    server: str, subscribers: int, tasks: int, pause: float, server_workers: int = 1
) -> dict[str, float] | None:
    """bench/ws_latency.py as it stands (`--server-workers`: `pgqueue serve --workers`); None
    when its last stdout line is not a JSON object or it fails. Its sentence goes to stderr."""
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "ws_latency.py"),
            "--dsn",
            server,
            "--subscribers",
            str(subscribers),
            "--tasks",
            str(tasks),
            "--pause",
            str(pause),
            "--server-workers",
            str(server_workers),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = out.stdout.strip().splitlines()
    last = lines[-1] if lines else ""
    try:
        result = json.loads(last)
    except json.JSONDecodeError:
        result = None
    if out.returncode != 0 or not isinstance(result, dict):
        log(f"ws_latency.py gave no JSON (exit {out.returncode}): {last or out.stderr[-500:]}")
        return None
    if len(lines) > 1:
        log(f"    {lines[-2]}")
    return result


if __name__ == "__main__":
    sys.exit("bench/extras.py is a module now: python3 bench/run.py --only processes,idle,rss,http")
