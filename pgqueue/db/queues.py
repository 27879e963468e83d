"""Queue settings (``sql/queries/queue_admin.sql``): pause, resume, the concurrency limit and
the §12 limits, applied the same way by ``PATCH /queues/{name}`` and ``pgqueue queue``.

The rules live in SQL (``pgqueue.pause_queue`` and friends), so psql users get them too.
"""

from __future__ import annotations

from typing import Any, LiteralString

from pgqueue.db import limits
from pgqueue.db.errors import translated
from pgqueue.db.queries import QUERIES
from pgqueue.db.rows import Conn
from pgqueue.errors import InvalidInput
from pgqueue.limits import QueueSettings

SETTINGS = ("paused", "concurrency_limit")
"""What ``configure`` sets itself; every other key is a §12 limit (``db.limits.set_queue``)."""


async def set_paused(conn: Conn, queue: str, paused: bool) -> QueueSettings:
    """Stop (or start again) claiming from ``queue``, across all workers."""
    query = QUERIES["queue_pause"] if paused else QUERIES["queue_resume"]
    return await _settings(conn, query, {"queue": queue})


async def set_concurrency_limit(conn: Conn, queue: str, limit: int | None) -> QueueSettings:
    """At most ``limit`` tasks of ``queue`` running at once, across all workers (None: none)."""
    return await _settings(conn, QUERIES["queue_set_limit"], {"queue": queue, "limit": limit})


async def configure(conn: Conn, queue: str, changes: dict[str, Any]) -> QueueSettings:
    """Apply ``changes`` (``paused``, ``concurrency_limit`` and the §12 settings of
    ``db.limits.set_queue``) to ``queue`` in one transaction; the settings row after them."""
    if not changes:
        raise InvalidInput("settings", "give at least one setting")
    row: QueueSettings | None = None
    async with conn.transaction():
        if "paused" in changes:
            row = await set_paused(conn, queue, changes["paused"])
        if "concurrency_limit" in changes:
            row = await set_concurrency_limit(conn, queue, changes["concurrency_limit"])
        rest = {k: v for k, v in changes.items() if k not in SETTINGS}
        if rest:
            row = await limits.set_queue(conn, queue, rest)
    assert row is not None
    return row


async def _settings(conn: Conn, query: LiteralString, params: dict[str, Any]) -> QueueSettings:
    with translated():
        cur = await conn.execute(query, params)
        row = await cur.fetchone()
    assert row is not None  # every queue_* statement returns the settings row
    return QueueSettings.from_row(row)
