"""Every benchmark of issues 3 and 15 in one command: `python3 bench/run.py [--rounds 3] [--quick]`.

Moves into bench/.venv (pgqueue editable, PGQueuer 1.6.0 and Procrastinate 3.10.0 — the peers
live there only), then runs the chosen benchmarks round after round, every benchmark once per
round and every system once per benchmark (A B C, A B C, …), each against a new database.
Progress goes to stderr; stdout gets one markdown table: medians with min-max over rounds,
pgqueue beside the peers where they have the feature, the target computed from the same run
(e.g. 1.5 x the best peer's median) and whether pgqueue meets it.

Benchmarks (`--only`, comma-separated):
  enqueue, bulk, drain, latency   pgqueue vs PGQueuer vs Procrastinate (bench/compare.py,
                                  bench/systems/*)
  scale       pgqueue's drain with 1,000,000 finished + 100,000 future-dated rows in the table,
              as a fraction of an empty-table drain run next to it
  backlog     the drain of a 200,000-task backlog as a fraction of a 20,000-task drain run
              next to it (the `drain` setup: one worker, concurrency 500)
  producer    enqueue → handler start p50/p99 of probe tasks while producer processes
              enqueue 5,000 tasks/s into the same queue; the rates achieved, the backlog left
  processes   drain with 4 `pgqueue worker` processes vs 1
  idle        statements/s (counted on the wire) and transactions/s of an idle worker and
              of an idle API process (`pgqueue serve`, no clients)
  rss         worker RSS at concurrency 100
  http        `POST /tasks` with a bearer token, requests/s, and `POST /tasks/batch` tasks/s,
              one server process, load from bench/http_load.py in its own process
  longpoll    statements/s the database gets while 1,000 `POST /tasks?wait=30` are parked
  ws          bench/ws_latency.py: WebSocket p99 and server RSS with 1,000 subscribers (one
              server process) and 10,000 (`serve --workers 2`)
  floors      pgbench single-row durable INSERTs at 1 and 4 clients (the server's ceiling
              for one-at-a-time enqueues; the raw-SQL column of the peer rows is the other
              floor: the same client shape as the queues', bench/systems/rawsql_bench.py)
`--quick` shrinks every size for a smoke run of the harness (its numbers are not the targets').
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # moves into bench/.venv when started with plain python3
import extras

PEERS = ["pgqueuer", "procrastinate"]
PEER_NAMES = {"pgqueuer": "PGQueuer", "procrastinate": "Procrastinate"}
BENCHMARKS = [
    "enqueue",
    "bulk",
    "drain",
    "latency",
    "scale",
    "backlog",
    "producer",
    "processes",
    "idle",
    "rss",
    "http",
    "longpoll",
    "ws",
    "floors",
]


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is; --quick divides the work, not the method."""

    shrink: int  # compare.METRICS counts are divided by this
    finished: int  # scale: finished rows preloaded
    future: int  # scale: future-dated rows preloaded
    backlog: int  # backlog: tasks pre-queued (vs the drain benchmark's count)
    producer_rate: float  # producer: tasks/s enqueued by the concurrent producers
    producer_procs: int
    producer_batch: int  # tasks per producer call
    producer_concurrency: int  # the probed worker's
    probes: int
    drain: int  # processes: tasks
    idle_s: float
    rss_tasks: int
    http_s: float
    batch_calls: int
    waiters: int  # longpoll
    wait_s: float
    poll_window_s: float
    subscribers: int
    ws_tasks: int
    ws_pause: float
    big_subscribers: int  # ws, the second case (`serve --workers 2`)
    big_tasks: int
    big_pause: float


