"""``Page``: one page of a task listing, the same shape from ``Queue.list``, ``GET /tasks``
and ``Client.list``. Imports no driver and no web framework, so the HTTP client can use it."""

from __future__ import annotations

import msgspec

from pgqueue.tasks import Task


class Page(msgspec.Struct, frozen=True):
    """One page of a listing, newest first; pass ``next_cursor`` to get the next page."""

    items: list[Task]
    next_cursor: str | None
