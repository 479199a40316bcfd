"""FMRec's Manager: detect failures, replace actors, drive the restore.

Detection is push-style: every fault-layer actor has a pending ``sentinel``
call (its own concurrency group) and the driver ``ray.wait``s on those
together with whatever it is waiting for, so a death is seen within
milliseconds of the process going away (ray.kill ~5 ms, SIGKILL ~15 ms
here), or when Ray declares the node dead.

*Dead vs. temporarily unavailable.* Dead means Ray says so: the sentinel
returns an error or a call raises ``ActorDiedError``. An actor that stops
answering pings (a frozen process, an unreachable node) or raises
``ActorUnavailableError`` is only *suspect*: the manager keeps pinging it
for ``unavailable_timeout`` seconds; if it answers, the outage is logged
and nothing is restored (its steps are exactly-once per call); if not, it
is fenced — killed on purpose, so a late zombie cannot resurface — and
handled as dead.

*Replacement.* The moment a death is seen (even while the driver still
waits for the other actors' steps) the dead actor's clients go to a warm
spare (already started, torch imported, dataset loaded; it only builds the
clients' data) or, if none is ready, to a new actor that Ray places on any
live node, and the Retriever restores each client
(``FaultClientActor.restore``). Client actors are created with
``max_restarts=0``: Ray never brings one back with fresh parameters behind
the driver's back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, ObjectLostError, RayActorError

from dfml.fault.events import FaultEvent

if TYPE_CHECKING:
    from dfml.fault.federation import FaultTolerantFederation

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What came back from one batch of per-actor calls."""

    results: dict[int, Any] = field(default_factory=dict)
    dead: set[int] = field(default_factory=set)
    lost: dict[int, BaseException] = field(default_factory=dict)
    unavailable: set[int] = field(default_factory=set)
    arrived: dict[int, float] = field(default_factory=dict)


@dataclass
class Spare:
    incarnation: str
    handle: Any
    ready: ray.ObjectRef
    created: float

    def is_warm(self) -> bool:
        done, _ = ray.wait([self.ready], timeout=0)
        return bool(done)


