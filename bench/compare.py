"""pgqueue side by side with PGQueuer and Procrastinate: `python3 bench/compare.py`.

Creates bench/.venv with pgqueue (editable) and the peers (never runtime dependencies of
pgqueue), then runs every metric for every system in fresh databases, rounds interleaved
(A B C A B C ...), and prints a markdown table of medians with min-max.
Options: --rounds N (default 3), --dsn (a server where bench_* databases may be created).
"""

from __future__ import annotations

import argparse
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
            "pgqueuer",
            "procrastinate",
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
# metric -> (argument per system, what to read from the result)
METRICS: dict[str, tuple[dict[str, str], list[str]]] = {
    "enqueue": ({"pgqueue": "3000", "pgqueuer": "3000", "procrastinate": "3000"}, ["tasks_per_s"]),
    "bulk": ({"pgqueue": "20000", "pgqueuer": "20000", "procrastinate": "20000"}, ["tasks_per_s"]),
    # Procrastinate drains ~700/s: 3,000 tasks keep a round under 5 s.
    "drain": ({"pgqueue": "20000", "pgqueuer": "20000", "procrastinate": "3000"}, ["tasks_per_s"]),
    "latency": ({s: f"/tmp/bench-latency-{s}.log" for s in SYSTEMS}, ["p50_ms", "p99_ms"]),
}


def fresh_database(server: str, name: str) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(server, dbname=name)


def run_one(server: str, system: str, metric: str, arg: str) -> dict[str, float]:
    dsn = fresh_database(server, f"bench_{system}")
    script = HERE / "systems" / f"{system}_bench.py"
    out = subprocess.run(
        [str(PYTHON), str(script), metric, dsn, arg],
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
    fmt = "{:,.0f}" if statistics.median(values) >= 100 else "{:.2f}"
    shown = [statistics.median(values), min(values), max(values)]
    median, low, high = (fmt.format(v) for v in shown)
    return f"{median} ({low}–{high})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--only", default=",".join(METRICS))
    args = parser.parse_args()
    metrics = [m for m in args.only.split(",") if m]
    results: dict[tuple[str, str, str], list[float]] = {}
    for round_no in range(args.rounds):
        for metric in metrics:
            per_system, keys = METRICS[metric]
            for system in SYSTEMS:  # interleaved: each round visits every system
                value = run_one(args.dsn, system, metric, per_system[system])
                for key in keys:
                    results.setdefault((metric, key, system), []).append(value[key])
                print(f"round {round_no + 1} {metric:8s} {system:14s} {value}", file=sys.stderr)
    print(f"\n{args.rounds} rounds, median (min–max)\n")
    print("| metric | " + " | ".join(SYSTEMS) + " |")
    print("|---|" + "---|" * len(SYSTEMS))
    for metric in metrics:
        for key in METRICS[metric][1]:
            row = [cell(results[(metric, key, s)]) for s in SYSTEMS]
            print(f"| {metric} {key} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
