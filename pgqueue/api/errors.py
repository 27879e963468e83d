"""Errors → HTTP, in one place (SPEC §4): JSON ``{"status_code", "detail"}``.

``detail`` always names the offending field or rule, also for Litestar's own validation
errors (whose field would otherwise hide in ``extra``). Bad input is never a 500: database
errors caused by a value (out of range, unstorable text) are 400s too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_500_INTERNAL_SERVER_ERROR,
)
from psycopg import errors as pg_errors

from pgqueue.errors import PgQueueError
from pgqueue.http_errors import ErrorBody, status_of
from pgqueue.jsonvalue import is_object

log = logging.getLogger(__name__)


def error_response(
    status: int, detail: str, kind: str, headers: dict[str, str] | None = None
) -> Response[ErrorBody]:
    return Response(
        ErrorBody(status_code=status, detail=detail, type=kind), status_code=status, headers=headers
    )


def _domain(_: Request[Any, Any, Any], exc: PgQueueError) -> Response[ErrorBody]:
    return error_response(status_of(exc), str(exc), type(exc).__name__)


def _validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorBody]:
    """Litestar's 400s: lift the field names out of ``extra`` into ``detail``."""
    parts: list[str] = []
    extra = exc.extra if isinstance(exc.extra, list) else [exc.extra] if exc.extra else []
    for item in extra:
        if is_object(item):
            key = item.get("key")
            message = item.get("message", "")
            source = item.get("source")
            where = key if key and key != "data" else (source or "body")
            parts.append(f"{where}: {message}")
        elif item:
            parts.append(str(item))
    detail = "; ".join(parts) or exc.detail
    return error_response(HTTP_400_BAD_REQUEST, detail, "InvalidInput")


def _http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    headers = dict(exc.headers) if exc.headers else None
    detail = exc.detail
    if exc.status_code == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
        detail = f"body: {detail or 'request body too large'}"
    return error_response(exc.status_code, detail, type(exc).__name__, headers)


def _database(_: Request[Any, Any, Any], exc: pg_errors.Error) -> Response[ErrorBody]:
    """A value the database refuses (CHECK, range, encoding) is the caller's error: 400."""
    if isinstance(exc, (pg_errors.DataError, pg_errors.IntegrityError)):
        diag = exc.diag
        what = diag.constraint_name or diag.column_name or "value"
        return error_response(
            HTTP_400_BAD_REQUEST, f"{what}: {diag.message_primary or exc}", "InvalidInput"
        )
    log.exception("database error")
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "database error", type(exc).__name__)


# Litestar's own ExceptionHandlersMap leaves Request's and the exception's types open.
Handler = Callable[[Request[Any, Any, Any], Any], Response[Any]]
EXCEPTION_HANDLERS: dict[int | type[Exception], Handler] = {
    PgQueueError: _domain,
    ValidationException: _validation,
    HTTPException: _http,
    pg_errors.Error: _database,
}
