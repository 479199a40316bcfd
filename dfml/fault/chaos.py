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
from collections.abc import Sequence
from typing import Any

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from dfml.fault.events import FaultEvent

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


def strike_round(fed: Any, rnd: int) -> None:
    """Kill what :func:`plan_kills` says for round ``rnd``; count only confirmed deaths.

    Called by the federation right after it sent the round's first call, so
    the victims die while that call runs. Targets are the client actors
    (``ray.kill``, ``sigkill``) or the non-driver nodes hosting them (``node``).
    """
    cfg = fed.fault
    mode = cfg.chaos_mode
    inc_of = fed.manager.incarnation
    if mode == "node":
        here = ray.get_runtime_context().get_node_id()
        node_of_k = {k: fed.placement[inc_of[k]]["node_id"] for k in range(len(fed.actors))}
        nodes = sorted(set(node_of_k.values()) - {here})
        hit = plan_kills(
            fed.seed,
            rnd,
            len(nodes),
            cfg.chaos_kill_rate,
            cfg.chaos_rounds,
            cfg.chaos_fraction,
        )
        victims = [nodes[i] for i in hit]
        t = fed.clock()
        for node in victims:
            kill_node(node)
        affected = [k for k, node in node_of_k.items() if node in victims]
    else:
        victims = plan_kills(
            fed.seed,
            rnd,
            len(fed.actors),
            cfg.chaos_kill_rate,
            cfg.chaos_rounds,
            cfg.chaos_fraction,
        )
        t = fed.clock()
        for k in victims:
            p = fed.placement[inc_of[k]]
            kill_actor(fed.actors[k], mode, p["pid"], p["node_id"])
        affected = list(victims)
    if not affected:
        return
    for k in affected:
        fed.manager.kill_time[inc_of[k]] = (t, mode)
    sentinels = {fed.manager.sentinel(k): k for k in affected}
    ready, _ = ray.wait(
        list(sentinels), num_returns=len(sentinels), timeout=CONFIRM_TIMEOUT_S[mode]
    )
    confirmed = sorted(sentinels[r] for r in ready)
    for k in sorted(set(affected) - set(confirmed)):
        log.warning("chaos: the kill of actor %d was not confirmed; not counted", k)
        fed.record(FaultEvent(fed.clock(), rnd, "unconfirmed_kill", actor=k, mode=mode))
    if mode == "node":
        for node in victims:
            fed.record(FaultEvent(t, rnd, "kill", node=node, mode=mode))
    for k in confirmed:
        node = fed.placement[inc_of[k]]["node_id"]
        if mode != "node":
            fed.record(FaultEvent(t, rnd, "kill", actor=k, node=node, mode=mode))
        for cid in fed.cohorts[k]:
            fed.record(FaultEvent(t, rnd, "injected", client=cid, actor=k, node=node, mode=mode))
