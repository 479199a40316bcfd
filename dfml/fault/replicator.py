"""FMRec's Dispatcher, driver half: ask for replicas, record the acknowledgements.

After each call of every ``checkpoint_every``-th round (and once at start,
and for clients that just joined), each actor packs its clients' states and
pushes them to their leaf-set holders (and the store, and the durable copy,
see :meth:`FaultClientActor.replicate`); the call is complete only when
those copies are acknowledged. A replica's version is the call number, so
"newest" is well defined. The replication request is queued right behind
each step on the same actor, so it costs no extra round trip; when a call
went cleanly its acknowledgements are collected once the next call's step
has been sent (the call is *unsettled* until then), so the holders' answers
come in while that step trains.

Every acknowledged copy goes to the :class:`ReplicaIndex`; every copy a
holder did not acknowledge is a ``replication_failed`` event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayError

from dfml.actors.roster import Roster
from dfml.fault.config import FaultConfig
from dfml.fault.detector import Detector
from dfml.fault.directory import Published
from dfml.fault.dispatcher import ReplicaIndex, ReplicaRecord, replication_plan
from dfml.fault.events import FaultEvent
from dfml.fault.processes import Processes
from dfml.fault.store import StoreKeeper
from dfml.fault.timeline import Timeline

log = logging.getLogger(__name__)


@dataclass
class Unsettled:
    """A call whose results are out but whose replicas may still be in flight.

    ``call`` is the runner's record of the call (its number, step metadata
    and messages); ``before`` what its clients had published before it.
    """

    call: Any
    before: dict[int, Published]
    copies: dict[int, ray.ObjectRef]
    copied_by: dict[int, str]


class Replicator:
    """Replication requests, acknowledgements, and their byte and time counts.

    Attributes:
        bytes: replica bytes acknowledged so far.
        seconds: driver seconds spent waiting for acknowledgements (beyond
            the steps it waited for anyway).
        replicated_seq: the last call whose replicas are all made.
    """

    def __init__(
        self,
        cfg: FaultConfig,
        processes: Processes,
        detector: Detector,
        index: ReplicaIndex,
        timeline: Timeline,
        store: StoreKeeper,
    ) -> None:
        self.cfg = cfg
        self.processes = processes
        self.detector = detector
        self.index = index
        self.timeline = timeline
        self.store = store
        self.bytes = 0
        self.seconds = 0.0
        self.replicated_seq = -1
        self._token = 0
        self._unsettled: Unsettled | None = None

    def due(self, rnd: int | None, read_only: bool, in_run: bool) -> bool:
        """Whether a step of round ``rnd`` ends with replicas (a read-only one never)."""
        return (
            in_run
            and not read_only
            and self.cfg.restores
            and (rnd + 1) % self.cfg.checkpoint_every == 0
        )

    # ----- requests and acknowledgements --------------------------------------
    def calls(
        self, version: int, slots: Iterable[int], roster: Roster, expect: int | None = None
    ) -> dict[int, ray.ObjectRef]:
        """Ask the actors of ``slots`` to replicate their clients as ``version``.

        With ``expect``, an actor replicates only if each of its clients
        finished call ``expect`` (the request is queued behind that step).
        Returns each slot's ``replicated`` call: its acknowledgements.
        """
        ids = roster.ids()
        actor_of = roster.actor_of
        host_of = {c: self.processes.incarnation(actor_of[c]) for c in ids}
        node_of = self.processes.node_of()
        store = self.store.name
        futures = {}
        for k in slots:
            cohort = roster.slots[k]
            plan = replication_plan(cohort, ids, host_of, self.cfg.replicas, node_of)
            assign = {c: [*plan[c], *([store] if store else [])] for c in cohort}
            holders = {h: self.processes.holders[h] for hs in assign.values() for h in hs}
            handle = self.processes.handle(k)
            self._token += 1
            handle.replicate.remote(
                self._token,
                version,
                assign,
                holders,
                self.cfg.checkpoint_uri,
                self.cfg.keep_versions,
                self.cfg.unavailable_timeout,
                expect,
            )
            futures[k] = handle.replicated.remote(self._token)
        return futures

    def acknowledged(self, results: Mapping[int, Any], version: int) -> set[int]:
        """Record the acknowledgements; return the slots whose replicas are made."""
        uri = self.cfg.checkpoint_uri
        done = set()
        for k, res in results.items():
            if res["skipped"]:
                continue
            done.add(k)
            for hid, cid, ver, rnd, checksum, nbytes in res["acks"]:
                kind = "durable" if hid == uri else self.processes.holder_kind[hid]
                self.bytes += nbytes
                if kind == "durable" or hid in self.processes.holders:
                    self.index.add(ReplicaRecord(cid, ver, rnd, checksum, hid, kind, nbytes))
            for hid, err in res["failed"]:
                log.warning("replica holder %s did not acknowledge v%d: %s", hid, version, err)
                self.timeline.record(
                    FaultEvent(
                        self.timeline.now(),
                        self.timeline.round,
                        "replication_failed",
                        holder=hid,
                        version=version,
                        detail=err,
                    )
                )
        return done

    def wait_acks(
        self,
        copies: Mapping[int, ray.ObjectRef],
        copied_by: Mapping[int, str],
        version: int,
        keep: Iterable[int] | None = None,
        behind: Iterable[ray.ObjectRef] = (),
    ) -> set[int]:
        """Wait for ``copies``; record those of ``keep`` (default all); the slots done.

        ``behind``: calls the driver must wait for next anyway (restores
        under way); a wait that ends before all of them did costs nothing
        and is not counted in :attr:`seconds`.
        """
        t0 = time.perf_counter()
        acks = self.detector.gather(copies, copied_by).results
        if keep is not None:
            keep = set(keep)
            acks = {k: v for k, v in acks.items() if k in keep}
        done = self.acknowledged(acks, version)
        behind = list(behind)
        finished, _ = ray.wait(behind, num_returns=len(behind), timeout=0)
        if len(finished) == len(behind):
            self.seconds += time.perf_counter() - t0
        return done

    def replicate(
        self, version: int, roster: Roster, slots: Iterable[int] | None = None
    ) -> set[int]:
        """Replicate (every slot, or ``slots``) now; the slots whose replicas are made."""
        t0 = time.perf_counter()
        todo = range(len(roster.slots)) if slots is None else slots
        out = self.detector.gather(self.calls(version, todo, roster))
        done = self.acknowledged(out.results, version)
        self.seconds += time.perf_counter() - t0
        return done

    # ----- deferred acknowledgements ------------------------------------------
    def defer(self, call: Unsettled) -> None:
        """Collect ``call``'s acknowledgements when the next call starts."""
        self._unsettled = call

    def take(self) -> Unsettled | None:
        """The unsettled call, if any (it is settled by whoever takes it)."""
        call, self._unsettled = self._unsettled, None
        return call

    def settle(self, call: Unsettled, version: int) -> set[int]:
        """Collect an unsettled call's acknowledgements; the slots whose replicas
        are *not* made (a death already visible counts, acknowledged or not)."""
        t0 = time.perf_counter()
        self.detector.poll(0.0)
        out = self.detector.gather(call.copies, call.copied_by)
        done = self.acknowledged(out.results, version)
        self.seconds += time.perf_counter() - t0
        dead = self.detector.dead
        return {k for k in call.copies if k not in done or call.copied_by[k] in dead}

    def settle_quietly(self, call: Unsettled, version: int, steps: Iterable[ray.ObjectRef]) -> bool:
        """Collect an unsettled call's acknowledgements while ``steps`` (the
        next call's) run, without handling deaths; False (nothing recorded)
        unless every actor answered within a heartbeat and made its replicas.

        Deaths are left to :meth:`settle`, which the caller runs on False:
        seen here they would be restored from replicas that are not recorded
        yet. Only a wait that outlasted the steps counts in :attr:`seconds`
        (while a step still runs the driver would have waited anyway).
        """
        t0 = time.perf_counter()
        refs = list(call.copies.values())
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.cfg.heartbeat_seconds)
        steps = list(steps)
        steps_done, _ = ray.wait(steps, num_returns=len(steps), timeout=0)
        if len(steps_done) == len(steps):
            self.seconds += time.perf_counter() - t0
        if len(ready) < len(refs):
            return False
        results = {}
        for k, ref in call.copies.items():
            try:
                results[k] = ray.get(ref)
            except (RayActorError, ActorUnavailableError):
                return False  # :meth:`settle` sees the same error and handles it
        if any(res["skipped"] for res in results.values()):
            return False
        self.acknowledged(results, version)
        return True

    # ----- leaving clients -----------------------------------------------------
    def release(self, ids: list[int]) -> None:
        """Clients left: every live holder drops their replicas."""
        self.index.forget_clients(ids)
        release = {
            inc: h.release_replicas.remote(list(ids))
            for inc, h in self.processes.holders.items()
            if inc not in self.detector.dead
        }
        for inc, ref in release.items():
            try:
                ray.get(ref, timeout=self.cfg.unavailable_timeout)
            except RayError as err:  # a dead holder: the detector sees it through its sentinel
                log.warning("holder %s did not release replicas of %s: %s", inc, list(ids), err)
