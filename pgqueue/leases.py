"""The answers of the remote-worker protocol (SPEC §4), as the server sends them and
``Client`` decodes them: declared once, importing no driver and no web framework."""

from __future__ import annotations

from typing import Any

import msgspec

from pgqueue.tasks import Task


class LeasedTask(Task, frozen=True):
    """A claimed task with its lease: send the lease with every heartbeat and outcome."""

    # The server's lease, sent as a field where Task computes it: a frozen Struct's field is
    # read-only like the property it shadows, which pyright's override check does not see.
    lease: str  # pyright: ignore[reportIncompatibleMethodOverride]
    # SPEC §10, and §11 (the signals sent so far). Typed factories: Task has no
    # omit_defaults, so the encoding is the same as with a bare ``dict``.
    dependency_results: dict[str, Any] = msgspec.field(default_factory=dict[str, Any])
    signals: dict[str, Any] = msgspec.field(default_factory=dict[str, Any])


class HeartbeatAnswer(msgspec.Struct, frozen=True):
    """Whether a cancel was requested: the worker stops the handler when it was."""

    cancel_requested: bool
