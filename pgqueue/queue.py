"""``pgqueue.Queue``: the producer's side — enqueue, read, cancel, retry and wait.

The HTTP API is a thin layer over this class, so Python callers and HTTP callers get the same
rules (validation, idempotency, transitions) from one place.
"""

from __future__ import annotations

import asyncio
import builtins
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Self

import psycopg
from psycopg_pool import AsyncConnectionPool

from pgqueue import enqueue
from pgqueue.db import limits
from pgqueue.db import tasks as db
from pgqueue.db.listener import Listener
from pgqueue.db.pool import create_pool
from pgqueue.enqueue.validate import Enqueued, encode_payload, new_task, validation_field
from pgqueue.errors import Conflict, InvalidInput, NotFound
from pgqueue.events import EVENTS
from pgqueue.gc_pause import gc_paused
from pgqueue.limits import Why
from pgqueue.pages import Page
from pgqueue.settings import Settings
from pgqueue.tasks import Event, NewTask, Status, Task, parse_task_id
from pgqueue.wait import until_terminal
from pgqueue.watch import TaskWatcher

if TYPE_CHECKING:
    from pgqueue.worker.handlers import App

_UNSET: Any = object()
_LIST_LIMIT_MAX = 500

__all__ = ["Enqueued", "Page", "Queue", "new_task", "validation_field"]


