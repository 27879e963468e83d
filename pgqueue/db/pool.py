"""Connections: how every pgqueue connection is configured, and the pool factory.

Every connection must work through PgBouncer in ``pool_mode = transaction`` (SPEC §17), where
consecutive transactions of one client may run on different server sessions. So nothing here
relies on session state:

- no startup ``options`` (PgBouncer refuses them) and no session-level ``SET``;
- timestamps come back as UTC datetimes whatever the server's ``TimeZone`` (the loaders below
  convert; the SQL that renders timestamps into JSON does so in UTC explicitly), so the API
  still speaks RFC 3339 UTC;
- named prepared statements only when the connection is a real server session: a pooler is
  detected at connect (``uses_pooler``) and then psycopg sends unnamed statements only.

JSON is decoded with msgspec (the row factories in ``rows.py`` build typed Structs). Pool
connections are autocommit: a single statement is its own transaction; several statements
use ``async with conn.transaction()``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
from psycopg import abc
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

# Server-side prepared statements for repeated queries (psycopg prepares a statement after 5
# uses by default; 2 gets the hot path prepared sooner). Turned off per connection behind a
# pooler: PgBouncer 1.18 in transaction mode does not keep them across transactions.
PREPARE_THRESHOLD = 2

CONNECT_KWARGS: dict[str, Any] = {
    "autocommit": True,
    "prepare_threshold": PREPARE_THRESHOLD,
}

_TIMESTAMPTZ_OID = 1184
_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "GMT", "Etc/GMT", "UCT", "Etc/UCT", "Zulu"})


def _json_loads(data: str | bytes) -> Any:
    return msgspec.json.decode(data)


def _utc_loader(base: type[abc.Loader]) -> type[Loader]:
    """A loader that runs ``base`` (psycopg's timestamptz loader) and converts to UTC."""

    class UtcLoader(Loader):
        format = base.format

        def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
            super().__init__(oid, context)
            self._inner = base(oid, context)

        def load(self, data: Buffer) -> datetime:
            value: datetime = self._inner.load(data)
            return value.astimezone(UTC)

    return UtcLoader


async def uses_pooler(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether ``conn`` goes through a connection pooler rather than to a server session.

    A pooler answers the startup with a backend key of its own (it must route cancel
    requests itself), so the pid the client was told differs from the server backend's.
    """
    cur = await conn.execute("SELECT pg_backend_pid()", prepare=False)
    row = await cur.fetchone()
    return row is None or int(row[0]) != conn.info.backend_pid


async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
    """Per-connection setup: msgspec JSON both ways, UTC datetimes, no prepares via a pooler."""
    set_json_loads(_json_loads, conn)
    set_json_dumps(msgspec.json.encode, conn)
    if getattr(conn.info.timezone, "key", None) not in _UTC_NAMES:
        # The server's TimeZone is not UTC (pgqueue sets none: that would be session state).
        # psycopg would return datetimes in that zone; convert them (cost paid only here).
        for fmt in (Format.TEXT, Format.BINARY):
            base = conn.adapters.get_loader(_TIMESTAMPTZ_OID, fmt)
            if base is not None:
                conn.adapters.register_loader(_TIMESTAMPTZ_OID, _utc_loader(base))
    if conn.prepare_threshold is not None and await uses_pooler(conn):
        conn.prepare_threshold = None


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
