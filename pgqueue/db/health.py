"""Health probes that read the database (the HTTP ones live in ``api/health.py``)."""

from __future__ import annotations

from typing import Any

import psycopg

from pgqueue.db.queries import QUERIES


async def live_workers_on_host(
    conn: psycopg.AsyncConnection[Any], host: str, stall_s: float
) -> int:
    """How many workers of ``host`` heartbeated within ``stall_s`` seconds."""
    cur = await conn.execute(
        QUERIES["worker_count_alive_on_host"], {"host": host, "stall_s": stall_s}
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0
