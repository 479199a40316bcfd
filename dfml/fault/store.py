"""The replica store's keeper: start it, and start a new one when it dies.

The store (:class:`~dfml.fault.holder.ReplicaStore`) is a light replica
holder pinned to the driver's node, so it fails only with the driver (or
on its own: it is then recreated, empty, and refills from the next
replication).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from dfml.fault.config import FaultConfig
from dfml.fault.detector import Detector
from dfml.fault.events import FaultEvent
from dfml.fault.holder import RemoteReplicaStore
from dfml.fault.processes import Processes
from dfml.fault.timeline import Timeline


class StoreKeeper:
    """The store actor, if ``replica_store`` is on (and replicas are made at all).

    ``forget_holder(incarnation)`` is called when the store dies (its copies
    are gone).
    """

    def __init__(
        self,
        cfg: FaultConfig,
        processes: Processes,
        detector: Detector,
        timeline: Timeline,
        forget_holder: Callable[[str], None],
    ) -> None:
        self.cfg = cfg
        self.processes = processes
        self.detector = detector
        self.timeline = timeline
        self.forget_holder = forget_holder
        self.current: tuple[str, Any] | None = None
        detector.on_lost("store", self._lost)

    @property
    def name(self) -> str | None:
        """The incarnation of the current store (``None``: no store)."""
        return self.current[0] if self.current is not None else None

    def start(self) -> None:
        """The replica store, on the driver's node: it fails only with the driver."""
        if not (self.cfg.restores and self.cfg.replica_store):
            return
        inc = self.processes.new_name("store")
        here = ray.get_runtime_context().get_node_id()
        handle = RemoteReplicaStore.options(
            num_cpus=0,
            max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
        ).remote(self.cfg.keep_versions)
        self.detector.watch("store", inc, handle)
        self.current = (inc, handle)
        self.processes.add_holder(inc, handle, "store")

    def _lost(self, inc: str, now: float) -> None:
        self.timeline.record(FaultEvent(now, self.timeline.round, "store_lost", holder=inc))
        self.forget_holder(inc)
        self.start()

    def shutdown(self) -> None:
        if self.current is not None:
            ray.kill(self.current[1], no_restart=True)
        self.current = None
