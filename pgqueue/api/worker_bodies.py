"""The request bodies of the remote-worker protocol (SPEC §4): a claim, then the reports on a
task the worker holds (heartbeat, complete, fail, cancelled, release, wait), each carrying
the lease the claim returned. Bounds in the types, unknown fields refused (``Input``)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from pgqueue.api.schemas import Input, SignalName
from pgqueue.tasks import BackoffSeconds, QueueName, UsageCost, UsageTokens

MAX_CLAIM_WAIT_S = 30.0

Lease = Annotated[str, msgspec.Meta(min_length=3, max_length=300, pattern=r"^\d+:.+$")]
WorkerName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Count = Annotated[int, msgspec.Meta(ge=0)]


class Claim(Input, frozen=True):
    """``POST /tasks/claim``: what a remote worker asks for. ``kinds`` null: any kind."""

    worker_id: WorkerName
    queues: Annotated[list[QueueName], msgspec.Meta(min_length=1, max_length=100)]
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1
    wait_s: Annotated[float, msgspec.Meta(ge=0, le=MAX_CLAIM_WAIT_S)] = 0.0
    kinds: Annotated[list[str], msgspec.Meta(max_length=1000)] | None = None
    # Shown by GET /workers; optional so a curl user can claim with the four fields of §4.
    host: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    pid: Annotated[int, msgspec.Meta(ge=0)] = 0
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None
    running: Count = 0


class UsageIn(Input, frozen=True):
    """Tokens and cost of this attempt (added to the task's totals), bounded as
    ``pgqueue.tasks.Usage`` is: tokens <= 10^12, cost <= 10^9 per report (SPEC §2)."""

    input_tokens: UsageTokens = 0
    output_tokens: UsageTokens = 0
    cost: UsageCost = 0.0


class ProgressIn(Input, frozen=True):
    percent: Annotated[float, msgspec.Meta(ge=0, le=100)] | None = None
    message: Annotated[str, msgspec.Meta(max_length=10_000)] | None = None
    data: Any = None


class CheckpointIn(Input, frozen=True):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    data: Any = None


class WaitIn(Input, frozen=True):
    """``POST /tasks/{id}/wait``: a remote worker ends the attempt as a wait (SPEC §11)."""

    lease: Lease
    signal: SignalName
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=366 * 86400.0)] | None = None
    usage: UsageIn | None = None


class Heartbeat(Input, frozen=True):
    lease: Lease
    progress: ProgressIn | None = None
    checkpoint: CheckpointIn | None = None
    usage: UsageIn | None = None


class Complete(Input, frozen=True):
    lease: Lease
    result: Any = None
    usage: UsageIn | None = None
    exit_code: int | None = None


class ErrorIn(Input, frozen=True):
    type: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    message: Annotated[str, msgspec.Meta(max_length=100_000)]
    traceback: Annotated[str, msgspec.Meta(max_length=100_000)] | None = None


class Fail(Input, frozen=True):
    """A failed attempt. (Deprecated, still accepted for one release: ``error.type ==
    "cancelled"`` records a cancel the worker obeyed; send ``POST /tasks/{id}/cancelled``.)"""

    lease: Lease
    error: ErrorIn
    retryable: bool = True
    retry_in_s: Annotated[float, msgspec.Meta(ge=0, le=365 * 86400)] | None = None
    usage: UsageIn | None = None
    exit_code: int | None = None
    # The handler's backoff (a remote worker knows its handlers; the server does not).
    backoff_base_s: BackoffSeconds | None = None
    backoff_max_s: BackoffSeconds | None = None


class Release(Input, frozen=True):
    """Graceful shutdown of a remote worker: hand the task back without spending an attempt."""

    lease: Lease
    usage: UsageIn | None = None


class CancelObeyed(Input, frozen=True):
    """The worker stopped the handler because the task's cancel was requested."""

    lease: Lease
    usage: UsageIn | None = None
