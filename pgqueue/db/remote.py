"""The statements only the remote-worker protocol runs (``sql/queries/task_remote.sql`` and
``task_report``): a heartbeat over HTTP, fenced by the lease and the token that claimed it.
Claims and outcomes are ``pgqueue.db.transitions``', shared with local workers."""

from __future__ import annotations

import uuid

from pgqueue.db.errors import translated
from pgqueue.db.queries import QUERIES
from pgqueue.db.rows import Conn


async def report(
    conn: Conn,
    task_id: uuid.UUID,
    attempt: int,
    worker_id: str,
    *,
    progress: str | None,
    checkpoint: str | None,
    usage: str | None,
    token_id: int | None,
) -> bool | None:
    """Save any of progress, checkpoint (JSON texts) and a usage delta; keep the lease alive.

    Returns whether a cancel was requested, or None when the lease (held under ``token_id``)
    no longer holds the task. The worker's own row is kept alive too: a remote worker busy
    with tasks does not claim, so its task heartbeats are its only sign of life.
    """
    params = {
        "id": task_id,
        "attempt": attempt,
        "worker_id": worker_id,
        "progress": progress,
        "checkpoint": checkpoint,
        "usage": usage,
        "token_id": token_id,
    }
    with translated():
        cur = await conn.execute(QUERIES["task_report"], params)
        row = await cur.fetchone()
    if row is None:
        return None
    await conn.execute(QUERIES["worker_touch"], {"id": worker_id})
    return bool(row[0])