FULL = Sizes(
    shrink=1,
    finished=1_000_000,
    future=100_000,
    backlog=200_000,
    producer_rate=5000,
    producer_procs=1,
    producer_batch=50,
    producer_concurrency=500,
    probes=300,
    drain=20_000,
    idle_s=30,
    rss_tasks=5000,
    http_s=10,
    batch_calls=5,
    waiters=1000,
    wait_s=30,
    poll_window_s=15,
    subscribers=1000,
    ws_tasks=50,
    ws_pause=0.2,
    big_subscribers=10_000,
    big_tasks=20,
    big_pause=1.0,
)
QUICK = Sizes(
    shrink=5,
    finished=100_000,
    future=10_000,
    backlog=40_000,
    producer_rate=2000,
    producer_procs=1,
    producer_batch=50,
    producer_concurrency=500,
    probes=100,
    drain=5_000,
    idle_s=10,
    rss_tasks=2000,
    http_s=3,
    batch_calls=2,
    waiters=200,
    wait_s=15,
    poll_window_s=5,
    subscribers=100,
    ws_tasks=20,
    ws_pause=0.05,
    big_subscribers=1000,
    big_tasks=5,
    big_pause=0.5,
)

Results = dict[tuple[str, str], list[float]]  # (row key, system) -> one value per round


