"""Bearer tokens and the principal they stand for (SPEC §4, Auth).

Tokens are random 256-bit strings; the database keeps only their SHA-256
(``sql/migrations/0002_api_tokens.sql``). The server remembers a looked-up token for a few
seconds (``CACHE_TTL_S``), so an authenticated request costs no query on the hot path; a
revoked token stops working within that time. It remembers a refused token as long, so a
bad token costs the database one read per ``CACHE_TTL_S`` and no write at all.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import re
import secrets
import time
from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from psycopg_pool import AsyncConnectionPool

from pgqueue.db import tokens

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


# Routes where a browser cannot set a header and so may pass ``?token=``: the WebSocket and
# the Server-Sent Events streams (SPEC §4). Anywhere else a token in the URL would end up
# in access logs and browser history, so it is not looked at.
QUERY_TOKEN_PATHS = re.compile(r"/ws|/stream|/tasks/[^/]+/stream")
# A token pgqueue made is "pgq_" + 43 characters; anything much longer is not one of ours and
# is refused without hashing it or asking the database.
_TOKEN_MAX_CHARS = 128


class Authenticator:
    """Token → principal, with short in-memory caches. ``insecure``: everyone is admin.

    A valid token's principal is cached for ``ttl_s`` (a revoked token keeps working that
    long); so is the verdict on an unknown or revoked token (negative cache), so a client
    hammering with a bad token costs the database one read per ``ttl_s``, and never a write.
    A newly created token is unknown to no cache, so it works at once. Concurrent requests
    with the same uncached token share one lookup — when an entry expires under load, 32
    requests would otherwise each queue for a pool connection.
    """

    def __init__(
        self, pool: AsyncConnectionPool, *, insecure: bool = False, ttl_s: float = CACHE_TTL_S
    ) -> None:
        self._pool = pool
        self.insecure = insecure
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[Principal, float]] = {}
        # digest -> expiry, oldest first: bounded by evicting the oldest, so random tokens
        # cannot flush the verdicts on the tokens that keep coming back
        self._refused: dict[str, float] = {}
        self._lookups: dict[str, asyncio.Task[Principal | None]] = {}
        self.lookups = 0  # database lookups made (tests read it)

    async def authenticate(self, token: str | None) -> Principal:
        """The principal of ``token``; ``NotAuthorizedException`` (401) when it is not valid."""
        if self.insecure:
            return INSECURE
        if not token:
            raise NotAuthorizedException("Authorization: a 'Bearer <token>' header is required")
        if not token.startswith(TOKEN_PREFIX) or len(token) > _TOKEN_MAX_CHARS:
            raise NotAuthorizedException("Authorization: the token is unknown or revoked")
        digest = token_hash(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        refused_until = self._refused.get(digest)
        if refused_until is not None and refused_until > now:
            raise NotAuthorizedException("Authorization: the token is unknown or revoked")
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
        """Ask the database; cache the verdict, positive or negative, for ``ttl_s``."""
        self.lookups += 1
        async with self._pool.connection() as conn:
            owner = await tokens.authenticate(conn, digest)
        expires = time.monotonic() + self.ttl_s
        if owner is None:
            self._cache.pop(digest, None)
            self._refused.pop(digest, None)  # re-insert at the young end
            if len(self._refused) >= _CACHE_MAX:
                del self._refused[next(iter(self._refused))]
            self._refused[digest] = expires
            return None
        principal = Principal(user_id=owner.user_id, role=Role(owner.role), token_id=owner.token_id)
        self._refused.pop(digest, None)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (principal, expires)
        return principal

    async def of_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
        """The caller of an HTTP request or WebSocket: the ``Authorization`` header, or
        ``?token=`` on the routes of ``QUERY_TOKEN_PATHS`` only."""
        token = bearer(connection.headers.get("authorization"))
        if token is None and QUERY_TOKEN_PATHS.fullmatch(connection.scope["path"]):
            token = connection.query_params.get("token")
        return await self.authenticate(token)


def require(principal: Principal, *roles: Role) -> None:
    """403 unless the principal has one of ``roles`` (the role is wrong, not the task)."""
    if principal.role not in roles:
        allowed = " or ".join(r.value for r in roles)
        raise PermissionDeniedException(f"role: this needs a {allowed} token, not {principal.role}")
