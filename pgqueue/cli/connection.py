"""How a one-shot command talks to the database: one connection, opened for the work and
closed after it (no pool: a command makes a few statements and exits)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pgqueue.db.pool import connect
from pgqueue.db.rows import Conn

T = TypeVar("T")


def on_database(dsn: str, work: Callable[[Conn], Awaitable[T]]) -> T:
    """Run ``work`` on a new connection to ``dsn``, from a synchronous command; its result."""

    async def main() -> T:
        conn = await connect(dsn)
        async with conn:
            return await work(conn)

    return asyncio.run(main())
