"""FMRec's Retriever, driver half: plan each lost client's restore, collect it.

When slot k's actor dies its replacement gets one :class:`RestorePlan` per
client: the surviving acknowledged replicas, newest first (inside call s
only those made *before* s: the client redoes s), and — for when none
survives — the published vectors of its nearest live ring neighbours. The
replacement fetches, verifies, loads and re-publishes
(:meth:`FaultClientActor.restore`); :meth:`Restorer.finish` collects the
result. Nothing is silently re-initialised: every restore is a
``restored`` event, every client that had to start over a ``lost`` one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import ray

from dfml.actors.roster import Roster
from dfml.fault.actor import RestorePlan
from dfml.fault.config import FaultConfig
from dfml.fault.detector import Outcome
from dfml.fault.directory import RefDirectory
from dfml.fault.dispatcher import TIERS, ReplicaIndex, ring_order
from dfml.fault.errors import FaultToleranceError
from dfml.fault.events import FaultEvent
from dfml.fault.processes import Processes
from dfml.fault.retriever import order_candidates
from dfml.fault.timeline import Timeline
from dfml.steps import PARAMS

log = logging.getLogger(__name__)

Gather = Callable[[Mapping[int, ray.ObjectRef], Mapping[int, str]], Outcome]


class Restorer:
    """Restores under way, one per dead slot; their plans and their events.

    Args:
        gather: waits for per-slot calls while watching for deaths
            (:meth:`Detector.gather`).
    """

    def __init__(
        self,
        cfg: FaultConfig,
        processes: Processes,
        index: ReplicaIndex,
        directory: RefDirectory,
        timeline: Timeline,
        gather: Gather,
    ) -> None:
        self.cfg = cfg
        self.processes = processes
        self.index = index
        self.directory = directory
        self.timeline = timeline
        self.gather = gather
        self.call_seq: int | None = None
        self._jobs: dict[int, tuple[str, str, ray.ObjectRef]] = {}
        self._failed_at: dict[int, float] = {}

    @property
    def busy(self) -> bool:
        """Whether a restore is under way."""
        return bool(self._jobs)

    def in_flight(self) -> list[ray.ObjectRef]:
        """The restore calls under way (the driver waits for them next)."""
        return [job[2] for job in self._jobs.values()]

    @contextmanager
    def inside_call(self, seq: int) -> Iterator[None]:
        """While call ``seq`` runs, restore clients from replicas made before it
        (nested: the acknowledgements of the call before are settled while
        the next call's step already runs)."""
        previous, self.call_seq = self.call_seq, seq
        try:
            yield
        finally:
            self.call_seq = previous

    def plan(self, cid: int, dead: set[int], roster: Roster) -> RestorePlan:
        round_index = max(self.timeline.round or 0, 0)
        if not self.cfg.restores:
            return RestorePlan(round_index=round_index, from_scratch=True)
        records = self.index.records(cid)
        if self.call_seq is not None:
            # Inside call s the client redoes s: restore its state from before s.
            records = [r for r in records if r.version < self.call_seq]
        holders = self.processes.holders
        candidates = order_candidates(records, holders)
        actor_of = roster.actor_of
        published = self.directory.published
        neighbors = tuple(
            (j, [published[j][0][PARAMS]])
            for j in ring_order(cid, roster.ids())
            if actor_of[j] not in dead and j in published
        )[:4]
        return RestorePlan(
            candidates=tuple(candidates),
            neighbors=neighbors,
            round_index=round_index,
            fetch_timeout=self.cfg.unavailable_timeout,
            holders={r.holder: holders[r.holder] for r in candidates if r.kind != "durable"},
        )

    def begin(self, k: int, handle: Any, inc: str, how: str, when: float, roster: Roster) -> None:
        """Slot ``k``'s actor died at ``when``; ``handle`` (incarnation ``inc``)
        replaces it: start restoring its clients there."""
        self._failed_at[k] = when
        dead = {*self._jobs, k}
        plans = {c: self.plan(c, dead, roster) for c in roster.slots[k]}
        self._jobs[k] = (inc, how, handle.restore.remote(plans))

    def finish(self) -> dict[int, str]:
        """Finish every restore under way; {client: digest of its re-published vector}."""
        restored: dict[int, str] = {}
        while self._jobs:
            jobs = dict(self._jobs)
            out = self.gather(
                {k: job[2] for k, job in jobs.items()}, {k: job[0] for k, job in jobs.items()}
            )
            for k, job in jobs.items():
                if self._jobs.get(k) is job:  # not replaced by a newer attempt
                    del self._jobs[k]
            for k, res in out.results.items():
                restored.update(self._restored(k, *jobs[k][:2], res, out.arrived[k]))
            if out.lost or out.unavailable:
                raise FaultToleranceError(f"restoring actors {sorted(out.lost)} failed")
        return restored

    def _restored(
        self, k: int, inc: str, how: str, res: Mapping[str, Any], now: float
    ) -> dict[int, str]:
        self.processes.placed(inc, res)
        failed_at = self._failed_at.get(k, now)
        out = {}
        for cid, row in sorted(res["clients"].items()):
            source = row["source"]
            kind = "restored" if source in TIERS else "lost"
            tried = "; ".join(f"{kind_}:{holder} {msg}" for kind_, holder, msg in row["failures"])
            self.timeline.record(
                FaultEvent(
                    now,
                    self.timeline.round,
                    kind,
                    client=cid,
                    actor=k,
                    node=res["node_id"],
                    source=source,
                    holder=row["holder"],
                    version=row["version"],
                    replica_round=row["replica_round"],
                    seconds=now - failed_at,
                    detail=(
                        f"replacement={how}; in the actor {res['restore_seconds']:.3f} s "
                        f"(fetch {res['fetch_seconds']:.3f} s)"
                        + (f"; tried {tried}" if tried else "")
                    ),
                )
            )
            if kind == "lost":
                log.warning("client %d lost its meta-knowledge: restarted from %s", cid, source)
            digest = res["digests"][cid]
            self.directory.republished(cid, res["results"][cid].refs, digest)
            out[cid] = digest
        return out
