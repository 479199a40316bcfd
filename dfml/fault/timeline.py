"""The fault layer's timeline: one clock, the round being run, every event.

The parts that say what happened (the detector, the restorer, the
replicator, the spare pool, the store keeper, chaos) are handed this object
rather than the federation: a time, a round and a list to append to are all
they need. Free of heavy imports, like :mod:`dfml.fault.events`.
"""

from __future__ import annotations

import time

from dfml.fault.events import FaultEvent


class Timeline:
    """Seconds since the federation was made, the current round, the events.

    Attributes:
        events: every :class:`FaultEvent`, in the order recorded.
        round: the round of the step being run (``-1`` before the first);
            events are stamped with it, and a client re-initialised after a
            loss counts its rounds from it.
    """

    def __init__(self) -> None:
        self.events: list[FaultEvent] = []
        self.round = -1
        self._t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self._t0

    def record(self, event: FaultEvent) -> None:
        self.events.append(event)
