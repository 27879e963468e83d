"""The answers of the remote-worker protocol (SPEC §4), as the server sends them and
``Client`` decodes them: declared once, importing no driver and no web framework."""

from __future__ import annotations

from typing import Any

import msgspec

from pgqueue.tasks import Task


class LeasedTask(Task, frozen=True):
    """A claimed task with its lease: send the lease with every heartbeat and outcome."""

    lease: str
    dependency_results: dict[str, Any] = msgspec.field(default_factory=dict)  # SPEC §10
    signals: dict[str, Any] = msgspec.field(default_factory=dict)  # SPEC §11: sent so far


class HeartbeatAnswer(msgspec.Struct, frozen=True):
    """Whether a cancel was requested: the worker stops the handler when it was."""

    cancel_requested: bool
