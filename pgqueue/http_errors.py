"""pgqueue's errors on the wire, both ways, in one table: the server answers an exception with
its HTTP status and an ``ErrorBody``; ``Client`` raises the same exception again from them.

Imports no driver and no web framework: the HTTP client uses it as the server does.
"""

from __future__ import annotations

import msgspec

from pgqueue.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PgQueueError,
    StaleLease,
)


class Unauthorized(PgQueueError):
    """401 (no or bad token) or 403 (the token's role may not do this)."""


class ServerError(PgQueueError):
    """The server failed (5xx); safe to retry idempotent calls."""


class ErrorBody(msgspec.Struct, frozen=True):
    """Every error response: the status again, what is wrong, and the error's type.

    Decoded leniently (a proxy's error page has none of it): a missing field is empty.
    """

    status_code: int = 0
    detail: str = ""
    type: str = ""


def status_of(exc: PgQueueError) -> int:
    """The HTTP status the server answers ``exc`` with."""
    # Order matters: PayloadTooLarge is an InvalidInput, StaleLease a Conflict.
    if isinstance(exc, PayloadTooLarge):
        return 413
    if isinstance(exc, InvalidInput):
        return 400
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, (Conflict, StaleLease)):
        return 409
    return 400


def error_of(status: int, body: ErrorBody) -> PgQueueError:
    """The exception an error response stands for (the one the server raised, where it can
    be told: ``detail`` carries ``field: message`` for a 400, ``type`` tells a stale lease)."""
    detail = body.detail or f"HTTP {status}"
    if status == 413:
        return PayloadTooLarge("body", detail)
    if status == 400:
        field, _, message = detail.partition(": ")
        return InvalidInput(field, message) if message else InvalidInput("request", detail)
    if status == 404:
        return NotFound(detail)
    if status == 409:
        return StaleLease(detail) if body.type == "StaleLease" else Conflict(detail)
    if status in (401, 403):
        return Unauthorized(detail)
    if status >= 500:
        return ServerError(f"HTTP {status}: {detail}")
    return PgQueueError(f"HTTP {status}: {detail}")