class Queue:
    """Producer API over one pool. ``async with Queue(dsn) as q: await q.enqueue(...)``.

    Pass ``pool`` (and ``listener``) to share them with the rest of a process, as the HTTP
    server does; otherwise the Queue opens its own pool and, on the first ``wait``, its own
    LISTEN connection. Pass ``app`` to apply its handlers' defaults (``@app.task(queue=...,
    max_retries=..., timeout_s=...)``) to the fields a producer does not set.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        settings: Settings | None = None,
        pool: AsyncConnectionPool | None = None,
        listener: Listener | None = None,
        app: App | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.app = app
        self._dsn = dsn or self.settings.dsn
        # LISTEN directly (PGQUEUE_LISTEN_DSN) unless given a DSN of its own to use for all
        self._listen_dsn = (
            self.settings.listen_target if self._dsn == self.settings.dsn else self._dsn
        )
        if pool is None and not self._dsn:
            raise InvalidInput("dsn", "no database: pass a DSN or set PGQUEUE_DSN")
        self._own_pool = pool is None
        self.pool = pool or create_pool(self._dsn, max_size=self.settings.pool_size)
        self._own_listener = listener is None
        self._listener = listener
        # Made on the first wait: a worker's listener LISTENs on the event firehose only
        # once a handler waits for a task (ctx.wait_children()).
        self._watcher: TaskWatcher | None = None
        self._listener_lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        if self._own_pool:
            await self.pool.open(wait=True)

    async def close(self) -> None:
        if self._own_listener and self._listener is not None:
            await self._listener.stop()
        if self._own_pool:
            await self.pool.close()

    # -- enqueue (pgqueue/enqueue/) ---------------------------------------------------

    async def enqueue(
        self,
        kind: str,
        payload: Any = _UNSET,
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
        **fields: Any,
    ) -> Task:
        """Enqueue one task (SPEC §1 fields as keywords). With ``conn``, inside its transaction.

        An ``idempotency_key`` already used within the TTL returns the existing task.
        """
        body = {"kind": kind, **fields}
        if payload is not _UNSET:
            body["payload"] = payload
        return (await self.submit(self.new_task(body), conn=conn)).task

    def new_task(self, fields: Mapping[str, Any]) -> NewTask:
        """Validate producer input, with the App's handler defaults for fields not given."""
        handler = self.app.handlers.get(fields.get("kind", "")) if self.app else None
        if handler is not None:
            fields = {**handler.enqueue_defaults(), **fields}
        return new_task(fields)

    async def submit(
        self, task: NewTask, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> Enqueued:
        """Enqueue a validated task and say whether it was an idempotent replay.

        A key replays only a task of the same owner (SPEC §3); a ``parent_id`` must exist
        and the child gets its owner (``NotFound`` otherwise).
        """
        return await enqueue.submit(task, self.settings, enqueue.connect(self.pool, conn))

    async def enqueue_many(
        self,
        tasks: Iterable[NewTask | Mapping[str, Any]],
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
        user_id: str | None = None,
    ) -> builtins.list[Task]:
        """Enqueue many tasks in one statement and one transaction; returns them in input order.

        ``user_id`` owns the tasks that name no owner. Tasks whose idempotency key their owner
        already used come back as the existing tasks.
        """
        items = list(tasks)
        with gc_paused(len(items)):  # no await in here (pgqueue/gc_pause.py)
            batch = [t if isinstance(t, NewTask) else self.new_task(t) for t in items]
        return await enqueue.enqueue_many(
            batch, self.settings, enqueue.connect(self.pool, conn), user_id
        )

    # -- read -------------------------------------------------------------------------

    async def get(self, task_id: uuid.UUID | str) -> Task:
        """The task, or ``NotFound``."""
        tid = parse_task_id(task_id)
        async with self.pool.connection() as conn:
            task = await db.get(conn, tid)
        if task is None:
            raise NotFound(f"task {tid} does not exist")
        return task

    async def list(
        self,
        *,
        status: Status | str | None = None,
        queue: str | None = None,
        kind: str | None = None,
        tag: str | None = None,
        user_id: str | None = None,
        parent_id: uuid.UUID | str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """Tasks newest first, filtered; keyset-paginated by an opaque ``cursor``."""
        if not 1 <= limit <= _LIST_LIMIT_MAX:
            raise InvalidInput("limit", f"must be between 1 and {_LIST_LIMIT_MAX}, got {limit}")
        if status is not None:
            try:
                status = Status(status)
            except ValueError:
                choices = ", ".join(s.value for s in Status)
                raise InvalidInput("status", f"must be one of {choices}, got {status!r}") from None
        before_seq = _cursor_seq(cursor)
        parent = parse_task_id(parent_id, "parent_id") if parent_id is not None else None
        async with self.pool.connection() as conn:
            rows = await db.list_newest(
                conn,
                before_seq=before_seq,
                status=status,
                queue=queue,
                kind=kind,
                tag=tag,
                user_id=user_id,
                parent_id=parent,
                limit=limit + 1,
            )
        more = len(rows) > limit
        items = rows[:limit]
        return Page(items=items, next_cursor=str(items[-1].seq) if more else None)

    async def events(self, task_id: uuid.UUID | str) -> builtins.list[Event]:
        """The task's audit trail, oldest first."""
        tid = parse_task_id(task_id)
        async with self.pool.connection() as conn:
            return await db.events(conn, tid)

    async def why(self, task_id: uuid.UUID | str) -> Why:
        """Every reason the task is not running now (SPEC §12); none if it runs or finished."""
        tid = parse_task_id(task_id)
        async with self.pool.connection() as conn:
            return await limits.why(conn, tid)

    # -- control ----------------------------------------------------------------------

    async def cancel(self, task_id: uuid.UUID | str) -> Task:
        """Cancel a pending task now, or ask its worker to stop a running one."""
        async with self.pool.connection() as conn:
            return await db.cancel(conn, parse_task_id(task_id))

    async def retry(self, task_id: uuid.UUID | str) -> Task:
        """Put a failed or cancelled task back to pending with one more attempt allowed."""
        async with self.pool.connection() as conn:
            return await db.retry(conn, parse_task_id(task_id))

    async def signal(self, task_id: uuid.UUID | str, name: str, payload: Any = None) -> Task:
        """Send the signal ``name`` to a task (SPEC §11); a task waiting for it runs again.

        The first payload of a name stands: the same again is a no-op, another is a
        ``Conflict``; so is a finished task. ``NotFound`` for an unknown id.
        """
        return (await self.send_signal(task_id, name, payload)).task

    async def send_signal(
        self, task_id: uuid.UUID | str, name: str, payload: Any = None
    ) -> Enqueued:
        """``signal``, also saying whether it was a replay of the same signal."""
        tid = parse_task_id(task_id)
        if not _valid_signal_name(name):
            raise InvalidInput("name", f"must be 1-128 chars of [A-Za-z0-9_.:-], got {name!r}")
        body = encode_payload(payload, self.settings.max_payload_bytes)
        async with self.pool.connection() as conn:
            signalled = await db.signal(conn, tid, name, body)
        if not signalled.same:
            raise Conflict(
                f"name: signal {name!r} was already sent to task {tid} with another payload "
                "(the first payload stands)"
            )
        return Enqueued(signalled.task, replayed=not signalled.stored)

    # -- wait -------------------------------------------------------------------------

    async def wait(
        self,
        task_id: uuid.UUID | str,
        timeout_s: float | None = None,
        *,
        stop: asyncio.Event | None = None,
    ) -> Task:
        """Return the task once it is terminal, or its current state after ``timeout_s`` (or
        once ``stop`` is set: the HTTP long-polls set it when their client goes away or the
        server shuts down). It waits on NOTIFY, holding no connection (``pgqueue.wait``).
        """
        tid = parse_task_id(task_id)
        return await until_terminal(await self.watcher(), self.get, tid, timeout_s, stop)

    async def watcher(self) -> TaskWatcher:
        """The task watcher of this Queue, starting its LISTEN connection on first use."""
        async with self._listener_lock:
            if self._listener is None:
                self._listener = Listener(self._listen_dsn, [EVENTS])
            if self._watcher is None:
                self._watcher = TaskWatcher(self._listener)
            if self._own_listener and not self._listener.connected:
                await self._listener.start()
            # A shared listener (a worker's, a server's) LISTENs on the event channel from
            # its first watcher on: no second connection.
            await self._listener.listen(EVENTS)
        return self._watcher


_SIGNAL_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def _valid_signal_name(name: object) -> bool:
    """``object``: callers without a type checker get InvalidInput, not a TypeError."""
    return isinstance(name, str) and _SIGNAL_NAME.match(name) is not None


def _cursor_seq(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    # isdigit() alone accepts "²" and other digits int() refuses (a 500 once): ASCII only,
    # and within the bigint range of tasks.seq.
    if not (cursor.isascii() and cursor.isdigit()) or int(cursor) > _SEQ_MAX:
        raise InvalidInput("cursor", f"{cursor!r} is not a cursor returned by a previous page")
    return int(cursor)


_SEQ_MAX = 2**63 - 1
