"""pgqueue beside PGQueuer and Procrastinate, one measurement at a time; used by bench/run.py.

Importing this module moves the process into bench/.venv (created on first use with pgqueue
editable and the peers pinned at the versions of issue 3 — never dependencies of pgqueue).
`run_one` runs one metric of one system in a new process against a new database; the
per-system scripts under bench/systems/ say how each metric is taken. `fresh_database`
(also used by bench/ws_latency.py) and `cell` (median with min-max) serve every benchmark.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
PYTHON = VENV / "bin" / "python"


def ensure_venv() -> None:
    """bench/.venv with pgqueue (editable) and the peers; never pgqueue's own environment."""
    if PYTHON.exists():
        return
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [
            str(PYTHON),
            "-m",
            "pip",
            "install",
            "-q",
            "-e",
            str(HERE.parent),
            "pgqueuer==1.6.0",
            "procrastinate==3.10.0",
        ],
        check=True,
    )


if Path(sys.prefix).resolve() != VENV.resolve():  # started with a plain python3: move in
    ensure_venv()
    os.execv(str(PYTHON), [str(PYTHON), *sys.argv])

import psycopg  # noqa: E402 - only importable inside bench/.venv
from psycopg import sql  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402

SYSTEMS = ["pgqueue", "pgqueuer", "procrastinate"]
# Plain SQL on a bare table (bench/systems/rawsql_bench.py): not a peer, the floor under all.
REFERENCE = "rawsql"
# metric -> (argument per system, what to read from the result); a system missing from the
# dict does not run that metric.
METRICS: dict[str, tuple[dict[str, str], list[str]]] = {
    "enqueue": (
        {"pgqueue": "3000", "pgqueuer": "3000", "procrastinate": "3000", REFERENCE: "3000"},
        ["tasks_per_s"],
    ),
    "bulk": (
        {"pgqueue": "20000", "pgqueuer": "20000", "procrastinate": "20000", REFERENCE: "20000"},
        ["tasks_per_s"],
    ),
    # Procrastinate drains ~700/s: 3,000 tasks keep a round under 5 s.
    "drain": (
        {"pgqueue": "20000", "pgqueuer": "20000", "procrastinate": "3000", REFERENCE: "20000"},
        ["tasks_per_s"],
    ),
    "latency": ({s: f"/tmp/bench-latency-{s}.log" for s in SYSTEMS}, ["p50_ms", "p99_ms"]),
}


def fresh_database(server: str, name: str, template: str | None = None) -> str:
    """Drop and create database `name` (a copy of `template` if given); returns its DSN.

    A template is copied file by file (STRATEGY FILE_COPY): for a preloaded database of a
    million rows that is seconds, where PostgreSQL 15's default WAL_LOG writes it all to WAL.
    """
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query += sql.SQL(" TEMPLATE {} STRATEGY FILE_COPY").format(sql.Identifier(template))
    drop_database(server, name)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(query)
    return make_conninfo(server, dbname=name)


def drop_database(server: str, name: str) -> None:
    """Drop database `name` if it exists, closing whatever is still connected to it."""
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def run_one(
    server: str, system: str, metric: str, *args: str, template: str | None = None
) -> dict[str, float]:
    """One metric of one system in its own process, in a new database (copied from template)."""
    dsn = fresh_database(server, f"bench_{system}", template)
    script = HERE / "systems" / f"{system}_bench.py"
    out = subprocess.run(
        [str(PYTHON), str(script), metric, dsn, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{system} {metric} failed:\n{out.stderr[-2000:]}")
    result: dict[str, float] = json.loads(lines[-1])
    return result


def cell(values: list[float]) -> str:
    """Median (min-max); whole numbers (with thousands separators) from 100 up and for counts."""
    whole = statistics.median(values) >= 100 or all(v == int(v) for v in values)
    fmt = "{:,.0f}" if whole else "{:.2f}"
    shown = [statistics.median(values), min(values), max(values)]
    median, low, high = (fmt.format(v) for v in shown)
    return f"{median} ({low}–{high})"


if __name__ == "__main__":
    sys.exit(
        "bench/compare.py is a module now: python3 bench/run.py --only enqueue,bulk,drain,latency"
    )
