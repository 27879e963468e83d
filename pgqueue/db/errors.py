"""Driver errors → pgqueue's errors, in one place (every ``db/`` function that takes a
caller's values runs its statement inside ``translated()``).

A value the database refuses is the caller's mistake, whoever the caller is: ``Queue``
users, the CLI and the HTTP server all get ``InvalidInput`` (naming the constraint or
column) or ``Conflict`` (a unique key taken), never a raw psycopg error. Keyed on
SQLSTATE classes and constraint names, not on message text.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager

from psycopg import errors as pg_errors

from pgqueue.errors import Conflict, InvalidInput, PgQueueError


def translate(exc: pg_errors.Error) -> PgQueueError | None:
    """The pgqueue error ``exc`` stands for, or None when it is not the caller's fault."""
    diag = exc.diag
    what = diag.constraint_name or diag.column_name or "value"
    message = diag.message_primary or str(exc)
    if isinstance(exc, pg_errors.UniqueViolation):
        return Conflict(f"{what}: {message}")
    if isinstance(exc, (pg_errors.DataError, pg_errors.IntegrityError)):
        return InvalidInput(what, message)
    return None


@contextmanager
def translated() -> Generator[None, None, None]:
    """Run a statement; a refused value leaves as ``InvalidInput``/``Conflict``."""
    try:
        yield
    except pg_errors.Error as exc:
        mine = translate(exc)
        if mine is None:
            raise
        raise mine from exc
