"""The database clock (``clock_now``): every scheduling decision and every status snapshot
is taken in its time, never a client's."""

from __future__ import annotations

from datetime import datetime

from pgqueue.db.queries import QUERIES
from pgqueue.db.rows import Conn


async def now(conn: Conn) -> datetime:
    """``now()`` of the connection's transaction."""
    cur = await conn.execute(QUERIES["clock_now"])
    row = await cur.fetchone()
    assert row is not None
    clock: datetime = row[0]
    return clock
