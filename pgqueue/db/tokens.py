"""API tokens (``sql/queries/api_token.sql``): made and revoked by ``pgqueue token``,
looked up by the HTTP server (``api/auth.py``)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from pgqueue.db.errors import translated
from pgqueue.db.queries import QUERIES
from pgqueue.db.rows import Conn


class TokenInfo(msgspec.Struct, frozen=True):
    """A row of ``pgqueue.api_tokens`` without its hash (what `pgqueue token list` shows)."""

    id: int
    prefix: str
    user_id: str
    role: str
    note: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenOwner(msgspec.Struct, frozen=True):
    """Who a live token acts as."""

    user_id: str
    role: str
    token_id: int


async def insert(
    conn: Conn, *, token_hash: str, prefix: str, user_id: str, role: str, note: str | None
) -> TokenInfo:
    """Store a new token (only its hash and prefix)."""
    with translated():
        cur = await conn.execute(
            QUERIES["api_token_insert"],
            {
                "token_hash": token_hash,
                "prefix": prefix,
                "user_id": user_id,
                "role": role,
                "note": note,
            },
        )
        row = await cur.fetchone()
    assert row is not None  # INSERT ... RETURNING
    return TokenInfo(*row)


async def authenticate(conn: Conn, token_hash: str) -> TokenOwner | None:
    """The owner of the live token with this hash (None: unknown or revoked)."""
    cur = await conn.execute(QUERIES["api_token_authenticate"], {"token_hash": token_hash})
    row = await cur.fetchone()
    return None if row is None else TokenOwner(*row)


async def list_all(conn: Conn) -> list[TokenInfo]:
    """Every token, newest first, revoked ones too."""
    cur = await conn.execute(QUERIES["api_token_list"])
    return [TokenInfo(*row) for row in await cur.fetchall()]


async def revoke(conn: Conn, ref: str) -> list[TokenInfo]:
    """Revoke the live tokens whose id or prefix is ``ref``; the ones revoked now."""
    cur = await conn.execute(QUERIES["api_token_revoke"], {"ref": ref})
    return [TokenInfo(*row) for row in await cur.fetchall()]


async def count_live(conn: Conn) -> int:
    """How many tokens can still authenticate."""
    cur = await conn.execute(QUERIES["api_token_count_live"])
    row = await cur.fetchone()
    return int(row[0]) if row else 0
