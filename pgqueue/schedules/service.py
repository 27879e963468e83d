"""Managing schedules: create, list, get, update, delete, pause, resume.

The one service layer the CLI (``pgqueue schedule``) and the HTTP API (``/schedules``) share,
so both validate alike: the cron expression and time zone (``cron.py``), and the task
template exactly as an enqueue would (``pgqueue.enqueue.new_task``) — a template that could
never enqueue is refused now, not at 3 a.m. when it fires.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from psycopg_pool import AsyncConnectionPool

from pgqueue.db import clock
from pgqueue.db import schedules as db
from pgqueue.enqueue import new_task, validation_field
from pgqueue.errors import Conflict, InvalidInput, NotFound
from pgqueue.schedules import cron
from pgqueue.schedules.models import TEMPLATE_FORBIDDEN, Schedule, SchedulePatch, ScheduleSpec
from pgqueue.settings import Settings

T = TypeVar("T", ScheduleSpec, SchedulePatch)


def validate_template(task: dict[str, Any], max_payload_bytes: int) -> dict[str, Any]:
    """The template as it will be stored; InvalidInput naming ``task.<field>`` otherwise."""
    for name in TEMPLATE_FORBIDDEN:
        if name in task:
            raise InvalidInput(f"task.{name}", "is set by the scheduler on each fire")
    try:
        checked = new_task(task)
    except InvalidInput as exc:
        raise InvalidInput(f"task.{exc.field}", str(exc)) from None
    size = len(msgspec.json.encode(checked.payload))
    if size > max_payload_bytes:
        raise InvalidInput("task.payload", f"is {size} bytes, over the {max_payload_bytes} limit")
    return task


class Schedules:
    """Schedule management over a pool; every time comes from the database clock."""

    def __init__(self, pool: AsyncConnectionPool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings

    async def create(self, spec: ScheduleSpec | dict[str, Any]) -> Schedule:
        """Add a schedule; Conflict when the name is taken. It first fires at its next slot."""
        spec = _convert(spec, ScheduleSpec)
        expr = cron.validate(spec.cron)
        cron.zone(spec.timezone)
        template = validate_template(spec.task, self.settings.max_payload_bytes)
        async with self.pool.connection() as conn:
            now = await clock.now(conn)
            row = await db.insert(
                conn,
                {
                    "name": spec.name,
                    "cron": expr,
                    "timezone": spec.timezone,
                    "task": msgspec.json.encode(template).decode(),
                    "enabled": spec.enabled,
                    "next_fire_at": cron.next_fire(expr, spec.timezone, now),
                },
            )
        if row is None:
            raise Conflict(f"name: a schedule named {spec.name!r} already exists")
        return row

    async def list(self) -> list[Schedule]:
        async with self.pool.connection() as conn:
            return await db.list_all(conn)

    async def get(self, name: str) -> Schedule:
        async with self.pool.connection() as conn:
            row = await db.get(conn, name)
        if row is None:
            raise NotFound(f"schedule {name!r} does not exist")
        return row

    async def update(self, name: str, patch: SchedulePatch | dict[str, Any]) -> Schedule:
        """Change a schedule. A new cron or time zone, or a resume, restarts its clock from
        now: slots missed while it was paused are not fired."""
        patch = _convert(patch, SchedulePatch)
        async with self.pool.connection() as conn, conn.transaction():
            old = await db.get(conn, name, for_update=True)
            if old is None:
                raise NotFound(f"schedule {name!r} does not exist")
            expr = cron.validate(patch.cron) if patch.cron is not None else old.cron
            timezone = patch.timezone if patch.timezone is not None else old.timezone
            cron.zone(timezone)
            template = (
                validate_template(patch.task, self.settings.max_payload_bytes)
                if patch.task is not None
                else old.task
            )
            enabled = patch.enabled if patch.enabled is not None else old.enabled
            next_fire_at = old.next_fire_at
            if (expr, timezone) != (old.cron, old.timezone) or (enabled and not old.enabled):
                next_fire_at = cron.next_fire(expr, timezone, await clock.now(conn))
            row = await db.update(
                conn,
                {
                    "name": name,
                    "cron": expr,
                    "timezone": timezone,
                    "task": msgspec.json.encode(template).decode(),
                    "enabled": enabled,
                    "next_fire_at": next_fire_at,
                },
            )
        assert row is not None  # locked above
        return row

    async def pause(self, name: str) -> Schedule:
        return await self.update(name, SchedulePatch(enabled=False))

    async def resume(self, name: str) -> Schedule:
        return await self.update(name, SchedulePatch(enabled=True))

    async def delete(self, name: str) -> None:
        async with self.pool.connection() as conn:
            deleted = await db.delete(conn, name)
        if not deleted:
            raise NotFound(f"schedule {name!r} does not exist")


def _convert(value: T | dict[str, Any], kind: type[T]) -> T:
    if isinstance(value, kind):
        return value
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        message = str(exc)
        raise InvalidInput(validation_field(message, "schedule"), message) from None
