"""Where an enqueue runs its statements: a caller's connection (inside its transaction), or
one from a pool taken only once the input is validated (no connection is held while a
callback URL's host is resolved)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager

from psycopg_pool import AsyncConnectionPool

from pgqueue.db.rows import Conn

Connect = Callable[[], AbstractAsyncContextManager[Conn]]
"""Gives the connection to enqueue on, when the enqueue needs it."""


def connect(pool: AsyncConnectionPool | None, conn: Conn | None = None) -> Connect:
    """``conn`` if given (the caller's transaction is ours), else a connection of ``pool``."""

    @contextlib.asynccontextmanager
    async def connection() -> AsyncGenerator[Conn]:
        if conn is not None:
            yield conn
        elif pool is None:
            raise RuntimeError("no connection to enqueue on: give a pool or a connection")
        else:
            async with pool.connection() as pooled:
                yield pooled

    return connection
