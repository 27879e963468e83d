"""The worker side of a task's life, as typed calls: claim it, and record how it ended.

The only callers of ``task_claim`` and ``task_finish_many``: the local worker (its claimer and
its outbox) and the remote-worker endpoints (``api/workers.py``) go through here, so a claim
and an outcome mean the same thing whichever way a worker is connected.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from psycopg_pool import AsyncConnectionPool

from pgqueue.db import heartbeats
from pgqueue.db.queries import QUERIES
from pgqueue.db.rows import STATUS, task_row
from pgqueue.errors import NotFound, StaleLease
from pgqueue.outcomes import Completed, Failed, Outcome, OutcomeName, Waiting, name_of
from pgqueue.tasks import Status, Task, TaskId, Usage

_encode = msgspec.json.Encoder().encode


async def claim(
    pool: AsyncConnectionPool,
    worker_id: str,
    queues: Sequence[str],
    kinds: Sequence[str] | None,
    limit: int,
) -> list[Task]:
    """Up to ``limit`` due tasks, now running for ``worker_id``, in claim order (SPEC §2).

    ``kinds`` None: any kind (remote workers that do not list theirs).
    """
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=task_row)
        await cur.execute(
            QUERIES["task_claim"],
            {"worker_id": worker_id, "queues": list(queues), "kinds": kinds, "limit": limit},
        )
        return await cur.fetchall()


async def next_run_at(
    pool: AsyncConnectionPool, queues: Sequence[str], kinds: Sequence[str]
) -> datetime | None:
    """When the earliest future task of these queues and kinds becomes due (None: none)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            QUERIES["task_next_run_at"], {"queues": list(queues), "kinds": list(kinds)}
        )
        row = await cur.fetchone()
    return None if row is None else row[0]


async def register_worker(
    pool: AsyncConnectionPool, worker: dict[str, Any], token_id: int | None
) -> bool:
    """Upsert a worker's heartbeat row, bound to ``token_id`` (a remote worker's token).

    False when another token holds that worker id: its leases are not this caller's.
    """
    async with pool.connection() as conn:
        return await heartbeats.beat_worker(conn, worker, token_id)


async def dependency_results(
    pool: AsyncConnectionPool, tasks: Sequence[Task]
) -> dict[TaskId, dict[str, Any]]:
    """``{task id: {dependency id: result}}`` for the claimed ``tasks`` that have dependencies
    (SPEC §10): one query, none at all when no task has any."""
    pairs = [(t.id, d) for t in tasks for d in t.depends_on]
    out: dict[TaskId, dict[str, Any]] = {t.id: {} for t in tasks if t.depends_on}
    if not pairs:
        return out
    async with pool.connection() as conn:
        cur = await conn.execute(
            QUERIES["task_dependency_results"],
            {"ids": [p[0] for p in pairs], "deps": [p[1] for p in pairs]},
        )
        for task_id, dep, result in await cur.fetchall():
            out[TaskId(task_id)][str(dep)] = result
    return out


async def signal_payload(
    pool: AsyncConnectionPool, task_ids: Sequence[uuid.UUID], name: str | None = None
) -> dict[TaskId, dict[str, Any]]:
    """``{task id: {signal name: payload}}``: the signals already sent to these tasks (all
    names, or only ``name``), as ``ctx.wait_for_signal`` and remote claims need them."""
    out: dict[TaskId, dict[str, Any]] = {}
    if not task_ids:
        return out
    async with pool.connection() as conn:
        cur = await conn.execute(QUERIES["task_signals"], {"ids": list(task_ids), "name": name})
        for task_id, sig, payload in await cur.fetchall():
            out.setdefault(TaskId(task_id), {})[sig] = payload
    return out


class Finish(msgspec.Struct, frozen=True, omit_defaults=True):
    """One row of ``task_finish_many``: the lease it is fenced by and the outcome.

    Encoded without the fields left at their defaults (the statement reads them as NULL).
    """

    id: uuid.UUID
    attempt: int
    worker_id: str
    outcome: OutcomeName
    result: Any = None
    error: dict[str, Any] | None = None
    retryable: bool = False
    retry_in_s: float | None = None
    exit_code: int | None = None
    usage: Usage | None = None
    # The backoff when the task has none of its own: the handler's, else the settings'.
    backoff_base_s: float | None = None
    backoff_max_s: float | None = None
    # A wait (SPEC §11): the signal's name and, if any, its timeout.
    signal: str | None = None
    wait_s: float | None = None


def finish(
    task_id: uuid.UUID,
    attempt: int,
    worker_id: str,
    outcome: Outcome,
    *,
    backoff_base_s: float | None = None,
    backoff_max_s: float | None = None,
) -> Finish:
    """The row that records ``outcome`` for the attempt ``attempt`` of ``worker_id``."""
    usage = outcome.usage if outcome.usage != _NO_USAGE else None
    if isinstance(outcome, Completed):
        return Finish(
            task_id, attempt, worker_id, "completed",
            result=outcome.result, exit_code=outcome.exit_code, usage=usage,
        )  # fmt: skip
    if isinstance(outcome, Failed):
        return Finish(
            task_id, attempt, worker_id, "failed",
            error=outcome.error, retryable=outcome.retryable, retry_in_s=outcome.retry_in_s,
            exit_code=outcome.exit_code, usage=usage,
            backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s,
        )  # fmt: skip
    if isinstance(outcome, Waiting):
        return Finish(
            task_id, attempt, worker_id, "waiting",
            signal=outcome.signal, wait_s=outcome.timeout_s, usage=usage,
        )  # fmt: skip
    return Finish(task_id, attempt, worker_id, name_of(outcome), usage=usage)


_NO_USAGE = Usage()


def encode_finishes(rows: Sequence[Finish]) -> str:
    """The ``items`` parameter of ``task_finish_many``.

    Raises ``TypeError``/``msgspec.EncodeError`` for a value JSON cannot hold: the caller's
    outcome, not the database, is wrong then.
    """
    return _encode(rows).decode()


async def finish_many(
    pool: AsyncConnectionPool, rows: Sequence[Finish], *, token_id: int | None = None
) -> dict[TaskId, Status]:
    """Record these outcomes in one statement; returns the new status of each row recorded.

    A row whose lease no longer holds its task (reaped and given to another worker, finished
    already, or held under another token than ``token_id``) is left out of the answer.
    Raises the driver's error when the database refuses the batch (a result jsonb cannot
    store): one bad row fails its batch, so callers retry row by row to find it.
    """
    if not rows:
        return {}
    params = {"items": encode_finishes(rows), "token_id": token_id}
    async with pool.connection() as conn:
        cur = await conn.execute(QUERIES["task_finish_many"], params)
        done = await cur.fetchall()
    return {TaskId(row[0]): STATUS[row[1]] for row in done}


async def refusal(pool: AsyncConnectionPool, task_id: uuid.UUID, lease: str) -> Exception:
    """Why a fenced statement touched nothing: ``NotFound``, or ``StaleLease`` naming the
    holder."""
    async with pool.connection() as conn:
        cur = await conn.execute(QUERIES["task_lease_state"], {"id": task_id})
        row = await cur.fetchone()
    if row is None:
        return NotFound(f"task {task_id} does not exist")
    status, attempts, worker_id = row
    return StaleLease(
        f"lease: {lease} does not hold task {task_id} (it is {status}, attempt {attempts}, "
        f"worker {worker_id}; a lease is valid only for the token that claimed it)"
    )
