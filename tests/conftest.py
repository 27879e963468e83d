"""Test databases: one server per session, a migrated template, a fresh copy per test.

The server comes from PGQUEUE_TEST_DSN if set, else testcontainers when a Docker engine
answers, else an embedded PostgreSQL (pgqueue.db.server). Each test gets its own database
cloned from a migrated template (CREATE DATABASE ... TEMPLATE, a file copy: ~50 ms), so
tests can commit, NOTIFY and run several processes without seeing each other.
Rolling back a transaction per test would not do: NOTIFY is delivered on commit only and
SKIP LOCKED needs several committed connections.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue.db.migrate import migrate
from pgqueue.db.pool import connect
from pgqueue.queue import Queue
from pgqueue.settings import Settings


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """A PostgreSQL server on which the tests may create and drop databases."""
    explicit = os.environ.get("PGQUEUE_TEST_DSN")
    if explicit:
        yield explicit
        return
    from pgqueue.db.server import test_server_dsn

    with test_server_dsn() as dsn:
        yield dsn


def _admin(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True)


@pytest.fixture(scope="session")
async def template_dsn(server_dsn: str) -> AsyncIterator[str]:
    """A database migrated once per session, cloned by every test."""
    name = f"pgqueue_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with _admin(server_dsn) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(server_dsn, dbname=name)
    conn = await connect(dsn)
    async with conn:
        await migrate(conn)
    yield dsn
    with _admin(server_dsn) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def dsn(server_dsn: str, template_dsn: str) -> Iterator[str]:
    """A fresh, migrated database for this test only."""
    template = conninfo_to_dict(template_dsn)["dbname"]
    name = f"pgqueue_t_{uuid.uuid4().hex[:12]}"
    with _admin(server_dsn) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(str(template))
            )
        )
    yield make_conninfo(server_dsn, dbname=name)
    with _admin(server_dsn) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def settings(dsn: str) -> Settings:
    """Settings for this test's database, with the environment ignored."""
    return Settings.from_env({}, dsn=dsn)


@pytest.fixture
async def queue(settings: Settings) -> AsyncIterator[Queue]:
    async with Queue(settings=settings) as q:
        yield q


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """An autocommit connection to this test's database, configured like pgqueue's."""
    c = await connect(dsn)
    async with c:
        yield c
