"""pgqueue/db/tokens.py, through `pgqueue token` as an operator runs it, and the one place that
turns a value the database refuses into pgqueue's errors (pgqueue/db/errors.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pgqueue.api.auth import new_token, token_hash
from pgqueue.db import tokens
from pgqueue.db.pool import connect
from pgqueue.errors import Conflict, InvalidInput


def cli(dsn: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pgqueue", "token", *args, "--dsn", dsn],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout


async def test_create_list_revoke_share_the_db_functions(dsn: str) -> None:
    secret = cli(dsn, "create", "--user", "ann", "--role", "worker", "--note", "ci").splitlines()[
        -1
    ]
    conn = await connect(dsn)
    async with conn:
        owner = await tokens.authenticate(conn, token_hash(secret))
        assert owner is not None and (owner.user_id, owner.role) == ("ann", "worker")
        assert await tokens.count_live(conn) == 1
        [info] = await tokens.list_all(conn)
        assert (info.prefix, info.note, info.revoked_at) == (secret[:10], "ci", None)
        assert "ann" in cli(dsn, "list")
        assert f"revoked token {info.id}" in cli(dsn, "revoke", str(info.id))
        assert await tokens.authenticate(conn, token_hash(secret)) is None
        assert await tokens.count_live(conn) == 0
        assert await tokens.revoke(conn, str(info.id)) == []


async def test_refused_values_are_pgqueue_errors_naming_the_constraint(dsn: str) -> None:
    conn = await connect(dsn)
    async with conn:
        secret = new_token()
        hashed, prefix = token_hash(secret), secret[:10]
        with pytest.raises(InvalidInput, match="api_tokens_role_valid"):
            await tokens.insert(
                conn, user_id="ann", role="root", token_hash=hashed, prefix=prefix, note=None
            )
        await tokens.insert(
            conn, user_id="ann", role="user", token_hash=hashed, prefix=prefix, note=None
        )
        with pytest.raises(Conflict, match="api_tokens_hash_unique"):
            await tokens.insert(
                conn, user_id="bob", role="user", token_hash=hashed, prefix=prefix, note=None
            )
