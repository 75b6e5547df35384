"""The heap of a started process: what exists is frozen, cycles made later still go."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from interfaces.heap import OLDER_THRESHOLDS, YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_what_exists_is_frozen_and_thresholds_raised(restored_gc: None) -> None:
    built = [object() for _ in range(100)]
    settle_heap()
    assert gc.get_freeze_count() >= len(built)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


def test_a_cycle_made_after_settling_is_still_collected(restored_gc: None) -> None:
    settle_heap()
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    assert gone() is not None  # a cycle outlives reference counting
    gc.collect()
    assert gone() is None
