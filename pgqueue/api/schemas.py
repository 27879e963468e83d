"""Request and response bodies of the HTTP API for producers and operators: msgspec
Structs, bounds in the types. The remote-worker protocol's bodies are ``api/worker_bodies.py``,
the WebSocket's ``api/stream/incoming.py``.

Inputs forbid unknown fields, so a typo is a 400 naming the field rather than a silently
ignored option. Tasks go out as ``pgqueue.tasks.Task`` itself (one definition of a task).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from pgqueue.limits import CircuitBreaker, RateLimit
from pgqueue.tasks import NewTask

MAX_BATCH = 10_000
MAX_WAIT_S = 300.0

WaitSeconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_WAIT_S)]


class Input(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every request body: unknown fields are an error."""


class Batch(Input, frozen=True):
    """``POST /tasks/batch``: up to 10,000 tasks, enqueued in one transaction."""

    tasks: Annotated[list[NewTask], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


SignalName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
]


class SignalIn(Input, frozen=True):
    """``POST /tasks/{id}/signal`` (SPEC §11)."""

    name: SignalName
    payload: Any = None


class QueueSettingsPatch(Input, frozen=True):
    """``PATCH /queues/{name}``: pause/resume, a concurrency limit, and the §12 limits; null
    removes a limit, an absent field leaves it as it is."""

    paused: bool | msgspec.UnsetType = msgspec.UNSET
    concurrency_limit: Annotated[int, msgspec.Meta(ge=1, le=100000)] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )
    rate_limit: RateLimit | msgspec.UnsetType | None = msgspec.UNSET
    per_user_concurrency: (
        Annotated[int, msgspec.Meta(ge=1, le=100000)] | msgspec.UnsetType | None
    ) = msgspec.UNSET
    fair: bool | msgspec.UnsetType = msgspec.UNSET
    circuit_breaker: CircuitBreaker | msgspec.UnsetType | None = msgspec.UNSET

    def changes(self) -> dict[str, Any]:
        """The settings this patch sets (``pgqueue.db.queues.configure`` applies them)."""
        fields = msgspec.structs.fields(self)
        return {f.name: v for f in fields if (v := getattr(self, f.name)) is not msgspec.UNSET}


class Health(msgspec.Struct, frozen=True):
    status: str
    detail: str | None = None
    schema_version: int | None = None
    latest_version: int | None = None
