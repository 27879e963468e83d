"""The background-loop policy (pgqueue/services/supervisor.py): log, back off, carry on."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pgqueue.services.supervisor import Supervisor, supervise


async def test_a_loop_that_raises_keeps_running_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    """A non-psycopg error (a bug, a KeyError) is logged with its traceback, once per run
    of failures, and the loop carries on; recovery is logged too."""
    calls = 0
    recovered = asyncio.Event()

    async def step() -> float | None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise KeyError("token_id")
        if calls == 5:
            recovered.set()
        return None

    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="pgqueue.services.supervisor")
    loop = asyncio.create_task(supervise("flaky", step, every_s=0.01, stop=stop, backoff_s=0.001))
    await asyncio.wait_for(recovered.wait(), 10)
    stop.set()
    await asyncio.wait_for(loop, 10)
    assert loop.exception() is None and calls >= 5
    failures = [r for r in caplog.records if "flaky failed" in r.getMessage()]
    assert failures[0].exc_info is not None and "KeyError" in caplog.text  # with traceback
    assert any("flaky recovered after 3 failures" in r.getMessage() for r in caplog.records)


async def test_transient_errors_are_one_line_and_backed_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[float] = []

    async def step() -> None:
        seen.append(asyncio.get_running_loop().time())
        raise OSError("connection refused")

    supervisor = Supervisor()
    supervisor.every("down", 0.2, step, first_after_s=0)
    await asyncio.sleep(0.5)
    await supervisor.stop()
    assert 1 <= len(seen) <= 4  # retried at most once per interval: not spinning
    assert all(r.exc_info is None for r in caplog.records if "down failed" in r.getMessage())


async def test_a_self_paced_loop_that_returns_is_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    twice = asyncio.Event()

    async def run() -> None:
        nonlocal runs
        runs += 1
        if runs >= 2:
            twice.set()
            await asyncio.Event().wait()

    supervisor = Supervisor()
    supervisor.start("returns", run)
    await asyncio.wait_for(twice.wait(), 10)
    await supervisor.stop()
    assert "returns returned; starting it again" in caplog.text


async def test_a_cancel_that_turns_into_another_error_still_stops_the_loop() -> None:
    """psycopg answers a cancelled transaction on a dead connection with the ROLLBACK's own
    error: the loop must end anyway, or stop() (and the process's shutdown) hangs."""
    entered = asyncio.Event()

    async def step() -> None:
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("the ROLLBACK failed too") from None

    supervisor = Supervisor()
    supervisor.every("dying", 0.01, step, first_after_s=0)
    await asyncio.wait_for(entered.wait(), 10)
    await asyncio.wait_for(supervisor.stop(timeout_s=30), 10)
