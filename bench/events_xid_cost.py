"""Per-row cost of migration 0011's ``events.xid``: ``python bench/events_xid_cost.py DSN``.

An audit-row-shaped table with and without the column's default (``pg_current_xact_id()``)
and its b-tree, 10 x 20,000-row ``INSERT ... SELECT`` each, 5 interleaved rounds; prints the
median and range in microseconds per row.
"""

from __future__ import annotations

import statistics
import sys
import time

import psycopg

TABLE = (
    "CREATE TABLE bench_xid (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " task_id uuid NOT NULL, event text NOT NULL, at timestamptz NOT NULL DEFAULT now(),"
    " xid xid8 {default}); CREATE INDEX ON bench_xid (task_id, id)"
)
WITH_XID = "; CREATE INDEX ON bench_xid (xid)"
INSERT = (
    "INSERT INTO bench_xid (task_id, event)"
    " SELECT gen_random_uuid(), 'created' FROM generate_series(1, 20000)"
)


def main(dsn: str) -> None:
    results: dict[bool, list[float]] = {False: [], True: []}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(5):
            for with_xid in (False, True):
                conn.execute("DROP TABLE IF EXISTS bench_xid")
                if with_xid:
                    conn.execute(TABLE.format(default="DEFAULT pg_current_xact_id()") + WITH_XID)
                else:
                    conn.execute(TABLE.format(default=""))
                started = time.perf_counter()
                for _ in range(10):
                    conn.execute(INSERT)
                results[with_xid].append((time.perf_counter() - started) / 200_000 * 1e6)
        conn.execute("DROP TABLE bench_xid")
    for with_xid, times in results.items():
        label = "with xid" if with_xid else "without"
        print(f"{label}: {statistics.median(times):.2f} us/row ({min(times):.2f}-{max(times):.2f})")


if __name__ == "__main__":
    main(sys.argv[1])
