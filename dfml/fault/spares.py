"""FMRec's Manager, replacement half: warm spares and replacement actors.

The moment a death is seen the dead actor's clients go to a warm spare
(already started, torch imported, dataset loaded, one throwaway step run;
it only builds the clients' data) or, if none is ready, to a new actor
that Ray places on any live node; the restorer then brings each client
back (``FaultClientActor.restore``). Client actors are created with
``max_restarts=0``: Ray never brings one back with fresh parameters behind
the driver's back.

The pool does not know the federation: it is given factories for a spare
and for a slot's actor, and where to find the clients' data shares.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ray

from dfml.data.split import ClientSplit
from dfml.fault.config import FaultConfig
from dfml.fault.detector import Detector
from dfml.fault.events import FaultEvent
from dfml.fault.processes import Processes
from dfml.fault.timeline import Timeline

log = logging.getLogger(__name__)


@dataclass
class Spare:
    incarnation: str
    handle: Any
    ready: ray.ObjectRef
    created: float

    def is_warm(self) -> bool:
        done, _ = ray.wait([self.ready], timeout=0)
        return bool(done)


class SparePool:
    """Keeps ``cfg.spares`` warm spares; hands out the actor that replaces a dead one.

    Args:
        make_spare: an idle actor with no clients.
        make_actor: slot k → a new actor hosting slot k's clients.
        warm_split: the data share a spare warms up on.
        splits_of: slot k → its clients' data shares (what a spare adopts).
    """

    def __init__(
        self,
        cfg: FaultConfig,
        processes: Processes,
        detector: Detector,
        timeline: Timeline,
        make_spare: Callable[[], Any],
        make_actor: Callable[[int], Any],
        warm_split: Callable[[], ClientSplit],
        splits_of: Callable[[int], Mapping[int, ClientSplit]],
    ) -> None:
        self.cfg = cfg
        self.processes = processes
        self.detector = detector
        self.timeline = timeline
        self.make_spare = make_spare
        self.make_actor = make_actor
        self.warm_split = warm_split
        self.splits_of = splits_of
        self.spares: list[Spare] = []
        detector.on_lost("spare", self._lost)

    def __len__(self) -> int:
        return len(self.spares)

    def replenish(self) -> None:
        while len(self.spares) < self.cfg.spares:
            inc = self.processes.new_name("spare")
            handle = self.make_spare()
            self.detector.watch("spare", inc, handle)
            ready = handle.warm_up.remote(self.warm_split())
            self.spares.append(Spare(inc, handle, ready, self.timeline.now()))

    def replacement(self, k: int) -> tuple[Any, str, str]:
        """(handle, incarnation, how) of the actor that takes over slot ``k``.

        A spare (warm, or at least already starting) if there is one, else a
        new actor placed by Ray on any live node. The caller replenishes the
        spares once every dead actor of a batch has its replacement.
        """
        if self.spares:
            spare = self.spares.pop(0)
            how = "warm spare" if spare.is_warm() else "starting spare"
            how += f" (started {self.timeline.now() - spare.created:.1f} s before)"
            spare.handle.adopt.remote(dict(self.splits_of(k)))
            inc = self.detector.watch_actor(k, spare.handle, spare.incarnation)
            return spare.handle, inc, how
        handle = self.make_actor(k)
        return handle, self.detector.watch_actor(k, handle), "new actor"

    def placements(self) -> list[dict[str, Any]]:
        """``{"pid", "node_id"}`` of every warm spare (what an idle spare costs is
        measured on these processes)."""
        warm = [s for s in self.spares if s.is_warm()]
        return ray.get([s.handle.ping.remote() for s in warm])

    def _lost(self, inc: str, now: float) -> None:
        self.spares = [s for s in self.spares if s.incarnation != inc]
        self.timeline.record(FaultEvent(now, self.timeline.round, "spare_lost", holder=inc))
        self.replenish()

    def shutdown(self) -> None:
        for spare in self.spares:
            ray.kill(spare.handle, no_restart=True)
        self.spares = []
