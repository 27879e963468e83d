"""Row factories: query results become typed Structs, never ``dict[str, Any]``.

They also work on a caller's own connection (``Queue.enqueue(conn=...)``), which has none of
pgqueue's adapters: the status arrives as a plain string and is converted here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import RowMaker

from pgqueue.tasks import Event, Status, Task

Conn = AsyncConnection[Any]
"""What every ``db/`` function runs on: a pooled connection or a caller's own."""

_TASK_FIELDS = list(Task.__struct_fields__)
_STATUS_AT = _TASK_FIELDS.index("status")

STATUS: dict[str, Status] = {s.value: s for s in Status}
"""A status by its name: a dict lookup, where ``Status(name)`` (the enum's call) cost a claimed
or finished task of a drain more than building its ``Task``."""


def task_row(cursor: AsyncCursor[Any]) -> RowMaker[Task]:
    names = [c.name for c in cursor.description or ()]
    if names == _TASK_FIELDS:
        # `SELECT *` / `RETURNING *` give the table's column order, which Task mirrors:
        # build positionally (the drain profile showed keyword building as the top cost).
        def make_positional(values: Sequence[Any]) -> Task:
            row = list(values)
            row[_STATUS_AT] = STATUS[row[_STATUS_AT]]
            return Task(*row)

        return make_positional

    def make(values: Sequence[Any]) -> Task:
        fields = dict(zip(names, values, strict=True))
        if "status" in fields:
            fields["status"] = Status(fields["status"])
        return Task(**fields)

    return make


def event_row(cursor: AsyncCursor[Any]) -> RowMaker[Event]:
    names = [c.name for c in cursor.description or ()]

    def make(values: Sequence[Any]) -> Event:
        fields = dict(zip(names, values, strict=True))
        fields["status"] = Status(fields["status"])
        return Event(**fields)

    return make
