"""Type guards for values decoded from JSON without a schema (payloads, event data, frames).

``isinstance(value, dict)`` tells a type checker nothing about the keys; a JSON object's
keys are always strings, which these guards state once instead of a cast at every use.
"""

from __future__ import annotations

from typing import Any, TypeGuard


def is_object(value: object) -> TypeGuard[dict[str, Any]]:
    """Whether ``value`` is a decoded JSON object (a dict with str keys)."""
    return isinstance(value, dict)