class Manager:
    """Sentinels, suspects, spares and the replacement of dead actors."""

    def __init__(self, fed: FaultTolerantFederation) -> None:
        self.fed = fed
        self.cfg = fed.fault
        self.watched: dict[ray.ObjectRef, tuple[str, str]] = {}
        self.sentinel_of: dict[str, ray.ObjectRef] = {}
        self.index_of: dict[str, int] = {}
        self.incarnation: dict[int, str] = {}
        self.dead_incarnations: set[str] = set()
        self.failed_at: dict[int, float] = {}
        self.kill_time: dict[str, tuple[float, str]] = {}
        self.suspects: dict[int, float] = {}
        self.spares: list[Spare] = []
        self.store: tuple[str, Any] | None = None
        self.started: set[str] = set()
        self._count = 0

    # ----- identities and sentinels ------------------------------------
    def new_incarnation(self, role: str) -> str:
        self._count += 1
        return f"{role}{self._count}"

    def watch(self, role: str, incarnation: str, handle: Any) -> None:
        ref = handle.sentinel.remote()
        self.watched[ref] = (role, incarnation)
        self.sentinel_of[incarnation] = ref

    def register_actor(self, k: int, handle: Any, incarnation: str | None = None) -> str:
        """Actor ``k`` is now ``handle``; watch it (or re-label a spare's sentinel)."""
        if incarnation is None:
            incarnation = self.new_incarnation("actor")
            self.watch("actor", incarnation, handle)
        else:
            self.watched[self.sentinel_of[incarnation]] = ("actor", incarnation)
        self.incarnation[k] = incarnation
        self.index_of[incarnation] = k
        return incarnation

    def sentinel(self, k: int) -> ray.ObjectRef:
        return self.sentinel_of[self.incarnation[k]]

    def is_dead(self, k: int) -> bool:
        return self.incarnation[k] in self.dead_incarnations

    def poll(self, timeout: float = 0.0) -> bool:
        """Handle every sentinel that has fired (waiting up to ``timeout`` for one).

        True if a client actor was found dead.
        """
        if not self.watched:
            return False
        refs = list(self.watched)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        return any([self._fired(ref) for ref in ready])

    def _fired(self, ref: ray.ObjectRef) -> bool:
        role, inc = self.watched.pop(ref)
        self.sentinel_of.pop(inc, None)
        now = self.fed.clock()
        if role == "actor":
            k = self.index_of[inc]
            if self.incarnation.get(k) == inc and inc not in self.dead_incarnations:
                self.mark_dead(k, now)
                return True
        elif role == "spare":
            self.spares = [s for s in self.spares if s.incarnation != inc]
            self.fed.record(FaultEvent(now, self.fed.round_index, "spare_lost", holder=inc))
            self.replenish()
        elif role == "store":
            self.fed.record(FaultEvent(now, self.fed.round_index, "store_lost", holder=inc))
            self.fed.forget_holder(inc)
            self.fed.start_store()
        return False

    def mark_dead(self, k: int, now: float) -> None:
        """Record the death of actor ``k`` and start its recovery right away."""
        inc = self.incarnation[k]
        self.dead_incarnations.add(inc)
        killed = self.kill_time.get(inc)
        self.failed_at[k] = killed[0] if killed else now
        self.suspects.pop(k, None)
        self.fed.forget_holder(inc)
        node = self.fed.placement.get(inc, {}).get("node_id", "")
        self.fed.record(
            FaultEvent(
                now,
                self.fed.round_index,
                "detected",
                actor=k,
                node=node,
                mode=killed[1] if killed else "",
                holder=inc,
                seconds=now - killed[0] if killed else 0.0,
            )
        )
        log.warning("client actor %d (%s) is dead; clients %s", k, inc, self.fed.cohorts[k])
        self.fed.begin_restore(k)

    # ----- waiting on calls --------------------------------------------
    def gather(
        self, futures: Mapping[int, ray.ObjectRef], called: Mapping[int, str] | None = None
    ) -> Outcome:
        """Wait for one call per actor, watching the actors' sentinels meanwhile.

        ``called``: the incarnation each call went to, if it may have been
        replaced since (default: the current one).
        """
        out = Outcome()
        called = {k: (called or {}).get(k, self.incarnation[k]) for k in futures}
        waiting = {ref: k for k, ref in futures.items()}
        while waiting:
            ks = set(waiting.values())
            watch = {self.sentinel_of[called[k]]: k for k in ks if called[k] in self.sentinel_of}
            ready, _ = ray.wait(
                [*waiting, *watch], num_returns=1, timeout=self.cfg.heartbeat_seconds
            )
            if not ready:
                self._heartbeat(ks)
                continue
            for ref in ready:
                if ref in waiting:
                    k = waiting.pop(ref)
                    self._collect(k, called[k], ref, out)
                elif ref in self.watched:
                    self._fired(ref)
            for ref, k in list(waiting.items()):
                if called[k] in self.dead_incarnations:
                    del waiting[ref]
        out.dead |= {k for k, inc in called.items() if inc in self.dead_incarnations}
        return out

    def _collect(self, k: int, inc: str, ref: ray.ObjectRef, out: Outcome) -> None:
        out.arrived[k] = self.fed.clock()
        try:
            out.results[k] = ray.get(ref)
            self.started.add(inc)
        except ActorUnavailableError:
            out.unavailable.add(k)
        except RayActorError:
            if inc not in self.dead_incarnations:
                self.mark_dead(k, self.fed.clock())
        except ObjectLostError as err:  # a vector it needed died with its owner
            out.lost[k] = err
        since = self.suspects.pop(k, None)
        if since is not None:
            self._came_back(k, since)

    def _came_back(self, k: int, since: float) -> None:
        now = self.fed.clock()
        self.fed.record(
            FaultEvent(now, self.fed.round_index, "unavailable", actor=k, seconds=now - since)
        )
        log.warning("client actor %d was unavailable for %.1f s and came back", k, now - since)

    def _heartbeat(self, ks: set[int]) -> None:
        """Ping actors whose calls are silent; fence those gone for too long."""
        # An actor still starting (importing torch, loading data) cannot answer
        # yet; only actors that answered once can be suspected.
        pings = {
            self.fed.actors[k].ping.remote(): k
            for k in ks
            if not self.is_dead(k) and self.incarnation[k] in self.started
        }
        if not pings:
            return
        ready, _ = ray.wait(list(pings), num_returns=len(pings), timeout=self.cfg.heartbeat_seconds)
        answered = {pings[r] for r in ready}
        now = self.fed.clock()
        for k in pings.values():
            if k in answered:
                since = self.suspects.pop(k, None)
                if since is not None:
                    self._came_back(k, since)
                continue
            since = self.suspects.setdefault(k, now)
            log.warning("client actor %d does not answer (for %.1f s)", k, now - since)
            if now - since >= self.cfg.unavailable_timeout:
                self.fence(k)

    def await_available(self, k: int) -> None:
        """An actor raised ActorUnavailableError: wait for it, or fence it."""
        since = self.suspects.setdefault(k, self.fed.clock())
        while not self.is_dead(k):
            try:
                ray.get(self.fed.actors[k].ping.remote(), timeout=self.cfg.heartbeat_seconds)
            except (GetTimeoutError, ActorUnavailableError):
                if self.fed.clock() - since >= self.cfg.unavailable_timeout:
                    self.fence(k)
                    self.poll(timeout=self.cfg.unavailable_timeout)
                continue
            except RayActorError:
                self.mark_dead(k, self.fed.clock())
                return
            self.suspects.pop(k, None)
            self._came_back(k, since)
            return

    def fence(self, k: int) -> None:
        """Kill an actor that stayed unavailable, so it cannot come back as a zombie."""
        now = self.fed.clock()
        self.fed.record(FaultEvent(now, self.fed.round_index, "fenced", actor=k))
        log.warning(
            "fencing client actor %d: unavailable for %.1f s", k, self.cfg.unavailable_timeout
        )
        ray.kill(self.fed.actors[k], no_restart=True)
        self.suspects.pop(k, None)

    # ----- replacement -------------------------------------------------
    def replenish(self) -> None:
        while len(self.spares) < self.cfg.spares:
            inc = self.new_incarnation("spare")
            handle = self.fed.make_spare()
            self.watch("spare", inc, handle)
            ready = handle.warm_up.remote(self.fed.splits[min(self.fed.splits)])
            self.spares.append(Spare(inc, handle, ready, self.fed.clock()))

    def replacement(self, k: int) -> tuple[Any, str, str]:
        """(handle, incarnation, how) of the actor that takes over cohort ``k``.

        A spare (warm, or at least already starting) if there is one, else a
        new actor placed by Ray on any live node. The caller replenishes the
        spares once every dead actor of a batch has its replacement.
        """
        if self.spares:
            spare = self.spares.pop(0)
            how = "warm spare" if spare.is_warm() else "starting spare"
            how += f" (started {self.fed.clock() - spare.created:.1f} s before)"
            splits = {cid: self.fed.splits[cid] for cid in self.fed.cohorts[k]}
            spare.handle.adopt.remote(splits)
            return spare.handle, self.register_actor(k, spare.handle, spare.incarnation), how
        handle = self.fed.make_actor(k, self.fed.algorithm)
        return handle, self.register_actor(k, handle), "new actor"
