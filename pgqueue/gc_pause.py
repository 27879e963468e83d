"""Python's cyclic garbage collector held off while a batch builds its objects.

A bulk enqueue makes a few objects per task (the ``NewTask``, its encoded row, the returned
row, the ``Task`` with its lists and dict): 20,000 tasks are some 100,000 tracked objects
made in a burst, and each 700 allocations start a young-generation pass that walks what is
still alive, with older passes over all of it now and then. That was a third of a large
``enqueue_many``'s client CPU (docs/benchmarks.md), for objects that are never garbage
while the batch is built. None of them forms a cycle, so nothing is lost by not looking.

Only around code that does not ``await``: the event loop never runs another task while the
collector is off, so the rest of the process (an HTTP server's requests) is collected as
before. Re-entrant and thread-safe: the collector comes back when the outermost pause ends,
and only if it was on when that pause began.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Generator
from contextlib import contextmanager

# Below this many tasks a batch makes too few objects for a collection to cost anything.
MIN_TASKS = 1000

_lock = threading.Lock()
_depth = 0
_resume = False


@contextmanager
def gc_paused(tasks: int) -> Generator[None]:
    """Hold off the collector in this (await-free) block when a batch has ``tasks`` tasks."""
    global _depth, _resume
    if tasks < MIN_TASKS:
        yield
        return
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()
