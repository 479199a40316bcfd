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

log = logging.getLogger(__name__)

_CHAOS_SALT = 0xC4A05


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
