"""pgqueue's exceptions: one root, domain errors the API maps to HTTP in one place.

Handler outcomes (``Retry``, ``Permanent``) are not errors of pgqueue; they live in
``pgqueue.outcomes``.
"""

from __future__ import annotations


class PgQueueError(Exception):
    """Root of every error pgqueue raises on purpose."""


class InvalidInput(PgQueueError, ValueError):
    """A value a caller passed is not acceptable; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(PgQueueError, LookupError):
    """No such task (or not one the caller may see)."""


class Conflict(PgQueueError):
    """The request contradicts the current state (cancel a finished task, reuse a key...)."""


class StaleLease(Conflict):
    """A completion, failure or heartbeat carried a lease that no longer holds the task."""


class PayloadTooLarge(InvalidInput):
    """A payload exceeds PGQUEUE_MAX_PAYLOAD_BYTES."""
