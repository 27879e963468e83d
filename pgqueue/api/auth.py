"""Bearer tokens and the principal they stand for (SPEC §4, Auth).

Tokens are random 256-bit strings; the database keeps only their SHA-256
(``sql/migrations/0002_api_tokens.sql``). The server remembers a looked-up token for a few
seconds (``CACHE_TTL_S``), so an authenticated request costs no query on the hot path; a
revoked token stops working within that time.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import secrets
import time
from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from psycopg_pool import AsyncConnectionPool

from pgqueue.db.queries import QUERIES

TOKEN_PREFIX = "pgq_"  # noqa: S105 -- a fixed prefix that makes tokens greppable, not a secret
# How long a looked-up token is trusted without asking the database again, i.e. how long a
# revoked token may keep working in a server that saw it just before (`pgqueue token revoke`
# says so). Without the cache every request cost an UPDATE ... RETURNING and its commit.
CACHE_TTL_S = 10.0
_CACHE_MAX = 10_000


class Role(enum.StrEnum):
    """admin: everything; user: own tasks only; worker: claim and report, read any task."""

    ADMIN = "admin"
    USER = "user"
    WORKER = "worker"


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: the token's user and role."""

    user_id: str | None
    role: Role
    # The token's row id: a remote worker's leases are bound to the token that claimed them.
    token_id: int | None = None

    @property
    def sees_all(self) -> bool:
        """Admins and workers read every task; a user reads their own."""
        return self.role is not Role.USER

    def may_read(self, owner: str | None) -> bool:
        return self.sees_all or (owner is not None and owner == self.user_id)

    def may_act_on(self, owner: str | None) -> bool:
        """Cancel and retry: admins on any task, users on their own."""
        if self.role is Role.ADMIN:
            return True
        return self.role is Role.USER and owner is not None and owner == self.user_id


INSECURE = Principal(user_id=None, role=Role.ADMIN)


class TokenInfo(msgspec.Struct, frozen=True):
    """A row of ``pgqueue.api_tokens`` without its hash (what `pgqueue token list` shows)."""

    id: int
    prefix: str
    user_id: str
    role: str
    note: str | None
    created_at: Any
    last_used_at: Any
    revoked_at: Any


def new_token() -> str:
    """A fresh token: ``pgq_`` and 43 URL-safe characters (256 random bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class Authenticator:
    """Token → principal, with a short in-memory cache. ``insecure``: everyone is admin.

    Only valid tokens are cached (for ``CACHE_TTL_S``): an unknown token is asked about
    every time, so a token works as soon as it is created. Concurrent requests with the same
    uncached token share one lookup — when the entry expires under load, 32 requests would
    otherwise each UPDATE the same row and queue on its lock and commit.
    """

    def __init__(
        self, pool: AsyncConnectionPool, *, insecure: bool = False, ttl_s: float = CACHE_TTL_S
    ) -> None:
        self._pool = pool
        self.insecure = insecure
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._lookups: dict[str, asyncio.Task[Principal | None]] = {}
        self.lookups = 0  # database lookups made (tests read it)

    async def authenticate(self, token: str | None) -> Principal:
        """The principal of ``token``; ``NotAuthorizedException`` (401) when it is not valid."""
        if self.insecure:
            return INSECURE
        if not token:
            raise NotAuthorizedException("Authorization: a 'Bearer <token>' header is required")
        digest = token_hash(token)
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        lookup = self._lookups.get(digest)
        if lookup is None:
            # A task of its own (shielded below): a caller that goes away does not cancel
            # the lookup the others are waiting for.
            lookup = asyncio.create_task(self._lookup(digest), name="pgqueue-token-lookup")
            self._lookups[digest] = lookup
            lookup.add_done_callback(lambda done: self._looked_up(digest, done))
        principal = await asyncio.shield(lookup)
        if principal is None:
            raise NotAuthorizedException("Authorization: the token is unknown or revoked")
        return principal

    def _looked_up(self, digest: str, done: asyncio.Task[Principal | None]) -> None:
        del self._lookups[digest]
        if not done.cancelled():
            done.exception()  # its waiters raise it; retrieved even when none is left

    async def _lookup(self, digest: str) -> Principal | None:
        """Ask the database; cache the principal of a live token, forget a dead one."""
        self.lookups += 1
        async with self._pool.connection() as conn:
            cur = await conn.execute(QUERIES["api_token_authenticate"], {"token_hash": digest})
            row = await cur.fetchone()
        if row is None:
            self._cache.pop(digest, None)
            return None
        principal = Principal(user_id=row[0], role=Role(row[1]), token_id=row[2])
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (principal, time.monotonic() + self.ttl_s)
        return principal

    async def of_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
        """The caller of an HTTP request or WebSocket: header, or ``?token=`` for browsers."""
        token = bearer(connection.headers.get("authorization"))
        if token is None:
            token = connection.query_params.get("token")
        return await self.authenticate(token)


def require(principal: Principal, *roles: Role) -> None:
    """403 unless the principal has one of ``roles`` (the role is wrong, not the task)."""
    if principal.role not in roles:
        allowed = " or ".join(r.value for r in roles)
        raise PermissionDeniedException(f"role: this needs a {allowed} token, not {principal.role}")
