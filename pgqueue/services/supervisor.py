"""Background loops with one error policy: log, back off, carry on; never die silently.

Every process runs loops beside its main work: the reaper, heartbeats, the scheduler,
retention, the LISTEN connection, the outbox flusher. Each is a ``step`` run again and again
by ``supervise``:

- a step returns the seconds to wait before it runs again (``None``: the loop's interval);
- a step that raises is logged — one line for the errors an outage causes (the database or
  the server away), a traceback for anything else — and run again after a back-off that
  starts short and doubles up to the interval, so a heartbeat is retried before its lease
  could lapse while a failing loop cannot flood the log or the database;
- only cancellation (or ``stop``) ends a loop; nothing a step raises does.

``Supervisor`` starts named loops as asyncio tasks and stops them together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import psycopg

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[float | None]]

# What an outage raises: logged without a traceback (it says nothing about the code).
# Loops that talk HTTP add their transport errors (``transient=``).
TRANSIENT: tuple[type[BaseException], ...] = (psycopg.OperationalError, OSError, TimeoutError)


async def supervise(
    name: str,
    step: Step,
    *,
    every_s: float,
    stop: asyncio.Event | None = None,
    first_after_s: float = 0.0,
    backoff_s: float = 0.5,
    transient: tuple[type[BaseException], ...] = (),
) -> None:
    """Run ``step`` until cancelled or ``stop`` is set, whatever it raises (see the module)."""
    quiet = TRANSIENT + transient
    delay = backoff_s
    failures = 0
    wait = first_after_s
    while True:
        if wait > 0 and await _stopped_within(stop, wait):
            return
        if stop is not None and stop.is_set():
            return
        _raise_if_cancelled()
        try:
            asked = await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A cancel that became another error on its way out (a ROLLBACK on a dead
            # connection raises instead) still ends the loop: stop() must not wait forever.
            _raise_if_cancelled()
            failures += 1
            wait, delay = min(delay, every_s), min(delay * 2, every_s)
            if isinstance(exc, quiet):
                log.warning("%s failed (%s); retrying in %.1fs", name, exc, wait)
            elif failures == 1 or failures % 100 == 0:
                log.exception("%s failed (%d in a row); retrying in %.1fs", name, failures, wait)
            else:
                log.warning("%s failed again (%s: %s)", name, type(exc).__name__, exc)
            continue
        if failures:
            log.info("%s recovered after %d failures", name, failures)
        failures, delay = 0, backoff_s
        wait = every_s if asked is None else asked


def _raise_if_cancelled() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _stopped_within(stop: asyncio.Event | None, seconds: float) -> bool:
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


class Supervisor:
    """The background loops of one process: started by name, stopped together."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def every(
        self,
        name: str,
        every_s: float,
        step: Step,
        *,
        first_after_s: float | None = None,
        transient: tuple[type[BaseException], ...] = (),
    ) -> None:
        """Run ``step`` every ``every_s`` (first after ``first_after_s``, default one interval)."""
        loop = supervise(
            name,
            step,
            every_s=every_s,
            first_after_s=every_s if first_after_s is None else first_after_s,
            transient=transient,
        )
        self._tasks.append(asyncio.create_task(loop, name=f"pgqueue-{name}"))

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run a loop that paces itself (``run`` never returns); restarted if it fails."""

        async def step() -> float | None:
            await run()
            log.error("%s returned; starting it again", name)
            return None

        self._tasks.append(
            asyncio.create_task(supervise(name, step, every_s=1.0), name=f"pgqueue-{name}")
        )

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Cancel every loop and wait (at most ``timeout_s``) for them to end."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=timeout_s)
            for task in stuck:
                log.error("%s did not stop within %.0fs; leaving it", task.get_name(), timeout_s)
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("%s ended with %r", task.get_name(), task.exception())
        self._tasks.clear()
