"""Connections: how every pgqueue connection is configured, and the pool factory.

All connections speak UTC (timestamps are RFC 3339 UTC end to end) and decode JSON
with msgspec (the row factories in ``rows.py`` build typed Structs). Pool connections are
autocommit: a single
statement is its own transaction; several statements use ``async with conn.transaction()``.
"""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

CONNECT_KWARGS: dict[str, Any] = {
    "autocommit": True,
    # Server-side prepared statements for repeated queries (psycopg prepares a statement
    # after 5 uses by default; 2 gets the hot path prepared sooner). Set PGQUEUE_DSN to a
    # pgbouncer in transaction mode? Then pass prepare_threshold=None.
    "prepare_threshold": 2,
    "options": "-c TimeZone=UTC",
}


def _json_loads(data: str | bytes) -> Any:
    return msgspec.json.decode(data)


async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
    """Per-connection adapters: msgspec JSON both ways (no round trip needed)."""
    set_json_loads(_json_loads, conn)
    set_json_dumps(msgspec.json.encode, conn)


async def connect(dsn: str, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
    """One configured connection outside any pool (CLI, migrations, tests)."""
    conn = await psycopg.AsyncConnection.connect(dsn, **{**CONNECT_KWARGS, **kwargs})
    await configure(conn)
    return conn


def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> AsyncConnectionPool:
    """A pool, not yet open: open it in a lifespan (``await pool.open()``)."""
    return AsyncConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        kwargs=CONNECT_KWARGS,
        configure=configure,
        open=False,
        name="pgqueue",
    )
