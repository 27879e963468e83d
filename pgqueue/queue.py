"""``pgqueue.Queue``: the producer's side — enqueue, read, cancel, retry and wait.

The HTTP API is a thin layer over this class, so Python callers and HTTP callers get the same
rules (validation, idempotency, transitions) from one place.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import math
import re
import uuid
from collections.abc import AsyncGenerator, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Self

import msgspec
import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from pgqueue import otel
from pgqueue.db import limits
from pgqueue.db.listener import Listener
from pgqueue.db.pool import create_pool
from pgqueue.db.queries import QUERIES
from pgqueue.db.rows import event_row, task_row
from pgqueue.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from pgqueue.events import EVENTS
from pgqueue.limits import Why
from pgqueue.pages import Page
from pgqueue.settings import Settings
from pgqueue.tasks import MAX_DEPENDENCIES, Event, NewTask, Status, Task, TaskId, created_task
from pgqueue.watch import TaskWatcher
from pgqueue.webhooks import allowed_hosts, check_target

if TYPE_CHECKING:
    from pgqueue.worker.handlers import App

_UNSET: Any = object()
_LIST_LIMIT_MAX = 500


class Enqueued(msgspec.Struct, frozen=True):
    """An enqueue's answer: the task, and whether it already existed (idempotent replay)."""

    task: Task
    replayed: bool


