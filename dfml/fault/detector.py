"""FMRec's Manager, detection half: sentinels, heartbeats, fencing.

Detection is push-style: every fault-layer actor has a pending ``sentinel``
call (its own concurrency group) and the driver ``ray.wait``s on those
together with whatever it is waiting for, so a death is seen within
milliseconds of the process going away (ray.kill ~5 ms, SIGKILL ~15 ms
here), or when Ray declares the node dead.

*Dead vs. temporarily unavailable.* Dead means Ray says so: the sentinel
returns an error or a call raises ``ActorDiedError``. An actor that stops
answering pings (a frozen process, an unreachable node) or raises
``ActorUnavailableError`` is only *suspect*: the detector keeps pinging it
for ``unavailable_timeout`` seconds; if it answers, the outage is logged
and nothing is restored (its steps are exactly-once per call); if not, it
is fenced — killed on purpose, so a late zombie cannot resurface — and
handled as dead.

The detector does not know the federation. It reports the death of client
actor slot k by calling ``on_death(k, when)`` the moment it sees it (even
while the driver still waits for the other actors' steps), and the death of
another watched process (a spare, the store) by calling the handler
registered for its role.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, ObjectLostError, RayActorError

from dfml.fault.config import FaultConfig
from dfml.fault.events import FaultEvent
from dfml.fault.processes import Processes
from dfml.fault.timeline import Timeline

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What came back from one batch of per-actor calls."""

    results: dict[int, Any] = field(default_factory=dict)
    dead: set[int] = field(default_factory=set)
    lost: dict[int, BaseException] = field(default_factory=dict)
    unavailable: set[int] = field(default_factory=set)
    arrived: dict[int, float] = field(default_factory=dict)


