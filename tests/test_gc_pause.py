"""pgqueue.gc_pause: the collector held off in a large batch's await-free blocks, and back on
after, whatever happens inside."""

from __future__ import annotations

import gc

import pytest

from pgqueue.gc_pause import MIN_TASKS, gc_paused


def test_a_large_batch_pauses_the_collector_and_resumes_it() -> None:
    assert gc.isenabled()
    with gc_paused(MIN_TASKS):
        assert not gc.isenabled()
        with gc_paused(MIN_TASKS):  # nested: only the outermost resumes
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_small_batch_leaves_the_collector_alone() -> None:
    with gc_paused(MIN_TASKS - 1):
        assert gc.isenabled()


def test_the_collector_resumes_after_an_error() -> None:
    with pytest.raises(ValueError), gc_paused(MIN_TASKS):
        raise ValueError("boom")
    assert gc.isenabled()


def test_a_collector_already_off_stays_off() -> None:
    gc.disable()
    try:
        with gc_paused(MIN_TASKS):
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
