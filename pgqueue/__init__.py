"""pgqueue: a durable task queue service that needs nothing but PostgreSQL.

Producers: ``Queue`` (database) or ``Client`` (HTTP). Workers: an ``App`` of handlers, each
called with a ``Context``; handlers end an attempt by returning, or raising ``Retry`` or
``Permanent``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgqueue.errors import Conflict, InvalidInput, NotFound, PgQueueError, StaleLease
from pgqueue.outcomes import Permanent, Retry, SignalTimeout
from pgqueue.pages import Page
from pgqueue.settings import Settings
from pgqueue.tasks import NewTask, Status, Task, TaskId
from pgqueue.worker.context import Context
from pgqueue.worker.handlers import App

if TYPE_CHECKING:
    from pgqueue.client import Client
    from pgqueue.queue import Enqueued, Queue

__all__ = [
    "App",
    "Client",
    "Conflict",
    "Context",
    "Enqueued",
    "InvalidInput",
    "NewTask",
    "NotFound",
    "Page",
    "Permanent",
    "PgQueueError",
    "Queue",
    "Retry",
    "Settings",
    "SignalTimeout",
    "StaleLease",
    "Status",
    "Task",
    "TaskId",
]


def __getattr__(name: str) -> Any:
    # Loaded on first use: ``Queue`` pulls in the database driver, ``Client`` httpx and
    # websockets. ``import pgqueue.client`` must not bring psycopg (an HTTP-only agent has
    # no driver), nor ``import pgqueue.queue`` httpx.
    if name == "Client":
        from pgqueue.client import Client

        return Client
    if name in ("Queue", "Enqueued"):
        from pgqueue import queue

        return getattr(queue, name)
    raise AttributeError(f"module 'pgqueue' has no attribute {name!r}")
