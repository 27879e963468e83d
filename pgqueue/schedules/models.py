"""Schedule rows and inputs as msgspec Structs (SPEC §4 ``/schedules``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec

ScheduleName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
]

# Fields a template may not carry: the scheduler sets them on each fire.
TEMPLATE_FORBIDDEN = ("run_at", "idempotency_key", "parent_id")


class Schedule(msgspec.Struct, frozen=True):
    """One row of ``pgqueue.schedules``; ``task`` is the validated template."""

    name: str
    cron: str
    timezone: str
    task: dict[str, Any]
    enabled: bool
    next_fire_at: datetime
    last_fire_at: datetime | None
    last_task_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class ScheduleSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new schedule: ``{"name", "cron", "timezone"?, "task": {...}, "enabled"?}``."""

    name: ScheduleName
    cron: str
    task: dict[str, Any]
    timezone: str = "UTC"
    enabled: bool = True


class SchedulePatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A change to a schedule (``PATCH /schedules/{name}``): the fields given replace."""

    cron: str | None = None
    timezone: str | None = None
    task: dict[str, Any] | None = None
    enabled: bool | None = None
