"""The task: its row, its states (docs/state-machine.md) and the bounds of its fields.

The database enforces the state machine (its SQL functions and CHECK constraints); this
module is the Python vocabulary for it.
"""

from __future__ import annotations

import enum
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NewType

import msgspec

from pgqueue.errors import InvalidInput, PayloadTooLarge

TaskId = NewType("TaskId", uuid.UUID)
WorkerId = NewType("WorkerId", str)


def new_worker_id() -> WorkerId:
    """Unique per process and start: ``host:pid:random`` (a restarted worker is a new one)."""
    return WorkerId(f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")


class Status(enum.StrEnum):
    """``pending → running → completed | failed | cancelled``; ``running → pending`` on retry,
    stall or release; ``failed | cancelled → pending`` by hand. ``blocked → pending`` when the
    last dependency completes (SPEC §10), ``running → waiting → pending`` around a signal
    (§11)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"
    WAITING = "waiting"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})

# Field bounds shared by Python enqueue and the HTTP bodies (the database checks them again).
# Every number a caller sends is finite and bounded (SPEC §2 "Bounded numbers"): an unbounded
# one was accepted here and then broke a later statement (a retry's make_interval, a sum).
MAX_BACKOFF_S = 86400.0  # backoff_base_s / backoff_max_s, per task or handler (CHECK in 0006)
MAX_TIMEOUT_S = 604800.0  # timeout_s: 7 days (CHECK in 0006)
MAX_DELAY_S = 10 * 365 * 86400.0  # delay_s: ten years; run_at takes any later time
MAX_USAGE_TOKENS = 10**12  # input_tokens / output_tokens of one usage report
MAX_USAGE_COST = 1e9  # cost of one usage report
QueueName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
KindName = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
Priority = Annotated[int, msgspec.Meta(ge=-1000, le=1000)]
MaxRetries = Annotated[int, msgspec.Meta(ge=0, le=1000)]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]
BackoffSeconds = Annotated[float, msgspec.Meta(gt=0, le=MAX_BACKOFF_S)]
TimeoutSeconds = Annotated[float, msgspec.Meta(gt=0, le=MAX_TIMEOUT_S)]
DelaySeconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_DELAY_S)]
UsageTokens = Annotated[int, msgspec.Meta(ge=0, le=MAX_USAGE_TOKENS)]
UsageCost = Annotated[float, msgspec.Meta(ge=0, le=MAX_USAGE_COST)]
IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
MAX_DEPENDENCIES = 100  # depends_on (CHECK in 0013)
Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
CallbackUrl = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
RESERVED_QUEUE_PREFIX = "pgqueue."  # pgqueue's own queues (pgqueue.webhooks): no producer's
# W3C Trace Context (https://www.w3.org/TR/trace-context/#traceparent-header), version 00.
Traceparent = Annotated[
    str, msgspec.Meta(pattern=r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$", max_length=55)
]


class Usage(msgspec.Struct, frozen=True):
    """One attempt's usage report: tokens and cost, added to the task's totals when recorded.

    Bounded (``MAX_USAGE_TOKENS``, ``MAX_USAGE_COST``, finite): ``checked`` builds one or
    raises. The totals the database sums saturate instead of overflowing (usage_add).
    """

    input_tokens: UsageTokens = 0
    output_tokens: UsageTokens = 0
    cost: UsageCost = 0.0

    @classmethod
    def checked(cls, input_tokens: int = 0, output_tokens: int = 0, cost: float = 0.0) -> Usage:
        """A report within the bounds, or ``ValueError`` (an ``InvalidInput``) naming the field.

        Struct construction does not check ``Meta`` bounds; decoding does, so go through it.
        """
        try:
            return msgspec.convert(
                {"input_tokens": input_tokens, "output_tokens": output_tokens, "cost": cost}, cls
            )
        except msgspec.ValidationError as exc:
            raise InvalidInput("usage", str(exc)) from None


class Task(msgspec.Struct, frozen=True):
    """One row of ``pgqueue.tasks`` (SPEC §1). Times come from the database clock."""

    id: TaskId
    seq: int
    queue: str
    kind: str
    payload: Any
    priority: int
    run_at: datetime
    status: Status
    attempts: int
    max_retries: int
    timeout_s: float | None
    backoff_base_s: float | None
    backoff_max_s: float | None
    idempotency_key: str | None
    user_id: str | None
    tags: list[str]
    parent_id: TaskId | None
    result: Any
    error: dict[str, Any] | None
    exit_code: int | None
    progress: dict[str, Any] | None
    checkpoint: dict[str, Any] | None
    usage: dict[str, Any]
    worker_id: str | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    traceparent: str | None  # the producer's trace (migration 0008, pgqueue.otel)
    # Workflows (migration 0013): dependencies (§10), the webhook (§13), the wait (§11).
    depends_on: list[TaskId]
    deps_left: int  # how many dependencies are unfinished while blocked
    callback_url: str | None
    waiting_for: dict[str, Any] | None

    @property
    def lease(self) -> str:
        """The claim's lease as a string: ``<attempt>:<worker id>``."""
        return f"{self.attempts}:{self.worker_id}"


class NewTask(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """What a producer may set when enqueuing (SPEC §1). Validated before any SQL runs.

    Encoded without the fields left at their defaults: task_insert_many's coalesce()s give
    the same defaults, and PostgreSQL parses fewer keys (jsonb_to_recordset's CPU grows with
    the keys per row; docs/benchmarks.md).
    """

    kind: KindName
    # Empty [] and {} defaults: msgspec copies them per instance, and omit_defaults leaves
    # them out of the encoding (a default_factory of list[...] would not be recognised).
    payload: Any = {}
    queue: QueueName = "default"
    priority: Priority = 0
    run_at: datetime | None = None
    delay_s: DelaySeconds = 0.0
    max_retries: MaxRetries = 3
    timeout_s: TimeoutSeconds | None = None
    backoff_base_s: BackoffSeconds | None = None
    backoff_max_s: BackoffSeconds | None = None
    idempotency_key: IdempotencyKey | None = None
    user_id: str | None = None
    tags: list[Tag] = []
    parent_id: uuid.UUID | None = None
    depends_on: Annotated[list[uuid.UUID], msgspec.Meta(max_length=MAX_DEPENDENCIES)] = []
    callback_url: CallbackUrl | None = None
    # A graph in one batch (SPEC §10): this item's name, and the earlier items it waits for.
    # Resolved to ids by Queue.enqueue_many; never stored.
    ref: Ref | None = None
    depends_on_refs: list[Ref] = []

    def __post_init__(self) -> None:
        """The task must fall due before the year 10000: PostgreSQL would store a later
        ``run_at + delay_s``, but no Python client could read the row back, so one task
        would break every listing and claim that meets it."""
        if self.run_at is not None:
            try:
                (self.run_at + timedelta(seconds=self.delay_s)).astimezone(UTC)
            except OverflowError:
                field = "delay_s: run_at + delay_s" if self.delay_s else "run_at: it"
                raise ValueError(f"{field} falls after the year 9999 (in UTC)") from None
        if self.queue.startswith(RESERVED_QUEUE_PREFIX):
            raise ValueError(f"queue: {self.queue!r} is reserved for pgqueue's own tasks")
        if len(set(self.depends_on)) + len(set(self.depends_on_refs)) > MAX_DEPENDENCIES:
            raise ValueError(f"depends_on: at most {MAX_DEPENDENCIES} dependencies")

    # The trace the enqueue belongs to; set by pgqueue.otel (or the HTTP traceparent header).
    traceparent: Traceparent | None = None


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the audit trail, ``pgqueue.events``."""

    id: int
    task_id: TaskId
    event: str
    status: Status
    attempt: int
    worker_id: str | None
    at: datetime
    data: Any


def result_json(result: Any, limit: int) -> bytes:
    """A task's result as the JSON that is stored, checked against the one result-size limit
    (``Settings.result_limit``, PGQUEUE_MAX_RESULT_BYTES) that every path applies: the local
    worker records an oversize result as an ``unrecordable_outcome`` failure, HTTP complete
    answers 413. ``InvalidInput`` when it is not JSON, ``PayloadTooLarge`` when too big.
    """
    try:
        encoded = msgspec.json.encode(result)
    except (TypeError, msgspec.EncodeError) as exc:
        raise InvalidInput("result", f"is not JSON-serialisable: {exc}") from None
    check_result_size(len(encoded), limit)
    return encoded


def check_result_size(size: int, limit: int | None) -> None:
    """``PayloadTooLarge`` naming ``result`` when ``size`` bytes of JSON exceed ``limit``
    (None: no limit, for callers that leave the check to the server)."""
    if limit is not None and size > limit:
        raise PayloadTooLarge(
            "result",
            f"is {size} bytes, more than the limit of {limit} (PGQUEUE_MAX_RESULT_BYTES)",
        )


def parse_task_id(value: uuid.UUID | str, field: str = "id") -> TaskId:
    """A task id from a caller's value; ``InvalidInput`` naming ``field`` when not a UUID."""
    if isinstance(value, uuid.UUID):
        return TaskId(value)
    try:
        return TaskId(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise InvalidInput(field, f"{value!r} is not a UUID") from None


def lease_parse(lease: str) -> tuple[int, WorkerId]:
    """Split a lease string into (attempt, worker id); ValueError names what is wrong."""
    attempt, sep, worker = lease.partition(":")
    if not sep or not worker or not (attempt.isascii() and attempt.isdigit()):
        raise ValueError(f"lease {lease!r} is not '<attempt>:<worker id>'")
    return int(attempt), WorkerId(worker)
