"""A read-mostly view of the client actors: what chaos and tests may see.

Chaos needs the actors' handles, where each runs, its clients, and a way to
confirm a kill and say when it struck; tests need the same to kill actors
by hand. :class:`ActorView` gives exactly that (it is chaos's
:class:`~dfml.fault.chaos.Targets`), so neither reaches into the
federation's parts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import ray

from dfml.actors.roster import Roster
from dfml.fault.detector import Detector
from dfml.fault.processes import Processes


class ActorView:
    """The client actor slots: handles, placement, clients, sentinels."""

    def __init__(
        self, processes: Processes, detector: Detector, roster: Callable[[], Roster | None]
    ) -> None:
        self._processes = processes
        self._detector = detector
        self._roster = roster

    def _live_roster(self) -> Roster:
        roster = self._roster()
        assert roster is not None, "the federation has not started"
        return roster

    def slots(self) -> int:
        """How many client actor slots there are."""
        return len(self._live_roster().slots)

    def handle(self, k: int) -> Any:
        """The actor handle of slot ``k``."""
        return self._processes.handle(k)

    def actor_of_client(self, cid: int) -> int:
        """The slot hosting client ``cid``."""
        return self._live_roster().slot_of(cid)

    def clients_of(self, k: int) -> list[int]:
        """The clients slot ``k`` hosts."""
        return list(self._live_roster().slots[k])

    def placement_of(self, k: int) -> dict[str, Any]:
        """``{"pid", "node_id", "incarnation"}`` of slot ``k``'s current actor."""
        inc = self._processes.incarnation(k)
        return {**self._processes.placement[inc], "incarnation": inc}

    def sentinel_of(self, k: int) -> ray.ObjectRef:
        """Slot ``k``'s sentinel call: ready (an error) once its actor is dead."""
        return self._detector.sentinel(k)

    def confirm_dead(self, ks: Iterable[int], timeout: float) -> list[int]:
        """Wait up to ``timeout`` s for the actors of ``ks`` to die; those that did, sorted."""
        sentinels = {self.sentinel_of(k): k for k in ks}
        if not sentinels:
            return []
        ready, _ = ray.wait(list(sentinels), num_returns=len(sentinels), timeout=timeout)
        return sorted(sentinels[r] for r in ready)

    def note_kill(self, k: int, t: float, mode: str) -> None:
        """Slot ``k``'s actor was killed at ``t`` (``mode``): detection latency counts from it."""
        self._detector.note_kill(k, t, mode)
