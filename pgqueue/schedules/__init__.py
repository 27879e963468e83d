"""Recurring schedules (SPEC §4 ``/schedules``, §7 ``pgqueue.schedules``).

- ``cron``: when a cron expression fires next, in a time zone, across DST;
- ``service``: create, list, update, pause, resume and delete, with validation;
- ``scheduler``: firing due schedules, exactly once per slot across processes.
"""

from pgqueue.schedules.models import Schedule, SchedulePatch, ScheduleSpec
from pgqueue.schedules.scheduler import fire_due_schedules, run_scheduler
from pgqueue.schedules.service import Schedules

__all__ = [
    "Schedule",
    "SchedulePatch",
    "ScheduleSpec",
    "Schedules",
    "fire_due_schedules",
    "run_scheduler",
]
