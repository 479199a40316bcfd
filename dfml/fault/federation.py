"""The fault-tolerant federation: ``run_step`` returns complete results, or raises.

:class:`FaultTolerantFederation` is a drop-in :class:`Federation` that
wires the fault layer's parts together; each has one job:

* :class:`~dfml.fault.calls.StepRunner` — runs each step under the redo
  rule (a failed call is redone, never half-kept); read its docstring for
  the guarantees, bit-identical chaos runs among them;
* :class:`~dfml.fault.replicator.Replicator` — replicas after the calls of
  checkpoint rounds, and their acknowledgements;
* :class:`~dfml.fault.restorer.Restorer` — restore plans and restores;
* :class:`~dfml.fault.detector.Detector` — sentinels, heartbeats, fencing;
  reports deaths through a callback (:meth:`_on_death` here);
* :class:`~dfml.fault.spares.SparePool` and
  :class:`~dfml.fault.store.StoreKeeper` — the processes kept besides the
  client actors;
* :class:`~dfml.fault.directory.RefDirectory` — published channels and the
  refs renamed by restores;
* :class:`~dfml.fault.chaos.Chaos` — seeded kills, an observer of steps.

The step's metadata drives it: ``step.round`` decides chaos strikes and
checkpoint replication, ``step.read_only`` skips replicas, ``step.phase``
names the step in errors. Tests and reports inspect it through the public
methods at the end of the class, never through its parts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import ray

from dfml.actors.config import ResourceConfig
from dfml.actors.federation import Federation
from dfml.data.config import DataConfig
from dfml.data.dataset import ArrayDataset
from dfml.data.split import ClientSplit
from dfml.errors import ConfigError
from dfml.fault.actor import RemoteFaultClientActor
from dfml.fault.calls import StepRunner
from dfml.fault.chaos import Chaos
from dfml.fault.config import FaultConfig
from dfml.fault.detector import Detector
from dfml.fault.directory import RefDirectory
from dfml.fault.dispatcher import ReplicaIndex
from dfml.fault.errors import FaultToleranceError
from dfml.fault.events import FaultEvent
from dfml.fault.processes import Processes
from dfml.fault.replicator import Replicator
from dfml.fault.restorer import Restorer
from dfml.fault.spares import SparePool
from dfml.fault.store import StoreKeeper
from dfml.fault.timeline import Timeline
from dfml.fault.view import ActorView
from dfml.models.zoo import ModelConfig
from dfml.steps import Publish, Step, StepResult

__all__ = ["FaultToleranceError", "FaultTolerantFederation"]

log = logging.getLogger(__name__)


class FaultTolerantFederation(Federation):
    """Client actors that are replicated, watched, replaced and restored."""

    def __init__(
        self,
        data: DataConfig,
        model: ModelConfig,
        splits: Sequence[ClientSplit],
        seed: int,
        resources: ResourceConfig,
        fault: FaultConfig,
        rounds: int | None = None,
        start_timeout_s: float = 300.0,
        initial: Sequence[int] | None = None,
        dataset: ArrayDataset | None = None,
    ) -> None:
        super().__init__(data, model, splits, seed, resources, start_timeout_s, initial, dataset)
        if rounds is not None:
            fault.check_rounds(rounds)
        self.fault = fault
        self.rounds = rounds
        self.restores = fault.restores
        self.algorithm: Any = None
        self._timeline = Timeline()
        self._processes = Processes()
        self._directory = RefDirectory()
        self._index = ReplicaIndex(fault.keep_versions)
        self._detector = Detector(fault, self._processes, self._timeline, self._on_death)
        self._store = StoreKeeper(
            fault, self._processes, self._detector, self._timeline, self._forget_holder
        )
        self._spares = SparePool(
            fault,
            self._processes,
            self._detector,
            self._timeline,
            make_spare=self.make_spare,
            make_actor=lambda k: self.make_actor(k, self.algorithm),
            warm_split=lambda: self.splits[min(self.splits)],
            splits_of=lambda k: {cid: self.splits[cid] for cid in self.cohorts[k]},
        )
        self._replicator = Replicator(
            fault, self._processes, self._detector, self._index, self._timeline, self._store
        )
        self._restorer = Restorer(
            fault,
            self._processes,
            self._index,
            self._directory,
            self._timeline,
            self._detector.gather,
        )
        self._view = ActorView(self._processes, self._detector, lambda: self.roster)
        chaos = Chaos(fault, seed, rounds, self._view, self._timeline)
        self._runner = StepRunner(
            fault,
            rounds,
            self._processes,
            self._detector,
            self._directory,
            self._replicator,
            self._restorer,
            self._timeline,
            self._roster,
            observers=[chaos] if fault.chaos else [],
            on_restored=self._spares.replenish,
        )

    def _roster(self) -> Any:
        assert self.roster is not None
        return self.roster

    # ----- actors ---------------------------------------------------------
    def actor_options(self, index: int) -> dict[str, Any]:
        # Never let Ray restart a client actor: it would come back with fresh
        # parameters and answer as if nothing happened.
        return {**super().actor_options(index), "max_restarts": 0, "max_task_retries": 0}

    def make_actor(
        self,
        index: int,
        algorithm: Any,
        options: Mapping[str, Any] | None = None,
        clients: Sequence[int] | None = None,
    ) -> Any:
        opts = {**self.actor_options(index), **(options or {})}
        members = self.cohorts[index] if clients is None else clients
        return RemoteFaultClientActor.options(**opts).remote(
            self.spec(members), algorithm, self.fault.keep_versions
        )

    def make_spare(self) -> Any:
        """An idle actor (torch and dataset loaded, no clients) on any node.

        It reserves no CPU while idle (the actor it replaces frees one).
        """
        opts = {**self.actor_options(0), "num_cpus": 0, "scheduling_strategy": "SPREAD"}
        return RemoteFaultClientActor.options(**opts).remote(
            self.spec([]), self.algorithm, self.fault.keep_versions
        )

    def _on_death(self, k: int, when: float) -> None:
        """Slot ``k``'s actor died at ``when``: hand its clients to a
        replacement and start restoring them (:meth:`StepRunner.recover`
        collects the result)."""
        inc = self._processes.incarnation(k)
        self._forget_holder(inc)
        log.warning("client actor %d (%s) is dead; clients %s", k, inc, self.cohorts[k])
        handle, new_inc, how = self._spares.replacement(k)
        self.actors[k] = handle
        self._restorer.begin(k, handle, new_inc, how, when, self._roster())

    def _forget_holder(self, incarnation: str) -> None:
        self._processes.forget_holder(incarnation)
        self._index.forget_holder(incarnation)

    # ----- start ------------------------------------------------------------
    def start(
        self, algorithm: Any, states: Mapping[int, Any] | None = None
    ) -> dict[int, StepResult]:
        self.algorithm = algorithm
        if self.roster is None:
            self.plan()
        if self.fault.chaos and self.fault.chaos_mode == "node":
            alive = [n for n in ray.nodes() if n.get("Alive")]
            if len(alive) < 2:
                raise ConfigError(
                    f"chaos_mode 'node' needs a multi-node Ray cluster; this one has {len(alive)} node"
                )
        self.actors = [self.make_actor(k, algorithm) for k in range(len(self.cohorts))]
        for k, handle in enumerate(self.actors):
            self._detector.watch_actor(k, handle)
        self._store.start()
        self._spares.replenish()
        pending = [
            a.start_info.remote(None if states is None else {c: states[c] for c in self.cohorts[k]})
            for k, a in enumerate(self.actors)
        ]
        started: dict[int, StepResult] = {}
        for k, info in enumerate(self._wait_placed(pending)):
            self._processes.placed(self._processes.incarnation(k), info)
            for cid, res in info["results"].items():
                self._directory.publish(cid, res.refs, info["digests"][cid])
            started.update(info["results"])
        if self.restores:
            everyone = set(range(len(self.cohorts)))
            self._runner.retry(lambda: self._replicator.replicate(0, self._roster()) == everyone)
            self._replicator.replicated_seq = 0
        log.info(
            "fault-tolerant federation: %d actors, %d spares, replicas=%d, store=%s",
            len(self.actors),
            len(self._spares),
            self.fault.replicas,
            self._store.current is not None,
        )
        return dict(sorted(started.items()))

    # ----- steps ------------------------------------------------------------
    def run_step(self, step: Step) -> dict[int, StepResult]:
        """Run ``step`` under the redo rule (see :mod:`dfml.fault.calls`)."""
        return self._runner.run(step)

    def step(
        self, program: str, messages: Mapping[int, Any], publish: Publish = True
    ) -> dict[int, Any]:
        """A call outside the round loop: no chaos, no replicas."""
        return self._runner.call("call", program, messages, publish, None, False)

    # ----- membership -------------------------------------------------------
    def open_slot(self, k: int) -> None:
        handle = self.make_actor(k, self.algorithm, clients=[])
        self.actors.append(handle)
        inc = self._detector.watch_actor(k, handle)
        self._processes.placed(inc, ray.get(handle.ping.remote()))

    def add_clients(self, starts: Mapping[int, Any]) -> dict[int, StepResult]:
        """Join, then replicate the joined clients at once, so that a death in
        the very next step restores them too (instead of losing them)."""
        self._runner.settle()
        self.recover()
        results = super().add_clients(starts)
        slots = self._roster().by_slot(results)
        digests: dict[int, str] = {}
        for part in ray.get([self.actors[k].digests.remote(ids) for k, ids in slots.items()]):
            digests.update(part)
        for cid, res in results.items():
            self._directory.publish(cid, res.refs, digests[cid])
        if self.restores:
            todo = set(slots)
            self._runner.retry(
                lambda: (
                    self._replicator.replicate(self._runner.seq, self._roster(), sorted(todo))
                    >= todo
                )
            )
        return results

    def remove_clients(self, ids: Sequence[int]) -> None:
        """Leave: drop the clients and release their replicas."""
        self._runner.settle()
        self.recover()
        super().remove_clients(ids)
        self._directory.forget(ids)
        self._replicator.release(list(ids))

    # ----- inspection (tests, reports) -------------------------------------
    def recover(self) -> dict[int, str]:
        """Detect and restore now (also done at the start of every call).

        Returns the restored clients with the digest of their re-published vector.
        """
        self._runner.settle()
        return self._runner.recover()

    def get_state(self, client_id: int) -> Any:
        """A CPU copy of one client's current state (for inspection and tests)."""
        self.recover()
        return ray.get(self.actors[self.actor_of[client_id]].get_state.remote(client_id))

    def actor_of_client(self, client_id: int) -> int:
        """The actor slot hosting ``client_id``."""
        return self._view.actor_of_client(client_id)

    def placement_of(self, k: int) -> dict[str, Any]:
        """``{"pid", "node_id", "incarnation"}`` of slot ``k``'s current actor."""
        return self._view.placement_of(k)

    def slot_nodes(self) -> dict[int, str]:
        """Slot → node of its current actor (a replacement may run elsewhere);
        slots whose replacement has not answered yet are left out."""
        out = {}
        for k in range(len(self.actors)):
            placed = self._processes.placement.get(self._processes.incarnation(k))
            if placed is not None:
                out[k] = placed["node_id"]
        return out

    def spare_placements(self) -> list[dict[str, Any]]:
        """``{"pid", "node_id"}`` of every warm spare actor."""
        return self._spares.placements()

    def sentinel_of(self, k: int) -> ray.ObjectRef:
        """Slot ``k``'s sentinel call: it returns (an error) once its actor is dead."""
        return self._view.sentinel_of(k)

    def confirm_dead(self, ks: Sequence[int], timeout: float = 30.0) -> list[int]:
        """Wait up to ``timeout`` s for the actors of slots ``ks`` to die; those that did."""
        return self._view.confirm_dead(ks, timeout)

    @property
    def events(self) -> list[FaultEvent]:
        """Every kill, detection, restore, loss and outage, in order."""
        return self._timeline.events

    @property
    def replication_bytes(self) -> int:
        return self._replicator.bytes

    @property
    def replication_seconds(self) -> float:
        return self._replicator.seconds

    @property
    def redone_steps(self) -> int:
        """Client steps run again by the redo rule."""
        return self._runner.redone_steps

    def info(self) -> list[dict[str, Any]]:
        self.recover()
        return super().info()

    def shutdown(self) -> None:
        self._spares.shutdown()
        self._store.shutdown()
        super().shutdown()
