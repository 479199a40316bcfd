"""Chaos: seeded, reproducible failures of client actors, worker processes, nodes.

Which targets fail in round r is a pure function of (seed, r) —
:func:`plan_kills` — so two runs with the same seed lose the same actors in
the same rounds whatever the timing. Each round every target fails with
probability ``chaos_kill_rate``; at each of ``chaos_rounds`` a
``chaos_fraction`` of the targets (at least one) fail together.

Kill primitives (:func:`kill_actor`, :func:`kill_node`):

* ``ray.kill`` — Ray terminates the actor (asynchronous: the caller must
  confirm the death before counting it, see RAY_NOTES);
* ``sigkill`` — SIGKILL of the actor's worker process, as a crash would
  (sent from the driver when the process is on its node, else by a small
  task pinned to that node);
* ``node`` — SIGKILL of a node's raylet (a worker's parent process), which
  takes the node down with every process on it; the driver's node is never
  a target.
"""

from __future__ import annotations

import logging
import math
import os
import signal
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from dfml.fault.events import FaultEvent

if TYPE_CHECKING:
    from dfml.fault.config import FaultConfig
    from dfml.fault.timeline import Timeline

log = logging.getLogger(__name__)

_CHAOS_SALT = 0xC4A05

#: How long chaos waits to see a kill take effect before it stops counting it.
CONFIRM_TIMEOUT_S = {"ray.kill": 10.0, "sigkill": 10.0, "node": 60.0}


def plan_kills(
    seed: int,
    round_index: int,
    num_targets: int,
    rate: float,
    rounds: Sequence[int] = (),
    fraction: float = 0.0,
) -> list[int]:
    """Indices of the targets that fail in ``round_index`` (sorted)."""
    if num_targets <= 0:
        return []
    rng = np.random.default_rng([seed, round_index, _CHAOS_SALT])
    hit = {int(i) for i in np.flatnonzero(rng.random(num_targets) < rate)}
    if round_index in rounds:
        k = min(num_targets, max(1, math.ceil(fraction * num_targets)))
        hit |= {int(i) for i in rng.choice(num_targets, size=k, replace=False)}
    return sorted(hit)


@ray.remote(num_cpus=0, max_retries=0)
def _signal_pid(pid: int, parent: bool) -> None:
    """SIGKILL ``pid`` (or this worker's parent, the node's raylet) on this node."""
    os.kill(os.getppid() if parent else pid, signal.SIGKILL)


def _on_node(node_id: str) -> dict[str, Any]:
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False)}


def kill_actor(handle: Any, mode: str, pid: int, node_id: str) -> None:
    """Issue the kill; the caller confirms the death (it is asynchronous)."""
    if mode == "ray.kill":
        ray.kill(handle, no_restart=True)
    elif mode == "sigkill":
        if node_id == ray.get_runtime_context().get_node_id():
            os.kill(pid, signal.SIGKILL)
        else:
            _signal_pid.options(**_on_node(node_id)).remote(pid, False)
    else:
        raise ValueError(f"kill_actor cannot {mode!r}; use kill_node for node failures")


def kill_node(node_id: str) -> None:
    """Crash a (non-driver) node by SIGKILL of its raylet."""
    if node_id == ray.get_runtime_context().get_node_id():
        raise ValueError("chaos never kills the driver's node")
    _signal_pid.options(**_on_node(node_id)).remote(0, True)


class Targets(Protocol):
    """What chaos sees of the federation's client actors (an :class:`~dfml.fault.view.ActorView`)."""

    def slots(self) -> int: ...

    def handle(self, k: int) -> Any: ...

    def clients_of(self, k: int) -> list[int]: ...

    def placement_of(self, k: int) -> dict[str, Any]: ...

    def confirm_dead(self, ks: Iterable[int], timeout: float) -> list[int]: ...

    def note_kill(self, k: int, t: float, mode: str) -> None: ...


class Chaos:
    """Seeded kills, as an observer of steps.

    The federation tells it each time a step of round r was sent
    (:meth:`step_sent`); the first time in each round of the run it kills
    what :func:`plan_kills` says, so the victims die while that step runs.
    Targets are the client actors (``ray.kill``, ``sigkill``) or the
    non-driver nodes hosting them (``node``). Only confirmed deaths count.
    """

    def __init__(
        self,
        cfg: FaultConfig,
        seed: int,
        rounds: int | None,
        targets: Targets,
        timeline: Timeline,
    ) -> None:
        self.cfg, self.seed, self.rounds = cfg, seed, rounds
        self.targets = targets
        self.timeline = timeline
        self.struck: set[int] = set()

    def step_sent(self, rnd: int | None) -> None:
        """A step of round ``rnd`` (``None``: outside the round loop) was sent."""
        in_run = rnd is not None and (self.rounds is None or rnd < self.rounds)
        if not (self.cfg.chaos and in_run) or rnd in self.struck:
            return
        self.struck.add(rnd)
        self.strike(rnd)

    def strike(self, rnd: int) -> None:
        """Kill what :func:`plan_kills` says for round ``rnd``; count only confirmed deaths."""
        cfg, targets, timeline = self.cfg, self.targets, self.timeline
        mode = cfg.chaos_mode
        n = targets.slots()
        if mode == "node":
            here = ray.get_runtime_context().get_node_id()
            node_of_k = {k: targets.placement_of(k)["node_id"] for k in range(n)}
            nodes = sorted(set(node_of_k.values()) - {here})
            hit = plan_kills(
                self.seed,
                rnd,
                len(nodes),
                cfg.chaos_kill_rate,
                cfg.chaos_rounds,
                cfg.chaos_fraction,
            )
            victims = [nodes[i] for i in hit]
            t = timeline.now()
            for node in victims:
                kill_node(node)
            affected = [k for k, node in node_of_k.items() if node in victims]
        else:
            victims = plan_kills(
                self.seed, rnd, n, cfg.chaos_kill_rate, cfg.chaos_rounds, cfg.chaos_fraction
            )
            t = timeline.now()
            for k in victims:
                p = targets.placement_of(k)
                kill_actor(targets.handle(k), mode, p["pid"], p["node_id"])
            affected = list(victims)
        if not affected:
            return
        for k in affected:
            targets.note_kill(k, t, mode)
        confirmed = targets.confirm_dead(affected, CONFIRM_TIMEOUT_S[mode])
        for k in sorted(set(affected) - set(confirmed)):
            log.warning("chaos: the kill of actor %d was not confirmed; not counted", k)
            timeline.record(FaultEvent(timeline.now(), rnd, "unconfirmed_kill", actor=k, mode=mode))
        if mode == "node":
            for node in victims:
                timeline.record(FaultEvent(t, rnd, "kill", node=node, mode=mode))
        for k in confirmed:
            node = targets.placement_of(k)["node_id"]
            if mode != "node":
                timeline.record(FaultEvent(t, rnd, "kill", actor=k, node=node, mode=mode))
            for cid in targets.clients_of(k):
                timeline.record(
                    FaultEvent(t, rnd, "injected", client=cid, actor=k, node=node, mode=mode)
                )
