"""Schema migrations: numbered, append-only, recorded, applied under an advisory lock.

``sql/migrations/NNNN_name.sql`` run once each, in order, each in its own transaction and
recorded in ``pgqueue.migrations``. Then ``sql/functions/*.sql`` and ``sql/views/*.sql`` are
re-applied (``CREATE OR REPLACE``), so each function and view is defined in exactly one file.
Two processes migrating at once queue on the advisory lock (held per transaction, so it is
safe through PgBouncer); the second finds nothing to do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg

from pgqueue.db.sql_files import sql_dir

# An arbitrary, fixed key: "pgqueue" in ASCII, so psql users can spot it in pg_locks.
ADVISORY_LOCK_KEY = 0x7067717565756500

_VERSION = re.compile(r"^(\d{4})_[\w-]+\.sql$")


def migration_files() -> list[tuple[int, Path]]:
    """The migrations in order, with their version numbers."""
    found: list[tuple[int, Path]] = []
    for path in (sql_dir() / "migrations").glob("*.sql"):
        match = _VERSION.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name} is not named NNNN_description.sql")
        found.append((int(match.group(1)), path))
    found.sort()
    versions = [v for v, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations share a number: {versions}")
    return found


def latest_version() -> int:
    files = migration_files()
    return files[-1][0] if files else 0


def _sql(path: Path) -> bytes:
    # Our own files, shipped with the package: safe to run as they are.
    return path.read_bytes()


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    """Bring the schema up to date; return the names of the migrations applied now.

    Each step is one transaction that first takes a transaction-level advisory lock: a
    session lock would be wrong through PgBouncer in transaction mode (the unlock may reach
    another server session, and the lock would outlive ``migrate`` on the one it was taken).
    """
    applied_now: list[str] = []
    await conn.set_autocommit(True)
    async with conn.transaction():
        await _lock(conn)
        await conn.execute(
            "CREATE SCHEMA IF NOT EXISTS pgqueue;"
            "CREATE TABLE IF NOT EXISTS pgqueue.migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
    for version, path in migration_files():
        async with conn.transaction():
            await _lock(conn)
            # Checked under the lock: a racing migrate may have applied it meanwhile.
            cur = await conn.execute(
                "SELECT 1 FROM pgqueue.migrations WHERE version = %s", (version,)
            )
            if await cur.fetchone() is not None:
                continue
            await conn.execute(_sql(path))
            await conn.execute(
                "INSERT INTO pgqueue.migrations (version, name) VALUES (%s, %s)",
                (version, path.name),
            )
        applied_now.append(path.name)
    for folder in ("functions", "views"):
        for path in sorted((sql_dir() / folder).glob("*.sql")):
            async with conn.transaction():
                await _lock(conn)
                await conn.execute(_sql(path))
    return applied_now


async def _lock(conn: psycopg.AsyncConnection[Any]) -> None:
    """Queue behind any other migrate until this transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))


async def current_version(conn: psycopg.AsyncConnection[Any]) -> int:
    """The highest applied migration, 0 when pgqueue was never migrated here."""
    cur = await conn.execute("SELECT to_regclass('pgqueue.migrations') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM pgqueue.migrations")
    row = await cur.fetchone()
    return int(row[0]) if row else 0
