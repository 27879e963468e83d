"""Driver errors → pgqueue's errors, in one place (every ``db/`` function that takes a
caller's values runs its statement inside ``translated()``).

A value the database refuses is the caller's mistake, whoever the caller is: ``Queue``
users, the CLI and the HTTP server all get ``InvalidInput`` (naming the constraint or
column) or ``Conflict`` (a unique key taken, or a transition the task's state refuses),
never a raw psycopg error. Keyed on SQLSTATE classes and constraint names, not on message
text.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager

from psycopg import errors as pg_errors

from pgqueue.errors import Conflict, InvalidInput, NotFound, PgQueueError


class MissingDependency(NotFound):
    """A ``depends_on`` task vanished between the owner check and the insert (purged).

    The enqueue names the offending field (``tasks[i].depends_on``) from ``task_id``."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"depends_on: task {task_id} does not exist")
        self.task_id = task_id


def translate(exc: pg_errors.Error, not_found: str | None = None) -> PgQueueError | None:
    """The pgqueue error ``exc`` stands for, or None when it is not the caller's fault.

    ``not_found``: the message of the ``NotFound`` a function's "no such row"
    (``no_data_found``, raised by the SQL functions of ``sql/functions/``) stands for.
    """
    diag = exc.diag
    what = diag.constraint_name or diag.column_name or "value"
    message = diag.message_primary or str(exc)
    if isinstance(exc, pg_errors.NoDataFound) and not_found is not None:
        return NotFound(not_found)
    if isinstance(exc, pg_errors.ObjectNotInPrerequisiteState):
        return Conflict(message)  # the task's state refuses the transition (cancel a finished task)
    if isinstance(exc, pg_errors.ForeignKeyViolation) and diag.column_name == "depends_on":
        return MissingDependency(diag.message_detail or "?")
    if isinstance(exc, pg_errors.UniqueViolation):
        return Conflict(f"{what}: {message}")
    if isinstance(exc, (pg_errors.DataError, pg_errors.IntegrityError)):
        return InvalidInput(what, message)
    return None


@contextmanager
def translated(not_found: str | None = None) -> Generator[None, None, None]:
    """Run a statement; a refused value leaves as a pgqueue error (see ``translate``)."""
    try:
        yield
    except pg_errors.Error as exc:
        mine = translate(exc, not_found)
        if mine is None:
            raise
        raise mine from exc