class Detector:
    """Sentinels, suspects and fencing; deaths go to callbacks.

    Attributes:
        dead: incarnations known dead.
        kill_time: incarnation → (time, mode) of a chaos kill (for the
            kill → detection latency).
    """

    def __init__(
        self,
        cfg: FaultConfig,
        processes: Processes,
        timeline: Timeline,
        on_death: Callable[[int, float], None],
    ) -> None:
        self.cfg = cfg
        self.processes = processes
        self.timeline = timeline
        self.on_death = on_death
        self.dead: set[str] = set()
        self.kill_time: dict[str, tuple[float, str]] = {}
        self._watched: dict[ray.ObjectRef, tuple[str, str]] = {}
        self._sentinel_of: dict[str, ray.ObjectRef] = {}
        self._suspects: dict[int, float] = {}
        self._lost: dict[str, Callable[[str, float], None]] = {}

    # ----- what is watched -------------------------------------------------
    def on_lost(self, role: str, handler: Callable[[str, float], None]) -> None:
        """Call ``handler(incarnation, when)`` when a watched ``role`` process dies."""
        self._lost[role] = handler

    def watch(self, role: str, incarnation: str, handle: Any) -> None:
        ref = handle.sentinel.remote()
        self._watched[ref] = (role, incarnation)
        self._sentinel_of[incarnation] = ref

    def watch_actor(self, k: int, handle: Any, incarnation: str | None = None) -> str:
        """Slot ``k`` is now run by ``handle``: watch it (or re-label a spare's sentinel)."""
        if incarnation is None:
            incarnation = self.processes.new_name("actor")
            self.watch("actor", incarnation, handle)
        else:
            self._watched[self._sentinel_of[incarnation]] = ("actor", incarnation)
        self.processes.assign(k, incarnation, handle)
        return incarnation

    def sentinel(self, k: int) -> ray.ObjectRef:
        """The pending sentinel call of slot ``k``'s current actor (ready once it died)."""
        return self._sentinel_of[self.processes.incarnation(k)]

    def is_dead(self, k: int) -> bool:
        return self.processes.incarnation(k) in self.dead

    def note_kill(self, k: int, t: float, mode: str) -> None:
        """Chaos killed slot ``k``'s actor at ``t``."""
        self.kill_time[self.processes.incarnation(k)] = (t, mode)

    # ----- deaths ----------------------------------------------------------
    def poll(self, timeout: float = 0.0) -> bool:
        """Handle every sentinel that has fired (waiting up to ``timeout`` for one).

        True if a client actor was found dead.
        """
        if not self._watched:
            return False
        refs = list(self._watched)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        return any([self._fired(ref) for ref in ready])

    def _fired(self, ref: ray.ObjectRef) -> bool:
        role, inc = self._watched.pop(ref)
        self._sentinel_of.pop(inc, None)
        now = self.timeline.now()
        if role == "actor":
            k = self.processes.slot_of(inc)
            if self.processes.incarnation(k) == inc and inc not in self.dead:
                self.mark_dead(k, now)
                return True
        elif role in self._lost:
            self._lost[role](inc, now)
        return False

    def mark_dead(self, k: int, now: float) -> None:
        """Record the death of slot ``k``'s actor and report it right away."""
        inc = self.processes.incarnation(k)
        self.dead.add(inc)
        killed = self.kill_time.get(inc)
        failed_at = killed[0] if killed else now
        self._suspects.pop(k, None)
        node = self.processes.placement.get(inc, {}).get("node_id", "")
        self.timeline.record(
            FaultEvent(
                now,
                self.timeline.round,
                "detected",
                actor=k,
                node=node,
                mode=killed[1] if killed else "",
                holder=inc,
                seconds=now - killed[0] if killed else 0.0,
            )
        )
        self.on_death(k, failed_at)

    # ----- waiting on calls ------------------------------------------------
    def gather(
        self, futures: Mapping[int, ray.ObjectRef], called: Mapping[int, str] | None = None
    ) -> Outcome:
        """Wait for one call per actor, watching the actors' sentinels meanwhile.

        ``called``: the incarnation each call went to, if it may have been
        replaced since (default: the current one).
        """
        out = Outcome()
        called = {k: (called or {}).get(k, self.processes.incarnation(k)) for k in futures}
        waiting = {ref: k for k, ref in futures.items()}
        while waiting:
            ks = set(waiting.values())
            watch = {self._sentinel_of[called[k]]: k for k in ks if called[k] in self._sentinel_of}
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
                elif ref in self._watched:
                    self._fired(ref)
            for ref, k in list(waiting.items()):
                if called[k] in self.dead:
                    del waiting[ref]
        out.dead |= {k for k, inc in called.items() if inc in self.dead}
        return out

    def _collect(self, k: int, inc: str, ref: ray.ObjectRef, out: Outcome) -> None:
        out.arrived[k] = self.timeline.now()
        try:
            out.results[k] = ray.get(ref)
            self.processes.started.add(inc)
        except ActorUnavailableError:
            out.unavailable.add(k)
        except RayActorError:
            if inc not in self.dead:
                self.mark_dead(k, self.timeline.now())
        except ObjectLostError as err:  # a vector it needed died with its owner
            out.lost[k] = err
        since = self._suspects.pop(k, None)
        if since is not None:
            self._came_back(k, since)

    # ----- suspects --------------------------------------------------------
    def _came_back(self, k: int, since: float) -> None:
        now = self.timeline.now()
        self.timeline.record(
            FaultEvent(now, self.timeline.round, "unavailable", actor=k, seconds=now - since)
        )
        log.warning("client actor %d was unavailable for %.1f s and came back", k, now - since)

    def _heartbeat(self, ks: set[int]) -> None:
        """Ping actors whose calls are silent; fence those gone for too long."""
        # An actor still starting (importing torch, loading data) cannot answer
        # yet; only actors that answered once can be suspected.
        pings = {
            self.processes.handle(k).ping.remote(): k
            for k in ks
            if not self.is_dead(k) and self.processes.incarnation(k) in self.processes.started
        }
        if not pings:
            return
        ready, _ = ray.wait(list(pings), num_returns=len(pings), timeout=self.cfg.heartbeat_seconds)
        answered = {pings[r] for r in ready}
        now = self.timeline.now()
        for k in pings.values():
            if k in answered:
                since = self._suspects.pop(k, None)
                if since is not None:
                    self._came_back(k, since)
                continue
            since = self._suspects.setdefault(k, now)
            log.warning("client actor %d does not answer (for %.1f s)", k, now - since)
            if now - since >= self.cfg.unavailable_timeout:
                self.fence(k)

    def await_available(self, k: int) -> None:
        """An actor raised ActorUnavailableError: wait for it, or fence it."""
        since = self._suspects.setdefault(k, self.timeline.now())
        while not self.is_dead(k):
            try:
                ray.get(self.processes.handle(k).ping.remote(), timeout=self.cfg.heartbeat_seconds)
            except (GetTimeoutError, ActorUnavailableError):
                if self.timeline.now() - since >= self.cfg.unavailable_timeout:
                    self.fence(k)
                    self.poll(timeout=self.cfg.unavailable_timeout)
                continue
            except RayActorError:
                self.mark_dead(k, self.timeline.now())
                return
            self._suspects.pop(k, None)
            self._came_back(k, since)
            return

    def fence(self, k: int) -> None:
        """Kill an actor that stayed unavailable, so it cannot come back as a zombie."""
        now = self.timeline.now()
        self.timeline.record(FaultEvent(now, self.timeline.round, "fenced", actor=k))
        log.warning(
            "fencing client actor %d: unavailable for %.1f s", k, self.cfg.unavailable_timeout
        )
        ray.kill(self.processes.handle(k), no_restart=True)
        self._suspects.pop(k, None)