def new_task(fields: Mapping[str, Any]) -> NewTask:
    """Validate producer input into a ``NewTask``; the error names the offending field."""
    try:
        return msgspec.convert(fields, NewTask, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        raise InvalidInput(validation_field(message, "task"), message) from None


def validation_field(message: str, default: str) -> str:
    """The field a msgspec validation message is about.

    ``Expected ... - at `$.priority``` names it by path; a missing or unknown top-level field
    (``Object missing required field `kind```) names it in the text instead.
    """
    if "at `$." in message:
        return message.rpartition("at `$.")[2].rstrip("`").split("[")[0] or default
    match = re.search(r"field `([^`]+)`", message)
    return match.group(1) if match else default


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

    # -- enqueue ----------------------------------------------------------------------

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
        and the child gets its owner (``NotFound`` otherwise, see ``_with_parent_owners``).
        """
        with otel.sending([task]) as send:  # a producer span; the task carries its traceparent
            enqueued = await self._submit(send.tasks[0], conn)
            send.created([enqueued.task])
        return enqueued

    async def _submit(self, task: NewTask, conn: psycopg.AsyncConnection[Any] | None) -> Enqueued:
        payload = self._encode_payload(task.payload)
        if task.ref is not None or task.depends_on_refs:
            raise InvalidInput("depends_on_refs", "ref and depends_on_refs are for batches only")
        if task.callback_url is not None:
            await check_target(task.callback_url, allowed_hosts(self.settings))
        async with self._connection(conn) as c:
            if task.parent_id is not None or task.depends_on:
                task = (await self._with_parent_owners(c, [task], None))[0]
            params = self._insert_params(task, payload)
            for _ in range(10):  # a key released or deleted under our feet: try again
                # tuple rows whatever the caller's connection's row factory is
                cur = c.cursor(row_factory=tuple_row)
                with _missing_dependency(None):
                    await cur.execute(QUERIES["task_insert"], params)
                inserted = await cur.fetchone()
                if inserted is not None:
                    if inserted[_STATUS_AT] != Status.PENDING:  # blocked, or a dependency failed
                        return Enqueued((await _read_back(c, [inserted[0]]))[0], replayed=False)
                    return Enqueued(created_task(task, _decode(payload), inserted), replayed=False)
                assert task.idempotency_key is not None  # only a key can conflict
                holder = await self._key_holder(c, task.user_id, task.idempotency_key)
                if holder is None:
                    continue
                _check_same_task(holder, task)
                return Enqueued(holder, replayed=True)
        raise Conflict(f"idempotency_key: {task.idempotency_key!r} is contended; try again")

    async def enqueue_many(
        self,
        tasks: Iterable[NewTask | Mapping[str, Any]],
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
        user_id: str | None = None,
    ) -> list[Task]:
        """Enqueue many tasks in one statement and one transaction; returns them in input order.

        ``user_id`` owns the tasks that name no owner. Tasks whose idempotency key their owner
        already used come back as the existing tasks.
        """
        batch = [t if isinstance(t, NewTask) else self.new_task(t) for t in tasks]
        if not batch:
            return []
        with otel.sending(batch) as send:  # one producer span for the batch
            return await self._enqueue_many(send.tasks, conn, user_id)

    async def _enqueue_many(
        self,
        batch: list[NewTask],
        conn: psycopg.AsyncConnection[Any] | None,
        user_id: str | None,
    ) -> list[Task]:
        payloads = [
            self._encode_payload(t.payload, f"tasks[{i}].payload") for i, t in enumerate(batch)
        ]
        allow = allowed_hosts(self.settings)
        for i, t in enumerate(batch):
            if t.callback_url is not None:
                await check_target(t.callback_url, allow, f"tasks[{i}].callback_url")
        ids: list[uuid.UUID | None] = [None] * len(batch)
        if any(t.ref is not None or t.depends_on_refs for t in batch):
            batch, ids = _resolve_refs(batch)
        async with self._connection(conn) as c:
            if any(t.parent_id is not None or t.depends_on for t in batch):
                batch = await self._with_parent_owners(c, batch, user_id, ids)
            rows = [_batch_row(t, p) for t, p in zip(batch, payloads, strict=True)]
            encoded = (
                msgspec.json.encode(rows)
                if not any(ids)
                else msgspec.json.encode(
                    [_with_id(row, i) for row, i in zip(rows, ids, strict=True)]
                )
            )
            params = {"tasks": encoded.decode(), "user_id": user_id}
            if any(t.depends_on for t in batch) and not any(t.idempotency_key for t in batch):
                async with c.transaction():  # blocked rows are read back in the same snapshot
                    return await self._insert_many(c, batch, payloads, params)
            if any(t.idempotency_key is not None for t in batch):
                # replays are read after the INSERT: the same transaction must see both
                async with c.transaction():
                    return await self._insert_many(c, batch, payloads, params)
            # one statement is atomic by itself; BEGIN and COMMIT were two more round trips
            return await self._insert_many(c, batch, payloads, params)

    async def _with_parent_owners(
        self,
        conn: psycopg.AsyncConnection[Any],
        batch: list[NewTask],
        default_owner: str | None,
        batch_ids: Iterable[uuid.UUID | None] = (),
    ) -> list[NewTask]:
        """The tasks with their parents' owners (SPEC §1 ``parent_id``), checked.

        A parent must exist, and a task that has an owner (its own ``user_id``, else
        ``default_owner``) may only hang under a task of that owner: otherwise ``NotFound``,
        worded the same whether the parent is missing or someone else's, so the answer tells
        a user nothing about other users' tasks. A task without an owner takes its parent's.
        Costs one query, only for batches that name a parent.
        """
        in_batch = {i for i in batch_ids if i is not None}  # refs: checked as their items
        wanted = sorted(
            {t.parent_id for t in batch if t.parent_id is not None}
            | ({d for t in batch for d in t.depends_on} - in_batch)
        )
        cur = conn.cursor(row_factory=tuple_row)
        await cur.execute(QUERIES["task_parent_owners"], {"ids": wanted})
        owners: dict[uuid.UUID, str | None] = {row[0]: row[1] for row in await cur.fetchall()}
        out: list[NewTask] = []
        for i, task in enumerate(batch):
            # depends_on (SPEC §10): tasks the caller may read, worded as for a parent
            owner = task.user_id if task.user_id is not None else default_owner
            for dep in task.depends_on:
                if dep in in_batch:
                    continue
                if dep not in owners or (owner is not None and owner != owners[dep]):
                    field = "depends_on" if len(batch) == 1 else f"tasks[{i}].depends_on"
                    raise NotFound(f"{field}: task {dep} does not exist (or is not this owner's)")
            parent = task.parent_id
            if parent is not None:
                owner = task.user_id if task.user_id is not None else default_owner
                if parent not in owners or (owner is not None and owner != owners[parent]):
                    field = "parent_id" if len(batch) == 1 else f"tasks[{i}].parent_id"
                    raise NotFound(
                        f"{field}: task {parent} does not exist (or is not this owner's)"
                    )
                if owner is None and owners[parent] is not None:
                    task = msgspec.structs.replace(task, user_id=owners[parent])
            out.append(task)
        return out

    async def _insert_many(
        self,
        conn: psycopg.AsyncConnection[Any],
        batch: list[NewTask],
        payloads: list[str],
        params: dict[str, Any],
    ) -> list[Task]:
        cur = conn.cursor(row_factory=tuple_row)
        with _missing_dependency(batch):
            await cur.execute(QUERIES["task_insert_many"], params)
        inserted = sorted(await cur.fetchall(), key=lambda row: row[1])  # seq: input order
        if len(inserted) == len(batch):
            out = [
                created_task(t, _decode(p), row)
                for t, p, row in zip(batch, payloads, inserted, strict=True)
            ]
        else:
            out = await self._merge_replays(conn, batch, payloads, inserted, params["user_id"])
        # blocked (or cancelled: a dependency failed): what the database decided, read back
        decided = [row[0] for row in inserted if row[_STATUS_AT] != Status.PENDING]
        if decided:
            fresh = {t.id: t for t in await _read_back(conn, decided)}
            out = [fresh.get(t.id, t) for t in out]
        return out

    async def _merge_replays(
        self,
        conn: psycopg.AsyncConnection[Any],
        batch: list[NewTask],
        payloads: list[str],
        inserted: list[Any],
        default_owner: str | None,
    ) -> list[Task]:
        """Input order again when some keys were taken: the inserted rows, and the holders.

        Keys are matched per owner, ``(owner or "", key)`` as the unique index has them."""
        fresh = iter(row for row in inserted if row[_KEY_AT] is None)  # seq order = input order
        by_key = {
            (row[_OWNER_AT] or "", row[_KEY_AT]): row
            for row in inserted
            if row[_KEY_AT] is not None
        }

        def scope(task: NewTask) -> tuple[str, str | None]:
            owner = task.user_id if task.user_id is not None else default_owner
            return owner or "", task.idempotency_key

        missing = sorted({scope(t) for t in batch if t.idempotency_key} - set(by_key))
        cur = conn.cursor(row_factory=task_row)
        await cur.execute(
            QUERIES["task_get_by_idempotency_keys"],
            {"owners": [owner for owner, _ in missing], "keys": [key for _, key in missing]},
        )
        holders: dict[tuple[str, str | None], Task] = {
            (t.user_id or "", t.idempotency_key): t for t in await cur.fetchall()
        }
        expired = [k for (_, k), t in holders.items() if self._expired(t)]
        if expired:
            raise Conflict(
                f"idempotency_key: keys {expired[:5]} belong to expired tasks; "
                "enqueue them one by one to reuse them"
            )
        out: list[Task] = []
        for new, payload in zip(batch, payloads, strict=True):
            key = new.idempotency_key
            if key is None:
                out.append(created_task(new, _decode(payload), next(fresh)))
                continue
            holder = holders.get(scope(new))
            if holder is None:
                row = by_key.get(scope(new))
                if row is None:
                    raise Conflict(f"idempotency_key: {key!r} vanished; try again")
                # the first task of the batch with this key was inserted; later ones replay it
                holder = holders[scope(new)] = created_task(new, _decode(payload), row)
            _check_same_task(holder, new)
            out.append(holder)
        return out

    async def _key_holder(
        self, conn: psycopg.AsyncConnection[Any], owner: str | None, key: str
    ) -> Task | None:
        """The owner's task holding ``key``; None when it expired and let go of the key."""
        cur = await conn.execute(
            QUERIES["task_release_idempotency_key"],
            {"user_id": owner, "key": key, "ttl_s": self.settings.idempotency_ttl_s},
        )
        if await cur.fetchone() is not None:
            return None  # the old holder expired and let go of the key: insert again
        cur = conn.cursor(row_factory=task_row)
        await cur.execute(
            QUERIES["task_get_by_idempotency_keys"], {"owners": [owner or ""], "keys": [key]}
        )
        return await cur.fetchone()

    def _expired(self, task: Task) -> bool:
        age = datetime.now(task.created_at.tzinfo) - task.created_at
        return age.total_seconds() > self.settings.idempotency_ttl_s

    def _encode_payload(self, payload: Any, field: str = "payload") -> str:
        try:
            encoded = msgspec.json.encode(payload)
        except (TypeError, msgspec.EncodeError) as exc:
            raise InvalidInput(field, f"is not JSON-serialisable: {exc}") from None
        if len(encoded) > self.settings.max_payload_bytes:
            raise PayloadTooLarge(
                field,
                f"is {len(encoded)} bytes, more than the limit of "
                f"{self.settings.max_payload_bytes} (PGQUEUE_MAX_PAYLOAD_BYTES)",
            )
        return encoded.decode()

    @staticmethod
    def _insert_params(task: NewTask, payload: str) -> dict[str, Any]:
        return {
            "kind": task.kind,
            "payload": payload,
            "queue": task.queue,
            "priority": task.priority,
            "run_at": task.run_at,
            "delay_s": task.delay_s,
            "max_retries": task.max_retries,
            "timeout_s": task.timeout_s,
            "backoff_base_s": task.backoff_base_s,
            "backoff_max_s": task.backoff_max_s,
            "idempotency_key": task.idempotency_key,
            "user_id": task.user_id,
            "tags": task.tags,
            "parent_id": task.parent_id,
            "traceparent": task.traceparent,
            "depends_on": task.depends_on,
            "callback_url": task.callback_url,
        }

    # -- read -------------------------------------------------------------------------

    async def get(self, task_id: uuid.UUID | str) -> Task:
        """The task, or ``NotFound``."""
        tid = _task_id(task_id)
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=task_row)
            await cur.execute(QUERIES["task_get"], {"id": tid})
            task = await cur.fetchone()
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
        params = {
            "before_seq": _cursor_seq(cursor),
            "status": status,
            "queue": queue,
            "kind": kind,
            "tag": tag,
            "user_id": user_id,
            "parent_id": _task_id(parent_id, "parent_id") if parent_id is not None else None,
            "limit": limit + 1,
        }
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=task_row)
            await cur.execute(QUERIES["task_list"], params)
            rows = await cur.fetchall()
        more = len(rows) > limit
        items = rows[:limit]
        return Page(items=items, next_cursor=str(items[-1].seq) if more else None)

    async def events(self, task_id: uuid.UUID | str) -> builtins.list[Event]:
        """The task's audit trail, oldest first."""
        tid = _task_id(task_id)
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=event_row)
            await cur.execute(QUERIES["task_events"], {"id": tid})
            return await cur.fetchall()

    async def why(self, task_id: uuid.UUID | str) -> Why:
        """Every reason the task is not running now (SPEC §12); none if it runs or finished."""
        tid = _task_id(task_id)
        async with self.pool.connection() as conn:
            return await limits.why(conn, tid)

    # -- control ----------------------------------------------------------------------

    async def cancel(self, task_id: uuid.UUID | str) -> Task:
        """Cancel a pending task now, or ask its worker to stop a running one."""
        return await self._control("task_cancel", task_id)

    async def retry(self, task_id: uuid.UUID | str) -> Task:
        """Put a failed or cancelled task back to pending with one more attempt allowed."""
        return await self._control("task_retry", task_id)

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
        tid = _task_id(task_id)
        if not _valid_signal_name(name):
            raise InvalidInput("name", f"must be 1-128 chars of [A-Za-z0-9_.:-], got {name!r}")
        body = self._encode_payload(payload)
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            try:
                await cur.execute(
                    QUERIES["task_signal"], {"id": tid, "name": name, "payload": body}
                )
            except pg_errors.NoDataFound:
                raise NotFound(f"task {tid} does not exist") from None
            except pg_errors.ObjectNotInPrerequisiteState as exc:
                raise Conflict(str(exc.diag.message_primary)) from None
            row = await cur.fetchone()
        assert row is not None
        *values, stored, same = row
        values[_TASK_STATUS_AT] = Status(values[_TASK_STATUS_AT])
        task = Task(*values)
        if not same:
            raise Conflict(
                f"name: signal {name!r} was already sent to task {tid} with another payload "
                "(the first payload stands)"
            )
        return Enqueued(task, replayed=not stored)

    async def _control(self, query: str, task_id: uuid.UUID | str) -> Task:
        tid = _task_id(task_id)
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=task_row)
            try:
                await cur.execute(QUERIES[query], {"id": tid})
            except pg_errors.NoDataFound:
                raise NotFound(f"task {tid} does not exist") from None
            except pg_errors.ObjectNotInPrerequisiteState as exc:
                raise Conflict(exc.diag.message_primary or str(exc)) from None
            task = await cur.fetchone()
        assert task is not None
        return task

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
        server shuts down).

        It reads the task once, then waits on NOTIFY alone, holding no connection: only a
        change announcing a terminal status (or a listener reconnect, which may have lost
        notifications) makes it read again, and the end of the wait reads the current state
        once. A re-read every few seconds per waiter kept the database busy for nothing
        (500 abandoned long-polls were 100 queries a second).
        """
        tid = _task_id(task_id)
        watcher = await self.watcher()
        loop = asyncio.get_running_loop()
        deadline = math.inf if timeout_s is None else loop.time() + timeout_s
        with watcher.follow(tid) as watch:
            task = await self.get(tid)  # after subscribing: no change slips in between
            while not task.status.terminal:
                if not await _changed(watch.changed, stop, deadline - loop.time()):
                    return await self.get(tid)
                watch.changed.clear()
                if watch.needs_read():
                    watch.resync = False
                    task = await self.get(tid)
            return task

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

    # -- plumbing ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(
        self, conn: psycopg.AsyncConnection[Any] | None
    ) -> AsyncGenerator[psycopg.AsyncConnection[Any], None]:
        if conn is not None:
            yield conn  # the caller's connection: its transaction is ours
        else:
            async with self.pool.connection() as pooled:
                yield pooled


_OWNER_AT = 4  # user_id's place in task_insert(_many)'s RETURNING
_KEY_AT = 5  # idempotency_key's place in it
_STATUS_AT = 6  # status: pending, or what the dependencies decided
_TASK_STATUS_AT = list(Task.__struct_fields__).index("status")
_SIGNAL_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def _valid_signal_name(name: object) -> bool:
    """``object``: callers without a type checker get InvalidInput, not a TypeError."""
    return isinstance(name, str) and _SIGNAL_NAME.match(name) is not None


def _decode(payload: str) -> Any:
    return msgspec.json.decode(payload)


def _batch_row(task: NewTask, payload: str) -> NewTask:
    """One element of task_insert_many's JSON array: the task with its payload already
    encoded. NewTask encodes only the fields that differ from its defaults."""
    return msgspec.structs.replace(
        task, payload=msgspec.Raw(payload.encode()), ref=None, depends_on_refs=[]
    )


def _with_id(row: NewTask, task_id: uuid.UUID | None) -> Any:
    """A batch row with the id its refs were resolved to (graph batches only)."""
    if task_id is None:
        return row
    encoded = msgspec.json.encode(row)  # '{"kind":...}': kind is always there
    return msgspec.Raw(b'{"id":"' + str(task_id).encode() + b'",' + encoded[1:])


def _resolve_refs(batch: list[NewTask]) -> tuple[list[NewTask], list[uuid.UUID | None]]:
    """A graph in one batch (SPEC §10): each item with a ``ref`` gets its id now, and each
    ``depends_on_refs`` becomes ids in ``depends_on``. A ref must be unique and name an earlier
    item (so the graph has no cycle, and the database inserts a dependency first)."""
    ids: list[uuid.UUID | None] = []
    known: dict[str, uuid.UUID] = {}
    out: list[NewTask] = []
    for i, task in enumerate(batch):
        deps = list(task.depends_on)
        for ref in task.depends_on_refs:
            if ref not in known:
                raise InvalidInput(
                    f"tasks[{i}].depends_on_refs",
                    f"{ref!r} is not the ref of an earlier item of this batch",
                )
            if known[ref] not in deps:
                deps.append(known[ref])
        if len(deps) > MAX_DEPENDENCIES:
            raise InvalidInput(f"tasks[{i}].depends_on", f"at most {MAX_DEPENDENCIES} dependencies")
        task_id = None
        if task.ref is not None:
            if task.ref in known:
                raise InvalidInput(f"tasks[{i}].ref", f"{task.ref!r} is used twice in this batch")
            if task.idempotency_key is not None:
                raise InvalidInput(
                    f"tasks[{i}].idempotency_key",
                    "an item with a ref cannot have an idempotency key (a replay has another id)",
                )
            task_id = known[task.ref] = uuid.uuid4()
        ids.append(task_id)
        out.append(msgspec.structs.replace(task, depends_on=deps, ref=None, depends_on_refs=[]))
    return out, ids


async def _read_back(conn: psycopg.AsyncConnection[Any], ids: list[Any]) -> builtins.list[Task]:
    cur = conn.cursor(row_factory=task_row)
    await cur.execute(QUERIES["task_get_many"], {"ids": ids})
    return await cur.fetchall()


@contextlib.contextmanager
def _missing_dependency(batch: list[NewTask] | None) -> Any:
    """A dependency that vanished between the owner check and the insert (purged): 404."""
    try:
        yield
    except pg_errors.ForeignKeyViolation as exc:
        missing = exc.diag.message_detail or "?"
        field = "depends_on"
        if batch is not None and len(batch) > 1:
            where = [i for i, t in enumerate(batch) if any(str(d) == missing for d in t.depends_on)]
            field = f"tasks[{where[0] if where else 0}].depends_on"
        raise NotFound(f"{field}: task {missing} does not exist") from None


def _check_same_task(holder: Task, new: NewTask) -> None:
    if (holder.queue, holder.kind, holder.payload) != (new.queue, new.kind, new.payload):
        raise Conflict(
            f"idempotency_key: {new.idempotency_key!r} is already used by task {holder.id} "
            "with a different queue, kind or payload"
        )


async def _changed(changed: asyncio.Event, stop: asyncio.Event | None, timeout: float) -> bool:
    """Wait until ``changed`` is set (True), or ``stop`` is set or ``timeout`` passes (False)."""
    if timeout <= 0 or (stop is not None and stop.is_set()):
        return changed.is_set()
    waiters = {asyncio.ensure_future(changed.wait())}
    if stop is not None:
        waiters.add(asyncio.ensure_future(stop.wait()))
    try:
        await asyncio.wait(
            waiters,
            timeout=None if math.isinf(timeout) else timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        for waiter in waiters:
            waiter.cancel()
    return changed.is_set() and not (stop is not None and stop.is_set())


def _task_id(value: uuid.UUID | str, field: str = "id") -> TaskId:
    if isinstance(value, uuid.UUID):
        return TaskId(value)
    try:
        return TaskId(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise InvalidInput(field, f"{value!r} is not a UUID") from None


def _cursor_seq(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    # isdigit() alone accepts "²" and other digits int() refuses (a 500 once): ASCII only,
    # and within the bigint range of tasks.seq.
    if not (cursor.isascii() and cursor.isdigit()) or int(cursor) > _SEQ_MAX:
        raise InvalidInput("cursor", f"{cursor!r} is not a cursor returned by a previous page")
    return int(cursor)


_SEQ_MAX = 2**63 - 1
