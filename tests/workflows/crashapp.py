"""A worker app whose first attempt dies (kill -9) right after ``wait_for_signal`` ended it,
before the worker could record the wait (tests/workflows/test_signals.py)."""

from __future__ import annotations

import os
import signal
from typing import Any

import pgqueue

app = pgqueue.App()


@app.task("crashy", max_retries=3)
async def crashy(ctx: pgqueue.Context, payload: Any) -> Any:
    try:
        return await ctx.wait_for_signal("go")
    except BaseException:
        if ctx.attempt == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        raise
