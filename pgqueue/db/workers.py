"""The workers' heartbeat rows as operators see them (``GET /workers``, ``pgqueue status``)."""

from __future__ import annotations

from pgqueue.db.queries import QUERIES
from pgqueue.db.rows import Conn
from pgqueue.stats import WorkerStatus


async def live(conn: Conn) -> list[WorkerStatus]:
    """Every worker with a heartbeat row, local and remote, by id."""
    cur = await conn.execute(QUERIES["stats_workers"])
    return [WorkerStatus(*row) for row in await cur.fetchall()]
