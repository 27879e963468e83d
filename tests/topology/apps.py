"""The handler the failover tests run: short work, each execution logged outside the database.

The log (a file per test, ``PGQUEUE_TEST_EXEC_LOG``) survives what a failover loses, so the
test can tell a task that ran twice (allowed: at-least-once) from one recorded twice (never).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pgqueue

app = pgqueue.App()


@app.task("work")
async def work(ctx: pgqueue.Context, payload: dict[str, Any]) -> dict[str, Any]:
    # logged as it starts: a started handler proves its claim was acknowledged
    with Path(os.environ["PGQUEUE_TEST_EXEC_LOG"]).open("a") as log:  # noqa: ASYNC230  (one line)
        log.write(f"{ctx.task_id} {ctx.attempt} {os.getpid()}\n")
    await asyncio.sleep(0.02)
    return {"pid": os.getpid()}
