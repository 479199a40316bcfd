"""Freezing long-lived objects out of the cyclic garbage collector."""

from __future__ import annotations

import gc
import weakref

from dfml.actors.heap import frozen_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_garbage_is_collected_before_the_freeze_and_the_frozen_thaw_after():
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    kept = _Node()
    with frozen_heap() as count:
        assert gone() is None  # collected, not frozen
        assert count > 0
        later = weakref.ref(kept)
        del kept
        gc.collect()
        assert later() is not None  # frozen: the collector does not scan it
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert later() is None  # thawed: collectable again
