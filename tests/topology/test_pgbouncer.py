"""The suites re-run through PgBouncer in ``pool_mode = transaction`` (SPEC §17).

Here ``dsn`` is the test database *through PgBouncer*, whose server sessions are reset after
every transaction (``pgbouncer.py``), and the database's TimeZone is not UTC. Every process
LISTENs on the direct DSN (PGQUEUE_LISTEN_DSN), as a deployment behind PgBouncer must. The
tests imported below are the worker, API, stream and scheduler tests themselves, not copies:
with this module's ``dsn`` they fail if any statement relied on session state (a session SET,
a named prepared statement, a session advisory lock, LISTEN through the pooler) or on the
server's time zone being UTC.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import pgqueue
from pgqueue.db.migrate import current_version, latest_version, migrate, migration_files
from pgqueue.db.pool import connect, uses_pooler
from pgqueue.queue import Queue
from pgqueue.settings import Settings
from pgqueue.tasks import Status
from tests.api.conftest import admin, alice, api, api_settings, bob, processes, tokens, worker
from tests.api.test_stream import (
    test_psql_update_reaches_subscriber,
    test_stream_user_isolation,
    test_task_subscription_state_first_then_ordered_events,
)
from tests.api.test_tasks import (
    test_batch_one_transaction_in_order,
    test_cancel_retry_events_and_conflicts,
    test_get_wait_is_woken_by_notify,
    test_idempotent_replay_through_header,
    test_list_filters_and_keyset_pagination,
    test_submit_returns_201_with_rfc3339_utc_and_forced_owner,
)
from tests.api.test_workers import (
    test_claim_heartbeat_complete,
    test_claim_long_poll_is_woken_by_enqueue,
    test_stale_lease_after_reap_is_409,
)
from tests.helpers import LISTEN_DSNS, fast_settings, running_worker
from tests.schedules.test_scheduler import (
    pool,
    schedules,
    test_run_scheduler_fires_by_the_database_clock,
    test_two_schedulers_racing_fire_each_slot_exactly_once,
)
from tests.worker.test_processes import (
    executions,
    test_kill_9_mid_task_resumes_from_checkpoint_on_another_worker,
    test_three_processes_complete_each_task_exactly_once,
)
from tests.worker.test_worker import (
    fast,
    test_a_running_worker_fires_due_schedules,
    test_cancel_pending_and_running,
    test_graceful_shutdown_releases_unfinished_tasks,
    test_handler_result_progress_and_usage_are_recorded,
    test_retries_with_backoff_then_success,
    test_sync_handlers_report_progress_and_checkpoints,
    test_wakeup_within_a_second_of_a_plain_sql_insert,
)

# Fixtures the imported tests use, re-exported so pytest finds them for this module.
FIXTURES = (
    admin,
    alice,
    api,
    api_settings,
    bob,
    processes,
    tokens,
    worker,
    pool,
    schedules,
    executions,
    fast,
)
IMPORTED_TESTS = (
    test_psql_update_reaches_subscriber,
    test_stream_user_isolation,
    test_task_subscription_state_first_then_ordered_events,
    test_batch_one_transaction_in_order,
    test_cancel_retry_events_and_conflicts,
    test_get_wait_is_woken_by_notify,
    test_idempotent_replay_through_header,
    test_list_filters_and_keyset_pagination,
    test_submit_returns_201_with_rfc3339_utc_and_forced_owner,
    test_claim_heartbeat_complete,
    test_claim_long_poll_is_woken_by_enqueue,
    test_stale_lease_after_reap_is_409,
    test_run_scheduler_fires_by_the_database_clock,
    test_two_schedulers_racing_fire_each_slot_exactly_once,
    test_kill_9_mid_task_resumes_from_checkpoint_on_another_worker,
    test_three_processes_complete_each_task_exactly_once,
    test_a_running_worker_fires_due_schedules,
    test_cancel_pending_and_running,
    test_graceful_shutdown_releases_unfinished_tasks,
    test_handler_result_progress_and_usage_are_recorded,
    test_retries_with_backoff_then_success,
    test_sync_handlers_report_progress_and_checkpoints,
    test_wakeup_within_a_second_of_a_plain_sql_insert,
)

# A zone with a half-hour offset: a time rendered in the session's zone cannot pass for UTC.
SERVER_ZONE = "Asia/Kolkata"


def _dbname(dsn: str) -> str:
    return str(conninfo_to_dict(dsn)["dbname"])


@pytest.fixture
def direct_dsn(dsn: str) -> str:
    """The test database, directly (the conftest's ``dsn``, before this module swaps it)."""
    return dsn


@pytest.fixture
def dsn(direct_dsn: str, pgbouncer: str) -> Iterator[str]:  # overrides the conftest's
    """This test's database through PgBouncer, with a server TimeZone that is not UTC."""
    name = _dbname(direct_dsn)
    with psycopg.connect(direct_dsn, autocommit=True) as admin_conn:
        admin_conn.execute(
            sql.SQL("ALTER DATABASE {} SET TimeZone = {}").format(
                sql.Identifier(name), sql.Literal(SERVER_ZONE)
            )
        )
    pooled = make_conninfo(pgbouncer, dbname=name)
    LISTEN_DSNS[pooled] = direct_dsn
    yield pooled
    LISTEN_DSNS.pop(pooled, None)


@pytest.fixture
def settings(dsn: str, direct_dsn: str) -> Settings:
    return Settings.from_env({}, dsn=dsn, listen_dsn=direct_dsn)


async def test_the_pooler_resets_sessions_so_session_state_cannot_hide(dsn: str) -> None:
    """The fixture itself: what a pooled connection sets for its session is gone next time."""
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter"):
        await psycopg.AsyncConnection.connect(dsn, options="-c TimeZone=UTC")
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    async with conn:
        await conn.execute("SET statement_timeout = '123s'")
        cur = await conn.execute("SHOW statement_timeout")
        assert (await cur.fetchone()) != ("123s",)
        cur = await conn.execute("SHOW TimeZone")
        assert await cur.fetchone() == (SERVER_ZONE,)


async def test_pooled_connections_detect_the_pooler_and_do_not_prepare(
    dsn: str, direct_dsn: str
) -> None:
    pooled = await connect(dsn)
    direct = await connect(direct_dsn)
    async with pooled, direct:
        assert await uses_pooler(pooled) and pooled.prepare_threshold is None
        assert not await uses_pooler(direct) and direct.prepare_threshold is not None
        for _ in range(10):  # well past the prepare threshold
            cur = await pooled.execute("SELECT count(*) FROM pgqueue.tasks WHERE kind = %s", ["k"])
            assert await cur.fetchone() == (0,)


async def test_migrate_racing_through_pgbouncer_applies_each_migration_once(
    server_dsn: str, pgbouncer: str
) -> None:
    """A session advisory lock would not hold across PgBouncer transactions; the xact one does."""
    name = f"pgqueue_topology_migrate_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin_conn:
        admin_conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        pooled = make_conninfo(pgbouncer, dbname=name)
        conns = [await connect(pooled) for _ in range(4)]
        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = sorted(name for r in results for name in r)
        # each migration applied once in all, by whichever migrate got to it first
        assert applied == sorted(path.name for _, path in migration_files())
        assert await current_version(conns[0]) == latest_version()
        for c in conns:
            await c.close()
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin_conn:
            admin_conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


app = pgqueue.App()


@app.task("checkpointed")
async def checkpointed(ctx: pgqueue.Context, payload: dict[str, Any]) -> str:
    await ctx.checkpoint("half", {"n": 1})
    return "ok"


async def test_times_are_utc_whatever_the_server_zone(queue: Queue, dsn: str) -> None:
    """Datetimes and the times SQL writes into JSON (events, checkpoints) are UTC."""
    delayed = await queue.enqueue("checkpointed", {}, delay_s=3600)
    created = (await queue.events(delayed.id))[0]
    assert created.event == "created"
    assert created.data["run_at"].endswith(("+00:00", "Z")), created.data
    async with running_worker(app, fast_settings(dsn)):
        task = await queue.enqueue("checkpointed", {})
        done = await queue.wait(task.id, timeout_s=30)
    assert done.status is Status.COMPLETED
    assert done.checkpoint is not None and done.checkpoint["saved_at"].endswith("Z")
    for value in (done.created_at, done.started_at, done.completed_at, done.updated_at):
        assert value is not None and value.utcoffset() == timedelta(0)
