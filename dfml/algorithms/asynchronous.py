"""Asynchronous gossip on a virtual clock (``--schedule-mode async``), AD-PSGD-style.

Each client trains whenever it is free instead of waiting for a round:

1. at its start time s_i it takes the newest vectors its neighbours have
   published (the learner's own :meth:`~dfml.algorithms.base.Algorithm.round_messages`
   for it alone: its mixing row over those vectors);
2. its local update takes d_i virtual seconds,
   d_i = steps_i · s_i + ℓ_i · (neighbour vectors fetched)
   (:func:`~dfml.clock.update_seconds`, :func:`~dfml.algorithms.virtual_clock.local_steps`);
3. at s_i + d_i it mixes what it took, trains (the learner's ``client_step``)
   and publishes, and starts its next update at once: once every update
   that ends at the same time has published, so what it takes does not
   depend on the order in which equal-time events were run.

:class:`AsyncGossip` drives this as steps: each step runs the clients whose
update ends next on the virtual clock (ties broken by id), so the order of
events — and with it every bit of the run — follows from the seed and the
speeds. A client that ends at t publishes before anyone starts at t, so with
equal speeds every client ends together and the run is the synchronous one.

A *round* is as many client updates as there are live clients, so rounds
count the same local work as a synchronous run's; a fast client may update
several times in one round and a straggler not at all (it is scored by the
evaluation step of clients without a score). After a round every live
client's metrics carry ``virtual_time`` (the clock at the round's last
update), and each client that updated ``staleness_mean`` / ``staleness_max``:
over the neighbour vectors it mixed, how many newer versions their senders
had published by the time its update ended (0 when nobody overtook it).

Everything the schedule remembers is in its slot of ``DriverState.sources``
(:class:`AsyncState`). It needs an algorithm whose round is one gossip
training step (:func:`check_async`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from dfml.algorithms.base import CLIENT_STEP, Algorithm, Message, RunEnv
from dfml.algorithms.virtual_clock import VIRTUAL_TIME, stamp
from dfml.clock import Speed, next_due, staleness, update_seconds
from dfml.errors import ConfigError
from dfml.records import Callback
from dfml.steps import DriverState, Phase, Step, StepResult, StepSource

#: The schedule's slot in ``DriverState.sources``.
SLOT = "async"
#: Metrics columns: the mean and the largest staleness of the vectors a client mixed.
STALENESS_MEAN, STALENESS_MAX = "staleness_mean", "staleness_max"

__all__ = ["VIRTUAL_TIME", "AsyncGossip", "AsyncState", "check_async"]


@dataclass
class AsyncState:
    """The schedule's slot: the clock and every client's update in flight (the
    ``done_at``, ``taken``, ``taken_bytes`` and ``read`` of a client that is
    between two updates are empty until it starts its next).

    Attributes:
        clock: virtual seconds at the last update that ended.
        done_at: client id → when its update in flight ends.
        taken: client id → the message it took when it started (the
            neighbour vectors of that moment and its mixing row).
        taken_bytes: client id → the bytes of the vectors it took.
        starting: clients whose update ended at ``clock`` and that start the
            next once every update ending then has published.
        read: client id → neighbour → the version of the vector it took.
        versions: client id → updates it has completed.
        last_done: client id → when its last update ended.
        round: the round ``updates`` counts.
        updates: client updates completed in ``round``.
        staleness_sum, staleness_count, staleness_max: over the whole run.
    """

    clock: float = 0.0
    done_at: dict[int, float] = field(default_factory=dict)
    taken: dict[int, Message] = field(default_factory=dict)
    taken_bytes: dict[int, int] = field(default_factory=dict)
    starting: list[int] = field(default_factory=list)
    read: dict[int, dict[int, int]] = field(default_factory=dict)
    versions: dict[int, int] = field(default_factory=dict)
    last_done: dict[int, float] = field(default_factory=dict)
    round: int = 0
    updates: int = 0
    staleness_sum: int = 0
    staleness_count: int = 0
    staleness_max: int = 0


def check_async(algorithm: Algorithm) -> None:
    """One ConfigError line unless ``algorithm``'s round is one gossip training
    step a client can take alone whenever it is free."""
    name = algorithm.name
    if getattr(algorithm, "centralized", False):
        raise ConfigError(
            f"--schedule-mode async needs clients that gossip, but algorithm {name!r} "
            "aggregates at a server, which waits for every client each round (a barrier)"
        )
    if algorithm.fixed_neighbours:
        raise ConfigError(
            f"--schedule-mode async: algorithm {name!r} must receive every message of every "
            "neighbour, which a client that trains on its own clock does not"
        )
    if not algorithm.event_driven:
        raise ConfigError(
            f"--schedule-mode async: algorithm {name!r} runs phases of its own each round "
            "(--cluster-by labels), which need every client at once"
        )


class AsyncGossip(StepSource, Callback):
    """The event-driven schedule: plans the training steps in place of the
    learner's driver half (:attr:`~dfml.steps.StepSource.plans_training`).

    ``speeds``: client id → its :class:`~dfml.clock.Speed`; ``steps``: client
    id → local SGD steps of one of its updates. The learner arrives with
    :meth:`on_run_start`.
    """

    plans_training: ClassVar[bool] = True

    def __init__(self, speeds: Mapping[int, Speed], steps: Mapping[int, int]) -> None:
        self.speeds, self.steps = dict(speeds), dict(steps)
        self.algorithm: Algorithm | None = None
        self._state: AsyncState | None = None

    def on_run_start(self, algorithm: Any, federation: Any) -> None:
        check_async(algorithm)
        self.algorithm = algorithm

    @property
    def learner(self) -> Algorithm:
        if self.algorithm is None:
            raise RuntimeError("AsyncGossip plans steps only once the run has started")
        return self.algorithm

    # ----- driver -------------------------------------------------------------
    def _start(self, state: DriverState, env: RunEnv, slot: AsyncState, ids: list[int]) -> None:
        """Clients ``ids`` start an update now: each takes its neighbours' newest vectors."""
        learner = self.learner
        messages = learner.round_messages(state, dataclasses.replace(env, sampled=ids))
        for cid in ids:
            msg = messages[cid]
            nbrs = sorted(env.topology.mixing_row(cid)[1])
            slot.taken[cid] = msg
            slot.taken_bytes[cid] = learner.gossip_bytes(state, env, {cid: msg})
            slot.read[cid] = {j: slot.versions.get(j, 0) for j in nbrs}
            seconds = update_seconds(self.speeds[cid], self.steps[cid], len(msg.neighbors))
            slot.done_at[cid] = slot.clock + seconds

    def next_step(self, state: DriverState, env: RunEnv) -> Step | None:
        """The clients whose updates end next, up to the round's remaining count."""
        slot = state.sources.get(SLOT)
        if slot is None:  # the run begins: every client starts at 0
            slot = state.sources[SLOT] = AsyncState(starting=env.live())
        self._state = slot
        if slot.starting and slot.clock not in slot.done_at.values():
            # Every update ending at the clock has published: the clients whose
            # update ended then take their neighbours' newest vectors.
            self._start(state, env, slot, sorted(slot.starting))
            slot.starting = []
        if slot.round != state.round:
            slot.round, slot.updates = state.round, 0
        left = len(env.live()) - slot.updates
        if left <= 0:
            return None
        _, due = next_due(slot.done_at, left)
        messages = {c: dataclasses.replace(slot.taken[c], round=state.round) for c in due}
        return Step(
            Phase.TRAIN,
            CLIENT_STEP,
            state.round,
            messages,
            bytes_sent=sum(slot.taken_bytes[c] for c in due),
        )

    def absorb(
        self, state: DriverState, step: Step, results: Mapping[int, StepResult], env: RunEnv
    ) -> None:
        """Publish the ended updates, record their staleness, start the clients again."""
        slot = state.sources[SLOT]
        ids = step.participants
        now = slot.done_at[ids[0]]
        self.learner.absorb(state, step, results, env)
        before = {  # versions published before ``now`` (at most one ends at ``now``)
            j: v - (slot.last_done.get(j) == now) for j, v in slot.versions.items()
        }
        for cid in ids:
            lags = staleness(slot.read[cid], {j: before.get(j, 0) for j in slot.read[cid]})
            state.metrics.setdefault(cid, {}).update(
                {
                    STALENESS_MEAN: float(np.mean(lags)) if lags else 0.0,
                    STALENESS_MAX: float(max(lags, default=0)),
                }
            )
            slot.staleness_sum += sum(lags)
            slot.staleness_count += len(lags)
            slot.staleness_max = max(slot.staleness_max, *lags, 0)
            slot.versions[cid] = slot.versions.get(cid, 0) + 1
            slot.last_done[cid] = now
            for in_flight in (slot.done_at, slot.taken, slot.taken_bytes, slot.read):
                del in_flight[cid]
        slot.clock = now
        slot.updates += len(ids)
        slot.starting.extend(ids)
        if slot.updates >= len(env.live()):
            stamp(state, env, slot.clock)

    def summary(self) -> dict[str, Any]:
        slot = self._state or AsyncState()
        count = slot.staleness_count
        return {
            "schedule_mode": "async",
            "virtual_time": slot.clock,
            "staleness_mean": slot.staleness_sum / count if count else 0.0,
            "staleness_max": slot.staleness_max,
            "updates_per_client": dict(sorted(slot.versions.items())),
        }
