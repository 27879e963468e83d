"""pgqueue: a durable task queue service that needs nothing but PostgreSQL.

Producers: ``Queue`` (database) or ``Client`` (HTTP). Workers: an ``App`` of handlers, each
called with a ``Context``; handlers end an attempt by returning, or raising ``Retry`` or
``Permanent``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgqueue.errors import Conflict, InvalidInput, NotFound, PgQueueError, StaleLease
from pgqueue.outcomes import Permanent, Retry, SignalTimeout
from pgqueue.queue import Enqueued, Page, Queue
from pgqueue.settings import Settings
from pgqueue.tasks import NewTask, Status, Task, TaskId
from pgqueue.worker.context import Context
from pgqueue.worker.handlers import App

if TYPE_CHECKING:
    from pgqueue.client import Client

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
    # The HTTP client pulls in httpx and websockets; load it only for those who use it.
    if name == "Client":
        from pgqueue.client import Client

        return Client
    raise AttributeError(f"module 'pgqueue' has no attribute {name!r}")
