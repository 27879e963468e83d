"""The enqueue's rules on a producer's input, before any SQL runs: the fields (``NewTask``),
the payload's size, and what an idempotent replay must match (SPEC §1, §3)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from pgqueue.errors import Conflict, InvalidInput, PayloadTooLarge
from pgqueue.tasks import NewTask, Task


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


def encode_payload(payload: Any, max_bytes: int, field: str = "payload") -> str:
    """The payload as JSON text, within PGQUEUE_MAX_PAYLOAD_BYTES."""
    try:
        encoded = msgspec.json.encode(payload)
    except (TypeError, msgspec.EncodeError) as exc:
        raise InvalidInput(field, f"is not JSON-serialisable: {exc}") from None
    if len(encoded) > max_bytes:
        raise PayloadTooLarge(
            field,
            f"is {len(encoded)} bytes, more than the limit of "
            f"{max_bytes} (PGQUEUE_MAX_PAYLOAD_BYTES)",
        )
    return encoded.decode()


def decode(payload: str) -> Any:
    return msgspec.json.decode(payload)


def check_same_task(holder: Task, new: NewTask) -> None:
    """A replay must be the same task: ``Conflict`` when the key's holder differs."""
    if (holder.queue, holder.kind, holder.payload) != (new.queue, new.kind, new.payload):
        raise Conflict(
            f"idempotency_key: {new.idempotency_key!r} is already used by task {holder.id} "
            "with a different queue, kind or payload"
        )
