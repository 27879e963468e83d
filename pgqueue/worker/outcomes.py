"""What a handler may raise to say how its attempt ended (SPEC §2, error classes).

A handler returns its result, or raises:
- ``Retry(in_s=60)``: try again after that delay (a snooze), still counting the attempt;
- ``Permanent("why")``: fail now, no more attempts;
- any other exception: a retryable failure with exponential backoff, unless its type is in
  the handler's ``permanent=`` list.
"""

from __future__ import annotations


class Retry(Exception):
    """Run this task again after ``in_s`` seconds (default: the usual backoff)."""

    def __init__(self, message: str = "retry requested", *, in_s: float | None = None) -> None:
        if in_s is not None and in_s < 0:
            raise ValueError(f"in_s must be >= 0, got {in_s}")
        super().__init__(message)
        self.in_s = in_s


class Permanent(Exception):
    """Fail this task for good: retrying cannot help (bad input, a refused request...)."""
