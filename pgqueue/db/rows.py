"""Row factories: query results become typed Structs, never ``dict[str, Any]``.

They also work on a caller's own connection (``Queue.enqueue(conn=...)``), which has none of
pgqueue's adapters: the status arrives as a plain string and is converted here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncCursor
from psycopg.rows import RowMaker

from pgqueue.tasks import Event, Status, Task


def task_row(cursor: AsyncCursor[Any]) -> RowMaker[Task]:
    names = [c.name for c in cursor.description or ()]
    status_at = names.index("status") if "status" in names else -1

    def make(values: Sequence[Any]) -> Task:
        fields = dict(zip(names, values, strict=True))
        if status_at >= 0:
            fields["status"] = Status(values[status_at])
        return Task(**fields)

    return make


def event_row(cursor: AsyncCursor[Any]) -> RowMaker[Event]:
    names = [c.name for c in cursor.description or ()]

    def make(values: Sequence[Any]) -> Event:
        fields = dict(zip(names, values, strict=True))
        fields["status"] = Status(fields["status"])
        return Event(**fields)

    return make
