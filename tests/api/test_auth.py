"""The token cache (pgqueue/api/auth.py): what it saves, and how soon a revoked token stops.

Revocation is not instant in a running server: a token it looked up in the last
``CACHE_TTL_S`` seconds keeps working until its entry expires. These tests pin that bound,
and that a refused token is remembered as long (the negative cache)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import psycopg
import pytest
from litestar.exceptions import NotAuthorizedException

from pgqueue.api.auth import CACHE_TTL_S, Authenticator, Role
from pgqueue.queue import Queue
from tests.api.conftest import Api, create_token
from tests.helpers import ROOT


def revoke(dsn: str, token: str) -> None:
    """`pgqueue token revoke PREFIX`, as an operator would."""
    subprocess.run(
        [sys.executable, "-m", "pgqueue", "token", "revoke", token[:10], "--dsn", dsn],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


async def test_revoked_token_is_refused_within_the_cache_ttl(api: Api, dsn: str) -> None:
    async with api.http(api.tokens.bob) as c:
        assert (await c.get("/tasks")).status_code == 200  # now cached
        revoke(dsn, api.tokens.bob)
        revoked_at = time.monotonic()
        while (r := await c.get("/tasks")).status_code == 200:
            assert time.monotonic() - revoked_at < CACHE_TTL_S + 2, "revoked token still works"
            await asyncio.sleep(0.2)
        assert r.status_code == 401 and "revoked" in r.json()["detail"]
        await asyncio.sleep(CACHE_TTL_S / 2)
        assert (await c.get("/tasks")).status_code == 401  # and stays refused


async def test_short_ttl_revocation_and_negative_caching(queue: Queue, dsn: str) -> None:
    auth = Authenticator(queue.pool, ttl_s=0.3)
    token = await create_token(dsn, "carol", "user")
    principal = await auth.authenticate(token)
    assert principal.user_id == "carol" and principal.role is Role.USER
    await auth.authenticate(token)
    assert auth.lookups == 1  # the second came from the cache
    revoke(dsn, token)
    await asyncio.sleep(0.4)
    for _ in range(3):  # refused once by the database, then by the negative cache
        with pytest.raises(NotAuthorizedException):
            await auth.authenticate(token)
    assert auth.lookups == 2
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE pgqueue.api_tokens SET revoked_at = NULL")
    with pytest.raises(NotAuthorizedException):  # the verdict stands for the TTL...
        await auth.authenticate(token)
    await asyncio.sleep(0.4)
    assert (await auth.authenticate(token)).user_id == "carol"  # ...and no longer
    # a token never looked up before is in no cache: it works as soon as it exists
    fresh = await create_token(dsn, "carol2", "user")
    assert (await auth.authenticate(fresh)).user_id == "carol2"


async def test_concurrent_requests_share_one_lookup(queue: Queue, dsn: str) -> None:
    auth = Authenticator(queue.pool)
    token = await create_token(dsn, "dave", "admin")
    principals = await asyncio.gather(*(auth.authenticate(token) for _ in range(32)))
    assert {p.user_id for p in principals} == {"dave"}
    assert auth.lookups == 1
    with pytest.raises(NotAuthorizedException):  # and for an invalid token, one refusal each
        await asyncio.gather(*(auth.authenticate("pgq_nope") for _ in range(8)))
    assert auth.lookups == 2


async def test_a_caller_that_goes_away_does_not_fail_the_others(queue: Queue, dsn: str) -> None:
    auth = Authenticator(queue.pool)
    token = await create_token(dsn, "erin", "user")
    first = asyncio.create_task(auth.authenticate(token))
    others = [asyncio.create_task(auth.authenticate(token)) for _ in range(4)]
    await asyncio.sleep(0)  # all are waiting on the one lookup
    first.cancel()
    assert {(await o).user_id for o in others} == {"erin"}
    assert auth.lookups == 1
