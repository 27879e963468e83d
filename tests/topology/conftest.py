"""Topology fixtures: a PgBouncer in transaction mode in front of the test server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.topology.pgbouncer import HOW_TO_ENABLE, pgbouncer_binary, running_pgbouncer


@pytest.fixture
def pgbouncer(server_dsn: str) -> Iterator[str]:
    """The base DSN of a PgBouncer (any database name) in front of the test server.

    One per test (it starts in well under a second): no test sees another's pools.
    """
    if pgbouncer_binary() is None:
        pytest.skip(HOW_TO_ENABLE)
    with running_pgbouncer(server_dsn) as dsn:
        yield dsn