def compare_arg(metric: str, system: str, sizes: Sizes) -> str:
    arg = compare.METRICS[metric][0][system]
    return str(int(arg) // sizes.shrink) if arg.isdigit() else arg


class Runner:
    """Runs one round of each benchmark and files every figure under its row key."""

    def __init__(self, server: str, sizes: Sizes) -> None:
        self.server = server
        self.sizes = sizes
        self.results: Results = {}
        self.template: str | None = None

    def add(self, key: str, system: str, value: float | None) -> None:
        if value is not None:
            self.results.setdefault((key, system), []).append(value)

    def measure(self, what: str, fn: Callable[[], object]) -> object | None:
        """Run one measurement; a failure is reported and leaves its cell empty."""
        t0 = time.perf_counter()
        try:
            value = fn()
        except Exception as e:  # one failed figure must not lose the others
            extras.log(f"  {what}: FAILED {type(e).__name__}: {e}")
            return None
        extras.log(f"  {what}: {value} ({time.perf_counter() - t0:.0f} s)")
        return value

    def peer_metric(self, metric: str) -> None:
        this_round: dict[str, dict[str, float]] = {}
        for system in compare.METRICS[metric][0]:
            arg = compare_arg(metric, system, self.sizes)
            value = self.measure(
                f"{metric} {system}",
                lambda s=system, a=arg: compare.run_one(self.server, s, metric, a),
            )
            if isinstance(value, dict):
                for key in compare.METRICS[metric][1]:
                    self.add(f"{metric}.{key}", system, value[key])
                this_round[system] = value
        if metric == "drain" and {"pgqueue", compare.REFERENCE} <= this_round.keys():
            # the "≥ 60 % of the claim-100 floor", from the same round
            floor = this_round[compare.REFERENCE]["tasks_per_s"]
            self.add("drain.floor_ratio", "pgqueue", this_round["pgqueue"]["tasks_per_s"] / floor)

    def floors(self) -> None:
        """pgbench's single-row durable inserts at 1 and 4 clients: the server's own ceiling
        for one-at-a-time enqueues, with no Python client in the way."""
        for clients in (1, 4):
            value = self.measure(
                f"floors pgbench {clients}",
                lambda c=clients: extras.pgbench_inserts(self.server, c, self.sizes.http_s),
            )
            self.add(
                f"floors.pgbench_{clients}",
                compare.REFERENCE,
                value if isinstance(value, float) else None,
            )

    def scale(self, round_no: int) -> None:
        """A preloaded drain paired with an empty-table drain run next to it (a minute apart,
        the same round's `drain` would see another moment of a shared machine). Both copy
        their database with STRATEGY FILE_COPY (the empty one from template1), so both start
        right after the checkpoint that copy makes; the order flips every round."""
        arg = compare_arg("drain", "pgqueue", self.sizes)
        if self.template is None:
            self.template = extras.build_preloaded(
                self.server, self.sizes.finished, self.sizes.future
            )
        pair = [("empty", "template1"), ("preloaded", self.template)]
        rates = {}
        for name, template in pair if round_no % 2 == 0 else pair[::-1]:
            value = self.measure(
                f"scale {name}",
                lambda t=template: compare.run_one(
                    self.server, "pgqueue", "drain", arg, template=t
                ),
            )
            if isinstance(value, dict):
                rates[name] = value["tasks_per_s"]
        self.add("scale.tasks_per_s", "pgqueue", rates.get("preloaded"))
        if len(rates) == 2:
            self.add("scale.ratio", "pgqueue", rates["preloaded"] / rates["empty"])

    def backlog(self, round_no: int) -> None:
        """The drain benchmark's setup (one worker, concurrency 500, tasks pre-queued by
        bulk enqueue, not timed) with sizes.backlog tasks, paired with the drain benchmark's
        count run next to it; the order flips every round."""
        pair = [
            ("small", compare_arg("drain", "pgqueue", self.sizes)),
            ("backlog", str(self.sizes.backlog)),
        ]
        rates = {}
        for name, arg in pair if round_no % 2 == 0 else pair[::-1]:
            value = self.measure(
                f"backlog {name} ({int(arg):,})",
                lambda a=arg: compare.run_one(self.server, "pgqueue", "drain", a),
            )
            if isinstance(value, dict):
                rates[name] = value["tasks_per_s"]
        self.add("backlog.tasks_per_s", "pgqueue", rates.get("backlog"))
        self.add("backlog.small", "pgqueue", rates.get("small"))
        if len(rates) == 2:
            self.add("backlog.ratio", "pgqueue", rates["backlog"] / rates["small"])

    def producer(self) -> None:
        s = self.sizes
        value = self.measure(
            "producer",
            lambda: extras.producer_latency(
                self.server,
                s.producer_rate,
                s.producer_procs,
                s.producer_batch,
                s.producer_concurrency,
                s.probes,
            ),
        )
        if isinstance(value, dict):
            for key in ("p50_ms", "p99_ms", "produced_per_s", "completed_per_s", "pending_at_end"):
                self.add(f"producer.{key}", "pgqueue", value[key])

    def longpoll(self) -> None:
        s = self.sizes
        value = self.measure(
            "longpoll",
            lambda: extras.longpoll_cost(self.server, s.waiters, s.wait_s, s.poll_window_s),
        )
        if isinstance(value, dict):
            self.add("longpoll.statements", "pgqueue", value["statements_per_s"])
            self.add("longpoll.per_100", "pgqueue", value["per_100_waiters"])

    def processes(self) -> None:
        rates = {}
        for n in (1, 4):
            value = self.measure(
                f"processes {n}",
                lambda n=n: extras.processes_drain(self.server, n, self.sizes.drain),
            )
            if isinstance(value, float):
                rates[n] = value
                self.add(f"processes.{n}", "pgqueue", value)
        if len(rates) == 2:
            self.add("processes.ratio", "pgqueue", rates[4] / rates[1])

    def idle(self) -> None:
        value = self.measure("idle", lambda: extras.idle_cost(self.server, self.sizes.idle_s))
        if isinstance(value, dict):
            self.add("idle.statements", "pgqueue", value["statements_per_s"])
            self.add("idle.transactions", "pgqueue", value["transactions_per_s"])
        value = self.measure(
            "idle API", lambda: extras.api_idle_cost(self.server, self.sizes.idle_s)
        )
        if isinstance(value, dict):
            self.add("idle.api.statements", "pgqueue", value["statements_per_s"])
            self.add("idle.api.transactions", "pgqueue", value["transactions_per_s"])

    def rss(self) -> None:
        value = self.measure("rss", lambda: extras.worker_rss(self.server, self.sizes.rss_tasks))
        self.add("rss", "pgqueue", value if isinstance(value, float) else None)

    def http(self) -> None:
        single = self.measure(
            "http single", lambda: extras.http_single(self.server, self.sizes.http_s)
        )
        if isinstance(single, dict):
            for key in ("requests_per_s", "p50_ms", "p99_ms"):
                self.add(f"http.single.{key}", "pgqueue", single[key])
        batch = self.measure(
            "http batch", lambda: extras.http_batch(self.server, self.sizes.batch_calls)
        )
        if isinstance(batch, dict):
            self.add("http.batch.tasks_per_s", "pgqueue", batch["tasks_per_s"])
        if isinstance(single, dict) and isinstance(batch, dict):
            self.add("http.errors", "pgqueue", single["errors"] + batch["errors"])

    def ws(self) -> None:
        s = self.sizes
        cases = [
            ("ws", s.subscribers, s.ws_tasks, s.ws_pause, 1),
            ("ws.big", s.big_subscribers, s.big_tasks, s.big_pause, 2),
        ]
        for key, subscribers, tasks, pause, workers in cases:
            value = self.measure(
                f"ws {subscribers:,} subscribers, {workers} server process(es)",
                lambda n=subscribers, t=tasks, p=pause, w=workers: extras.websocket(
                    self.server, n, t, p, w
                ),
            )
            if isinstance(value, dict):
                for name in ("p50_ms", "p99_ms", "server_rss_mb"):
                    self.add(f"{key}.{name}", "pgqueue", value.get(name))
                if value.get("expected"):
                    self.add(f"{key}.delivered", "pgqueue", value["delivered"] / value["expected"])

    def round(self, chosen: list[str], round_no: int) -> None:
        for name in chosen:
            if name in compare.METRICS:
                self.peer_metric(name)
            elif name == "scale":
                self.scale(round_no)
            elif name == "backlog":
                self.backlog(round_no)
            else:
                getattr(self, name)()


@dataclass(frozen=True)
class Row:
    """One line of the table: which figure, whether peers have it, and its target."""

    label: str
    key: str
    peers: bool = False
    ours: bool = True  # False: a floor row, only the raw-SQL column has a figure
    target: Callable[[Results], tuple[str, float | None, bool]] | None = None
    # target(results) -> (text, threshold, higher_is_better)


def vs_best_peer(key: str, factor: float) -> Callable[[Results], tuple[str, float | None, bool]]:
    """factor x the best peer's median (higher is better)."""

    def target(results: Results) -> tuple[str, float | None, bool]:
        medians = {p: statistics.median(results[(key, p)]) for p in PEERS if (key, p) in results}
        if not medians:
            return "n/a", None, True
        best = max(medians, key=lambda p: medians[p])
        value = factor * medians[best]
        return f"≥ {value:,.0f} ({factor}× {PEER_NAMES[best]})", value, True

    return target


def at_least(value: float, text: str) -> Callable[[Results], tuple[str, float | None, bool]]:
    return lambda _: (f"≥ {text}", value, True)


def at_most(value: float, text: str) -> Callable[[Results], tuple[str, float | None, bool]]:
    return lambda _: (f"≤ {text}", value, False)


def rows(sizes: Sizes) -> list[Row]:
    n = {m: int(compare_arg(m, "pgqueue", sizes)) for m in ("enqueue", "bulk", "drain")}
    procrastinate_drain = int(compare_arg("drain", "procrastinate", sizes))
    return [
        Row(
            f"enqueue {n['enqueue']:,} one at a time, tasks/s",
            "enqueue.tasks_per_s",
            peers=True,
            target=vs_best_peer("enqueue.tasks_per_s", 1.2),
        ),
        Row(
            f"bulk enqueue of {n['bulk']:,}, tasks/s",
            "bulk.tasks_per_s",
            peers=True,
            target=vs_best_peer("bulk.tasks_per_s", 2),
        ),
        Row(
            f"drain {n['drain']:,} no-ops, one worker process, tasks/s "
            f"(Procrastinate: {procrastinate_drain:,})",
            "drain.tasks_per_s",
            peers=True,
            target=vs_best_peer("drain.tasks_per_s", 2),
        ),
        Row(
            "drain: pgqueue as a fraction of the raw-SQL claim-100 floor (same round)",
            "drain.floor_ratio",
            target=at_least(0.6, "0.60"),
        ),
        Row(
            "enqueue → handler start, p50 ms",
            "latency.p50_ms",
            peers=True,
            target=at_most(1, "1 ms"),
        ),
        Row(
            "enqueue → handler start, p99 ms",
            "latency.p99_ms",
            peers=True,
            target=at_most(2, "2 ms"),
        ),
        Row(
            f"HTTP `POST /tasks` with a bearer token, 32 connections, requests/s "
            f"({sizes.http_s:g} s)",
            "http.single.requests_per_s",
            target=at_least(3000, "3,000"),
        ),
        Row("HTTP `POST /tasks` latency p50 ms", "http.single.p50_ms"),
        Row("HTTP `POST /tasks` latency p99 ms", "http.single.p99_ms"),
        Row(
            f"HTTP `POST /tasks/batch` of 10,000, tasks/s ({sizes.batch_calls} calls)",
            "http.batch.tasks_per_s",
            target=at_least(20000, "20,000"),
        ),
        Row(
            "HTTP responses not 201 or dropped (single + batch)",
            "http.errors",
            target=at_most(0, "0"),
        ),
        Row(
            f"`POST /tasks?wait={sizes.wait_s:g}`, {sizes.waiters:,} parked waiters, nothing "
            f"changing: statements/s ({sizes.poll_window_s:g} s window)",
            "longpoll.statements",
        ),
        Row(
            "… per 100 waiters",
            "longpoll.per_100",
            target=at_most(1, "1"),
        ),
        Row(
            f"WebSocket commit → subscriber p50 ms, {sizes.subscribers:,} subscribers",
            "ws.p50_ms",
        ),
        Row(
            f"WebSocket commit → subscriber p99 ms, {sizes.subscribers:,} subscribers",
            "ws.p99_ms",
            target=at_most(20, "20 ms"),
        ),
        Row("WebSocket messages delivered / expected", "ws.delivered", target=at_least(1, "1")),
        Row(
            f"API RSS MB with {sizes.subscribers:,} subscribers",
            "ws.server_rss_mb",
            target=at_most(150, "150 MB"),
        ),
        Row(
            f"WebSocket commit → subscriber p50 ms, {sizes.big_subscribers:,} subscribers, "
            "`serve --workers 2`",
            "ws.big.p50_ms",
        ),
        Row(
            f"WebSocket commit → subscriber p99 ms, {sizes.big_subscribers:,} subscribers",
            "ws.big.p99_ms",
            target=at_most(250, "250 ms"),
        ),
        Row(
            f"… delivered / expected, {sizes.big_subscribers:,} subscribers",
            "ws.big.delivered",
            target=at_least(1, "1"),
        ),
        Row(
            f"API RSS MB with {sizes.big_subscribers:,} subscribers (both server processes)",
            "ws.big.server_rss_mb",
            target=at_most(500, "500 MB"),
        ),
        Row(
            f"drain {n['drain']:,} with {sizes.finished:,} finished + {sizes.future:,} "
            "future rows, tasks/s",
            "scale.tasks_per_s",
        ),
        Row(
            "… as a fraction of an empty-table drain run next to it",
            "scale.ratio",
            target=at_least(0.9, "0.90"),
        ),
        Row(
            f"drain {sizes.backlog:,} pre-queued, one worker process, tasks/s",
            "backlog.tasks_per_s",
        ),
        Row(f"drain {n['drain']:,} next to it, tasks/s", "backlog.small"),
        Row(
            f"… {sizes.backlog:,} as a fraction of {n['drain']:,} (same round)",
            "backlog.ratio",
            target=at_least(0.9, "0.90"),
        ),
        Row(
            f"enqueue → handler start p50 ms, under a {sizes.producer_rate:,.0f} tasks/s "
            f"producer (batches of {sizes.producer_batch}; worker concurrency "
            f"{sizes.producer_concurrency})",
            "producer.p50_ms",
        ),
        Row(
            "enqueue → handler start p99 ms, under that producer",
            "producer.p99_ms",
            target=at_most(5, "5 ms"),
        ),
        Row(
            "… tasks/s the producer achieved over the probe window",
            "producer.produced_per_s",
            target=at_least(0.95 * sizes.producer_rate, f"{0.95 * sizes.producer_rate:,.0f}"),
        ),
        Row("… tasks/s the worker completed over the window", "producer.completed_per_s"),
        Row("… tasks still pending when the probes ended", "producer.pending_at_end"),
        Row(
            f"drain {sizes.drain:,}, 1 `pgqueue worker` process, tasks/s "
            "(from resume; start-up excluded)",
            "processes.1",
        ),
        Row(f"drain {sizes.drain:,}, 4 `pgqueue worker` processes, tasks/s", "processes.4"),
        Row("4 processes vs 1 (same round)", "processes.ratio", target=at_least(1.6, "1.6×")),
        Row(
            f"idle worker, statements/s (counted on the wire; {sizes.idle_s:g} s window)",
            "idle.statements",
            target=at_most(0.5, "0.5"),
        ),
        Row("idle worker, transactions/s (pg_stat_database)", "idle.transactions"),
        Row(
            f"idle API process (`pgqueue serve`, no clients), statements/s "
            f"({sizes.idle_s:g} s window)",
            "idle.api.statements",
            target=at_most(0.5, "0.5"),
        ),
        Row("idle API process, transactions/s (pg_stat_database)", "idle.api.transactions"),
        Row(
            f"floor: pgbench single-row durable INSERTs, 1 client, rows/s ({sizes.http_s:g} s)",
            "floors.pgbench_1",
            ours=False,
        ),
        Row(
            f"floor: pgbench single-row durable INSERTs, 4 clients, rows/s ({sizes.http_s:g} s)",
            "floors.pgbench_4",
            ours=False,
        ),
        Row(
            f"worker RSS MB, concurrency 100, after {sizes.rss_tasks:,} tasks",
            "rss",
            target=at_most(150, "150 MB"),
        ),
    ]


def table(results: Results, sizes: Sizes, chosen: list[str]) -> str:
    """The markdown table: every row of the chosen benchmarks; n/a where a figure is missing
    (the measurement failed or, for ws, bench/ws_latency.py printed no JSON; stderr says)."""
    lines = [
        "| metric | pgqueue | PGQueuer | Procrastinate | raw SQL (no queue) | target | met? |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows(sizes):
        if row.key.split(".")[0] not in chosen:
            continue
        ours = results.get((row.key, "pgqueue"))
        cells = [compare.cell(ours) if ours else "n/a" if row.ours else "—"]
        for peer in PEERS:
            values = results.get((row.key, peer))
            cells.append(compare.cell(values) if values else "n/a" if row.peers else "—")
        floor = results.get((row.key, compare.REFERENCE))
        cells.append(compare.cell(floor) if floor else "—")
        text, met = "—", "—"
        if row.target is not None:
            text, threshold, higher = row.target(results)
            if threshold is None or not ours:
                met = "n/a"
            else:
                median = statistics.median(ours)
                met = (
                    "**yes**" if (median >= threshold if higher else median <= threshold) else "no"
                )
        lines.append(f"| {row.label} | " + " | ".join([*cells, text, met]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated benchmarks")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    chosen = [b for b in args.only.split(",") if b]
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {BENCHMARKS}")
    sizes = QUICK if args.quick else FULL
    runner = Runner(args.dsn, sizes)
    t0 = time.perf_counter()
    try:
        for round_no in range(args.rounds):
            extras.log(f"round {round_no + 1} of {args.rounds}")
            runner.round(chosen, round_no)
    finally:
        if runner.template is not None:  # the preloaded copy is the one big database
            compare.drop_database(args.dsn, runner.template)
    extras.log(
        f"{args.rounds} round(s){' (--quick)' if args.quick else ''} in "
        f"{time.perf_counter() - t0:.0f} s; median (min–max) over rounds"
    )
    print(table(runner.results, sizes, chosen))


if __name__ == "__main__":
    main()
