"""How an attempt ended: what a handler may raise, and the typed outcome every worker records.

A handler returns its result, or raises (SPEC §2, error classes):
- ``Retry(in_s=60)``: try again after that delay (a snooze), still counting the attempt;
- ``Permanent("why")``: fail now, no more attempts;
- any other exception: a retryable failure with exponential backoff, unless its type is in
  the handler's ``permanent=`` list.

``worker/execute.py`` turns that into one of the outcome values below. The local worker's
outbox and the remote-worker HTTP endpoints hand these values to one statement,
``task_finish_many`` (through ``pgqueue.db.transitions.finish_many``), which applies any mix
of them in one round trip, fenced by the lease. The statement, not the caller, decides the
final status: a cancel that was requested wins over a retry and a release (SPEC §2).

Outcome  | status it leads to
---------|-------------------------------------------------------------------------------
Completed| ``completed`` (also when a cancel was requested: the work is done)
Failed   | ``pending`` after the backoff (or ``retry_in_s``, a snooze) while retryable with
         | attempts left; otherwise ``failed``; ``cancelled`` once a cancel was requested
Cancelled| ``cancelled`` (the worker stopped the handler because of a cancel request)
Released | ``pending`` now, the attempt given back (graceful shutdown); ``cancelled`` once a
         | cancel was requested
Waiting  | ``waiting`` until the signal (or its timeout), the attempt given back (SPEC §11);
         | ``pending`` at once when that signal was sent meanwhile; ``cancelled`` once a
         | cancel was requested
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

from pgqueue.tasks import Usage

# -- what a handler raises ----------------------------------------------------------------


class Retry(Exception):
    """Run this task again after ``in_s`` seconds (default: the usual backoff)."""

    def __init__(self, message: str = "retry requested", *, in_s: float | None = None) -> None:
        if in_s is not None and in_s < 0:
            raise ValueError(f"in_s must be >= 0, got {in_s}")
        super().__init__(message)
        self.in_s = in_s


class Permanent(Exception):
    """Fail this task for good: retrying cannot help (bad input, a refused request...)."""


class SignalTimeout(Exception):
    """``ctx.wait_for_signal(name, timeout_s=...)``: the timeout passed before the signal
    (SPEC §11). Raised on the run after the wait; retryable unless the handler says not."""


class WaitForSignal(BaseException):
    """Ends the attempt as a wait (``Waiting``): raised by ``ctx.wait_for_signal``.

    A ``BaseException``, like ``asyncio.CancelledError``, so a handler's ``except Exception``
    does not swallow it."""

    def __init__(self, signal: str, timeout_s: float | None) -> None:
        super().__init__(f"waiting for signal {signal!r}")
        self.signal = signal
        self.timeout_s = timeout_s


# -- what a worker records ----------------------------------------------------------------


class Completed(msgspec.Struct, frozen=True, tag="completed"):
    """The handler returned ``result``."""

    result: Any
    usage: Usage = Usage()
    exit_code: int | None = None


class Failed(msgspec.Struct, frozen=True, tag="failed"):
    """The attempt failed: a retry (``retryable``), a snooze (``retry_in_s``) or for good."""

    error: dict[str, Any]  # {"type", "message", "retryable", "traceback"?}
    retryable: bool
    usage: Usage = Usage()
    retry_in_s: float | None = None  # None: the backoff decides
    exit_code: int | None = None


class Cancelled(msgspec.Struct, frozen=True, tag="cancelled"):
    """Stopped because a cancel was requested."""

    usage: Usage = Usage()


class Released(msgspec.Struct, frozen=True, tag="released"):
    """Stopped because the worker is shutting down: hand the task back, do not count it."""

    usage: Usage = Usage()


class Waiting(msgspec.Struct, frozen=True, tag="waiting"):
    """The handler waits for the signal ``signal``: free the slot, give the attempt back."""

    signal: str
    timeout_s: float | None = None
    usage: Usage = Usage()


Outcome = Completed | Failed | Cancelled | Released | Waiting

OutcomeName = Literal["completed", "failed", "cancelled", "released", "waiting"]

CANCELLED_ERROR: Final = {"type": "cancelled", "message": "cancel requested", "retryable": False}
"""The ``error`` a task cancelled while running ends with."""

UNRECORDABLE: Final = "unrecordable_outcome"
"""The error type of an outcome the database or the server refused (too big, not storable):
its task fails for good, recorded once, instead of being left to the reaper."""


def permanent(
    error_type: str, message: str, usage: Usage | None = None, exit_code: int | None = None
) -> Failed:
    """A failure no retry can fix, with a short error (no traceback)."""
    return Failed(
        error={"type": error_type, "message": message, "retryable": False},
        retryable=False,
        usage=usage or Usage(),
        exit_code=exit_code,
    )


def unrecordable(outcome: Outcome, why: str, *, exit_code: int | None = None) -> Failed:
    """What to record instead of an outcome that cannot be stored (a result over the limit,
    a value the database or the server refused): a permanent failure saying why, with the
    outcome's usage. ``exit_code`` only from a worker that has not offered the outcome yet:
    after a refusal the exit code may be what was refused."""
    message = f"the outcome could not be recorded: {why}"
    return permanent(UNRECORDABLE, message, outcome.usage, exit_code)


def name_of(outcome: Outcome) -> OutcomeName:
    """The outcome's tag, as ``task_finish_many`` and the metrics name it."""
    tag: OutcomeName = type(outcome).__struct_config__.tag  # type: ignore[assignment]
    return tag
