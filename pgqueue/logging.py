"""Log lines as text or, with ``PGQUEUE_LOG_FORMAT=json``, one JSON object per line (§15).

JSON lines carry ``time``, ``level``, ``logger`` and ``message``, plus the context of what
is being worked on: ``task_id``, ``kind``, ``queue``, ``attempt`` and ``worker_id`` where they
apply. The context lives in a ContextVar bound around a worker's run (``worker_id``) and
around each attempt of a handler (the task's fields), so every line logged while a task
runs — by pgqueue or by the handler itself, also from a sync handler's thread — names it,
with no logger adapter to thread through.
"""

from __future__ import annotations

import logging
import sys
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

import msgspec

from pgqueue.tasks import Task

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS = ("task_id", "kind", "queue", "attempt", "worker_id")

_context: ContextVar[dict[str, Any]] = ContextVar("pgqueue_log_context", default={})  # noqa: B039


class _Bound:
    """``bind``'s block. A class, not a generator context manager: every attempt of every task
    enters one, and the generator's machinery was a measurable share of a no-op task."""

    __slots__ = ("_fields", "_token")

    def __init__(self, fields: dict[str, Any]) -> None:
        self._fields = fields
        self._token: Token[dict[str, Any]] | None = None

    def __enter__(self) -> None:
        self._token = _context.set({**_context.get(), **self._fields})

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _context.reset(self._token)


def bind(**fields: Any) -> AbstractContextManager[None]:
    """Add ``fields`` to every log line written inside this block (and tasks it starts)."""
    return _Bound(fields)


def task_fields(task: Task) -> dict[str, Any]:
    """The log context of one attempt of ``task`` (the id as the UUID: JSON lines encode it)."""
    return {
        "task_id": task.id,
        "kind": task.kind,
        "queue": task.queue,
        "attempt": task.attempts,
        "worker_id": task.worker_id,
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the bound context and any ``extra=`` of FIELDS in it."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in _context.get().items() if v is not None})
        for key in FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(line, enc_hook=str).decode()


def configure(level: str, fmt: str) -> None:
    """Set up the root logger for a pgqueue command: ``fmt`` is ``text`` or ``json``."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
