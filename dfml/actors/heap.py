"""Keep Python's cyclic garbage collector off a federation's long-lived objects.

A driver or an actor holds per-client objects for the whole run: contexts,
data slices, splits, topology dicts, handles — hundreds of thousands of them
at 10,000 clients. Every full (oldest-generation) collection walks all of
them, and a round allocates enough new objects (states, results, messages)
to trigger several: at 10,000 clients the driver spent 1.2 s of an 8-round
run in the collector. :func:`freeze_heap`, called once the clients are
built, moves what is alive then into the collector's permanent generation
(``gc.freeze``), which it no longer scans; objects made later are collected
as usual. :func:`frozen_heap` thaws them again when the run ends, so a
process that runs many experiments (a sweep, a notebook) frees each one's
cycles afterwards.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)


def freeze_heap() -> int:
    """Collect garbage, then exempt every object alive now from later
    collections; returns how many objects are frozen in all.

    Garbage is collected first, so no unreachable cycle is frozen (a frozen
    object is never freed by the collector; reference counting still frees
    it when its last reference goes).
    """
    gc.collect()
    gc.freeze()
    count = gc.get_freeze_count()
    log.debug("froze %d long-lived objects out of the garbage collector's scans", count)
    return count


@contextlib.contextmanager
def frozen_heap() -> Iterator[int]:
    """:func:`freeze_heap` for the ``with`` block; then every frozen object
    is collectable again (``gc.unfreeze``)."""
    try:
        yield freeze_heap()
    finally:
        gc.unfreeze()
