"""Asynchronous gossip on a virtual clock (``--schedule-mode async``), AD-PSGD-style.

Each client trains whenever it is free instead of waiting for a round:

1. when it is free (at time t) it mixes the newest vectors its neighbours
   have published, with its mixing row (the learner's own
   :meth:`~dfml.algorithms.base.Algorithm.round_messages` for it alone);
2. its local update takes d_i virtual seconds,
   d_i = steps_i · s_i + ℓ_i · (neighbour vectors fetched)
   (:func:`~dfml.clock.update_seconds`, :func:`~dfml.algorithms.virtual_clock.local_steps`);
3. at t + d_i it trains from what it mixed, publishes, and is free again.

:class:`AsyncGossip` drives this as two kinds of steps. A ``mix`` step
(program :data:`ASYNC_MIX`) runs the clients that start: each keeps the mixed
vector in a state extra (:data:`MIXED`), so until its update ends its
published vector — what its neighbours read, and what a restored or resumed
client re-publishes — stays its last trained one. A ``train`` step (program
:data:`ASYNC_TRAIN`) runs the clients whose update ends next on the virtual
clock (ties broken by id): the learner's own client step from the kept
vector, with nothing left to mix. So the order of events — and with it every
bit of the run — follows from the seed and the speeds, and no step holds a
reference to an older vector: the fault layer and checkpoints see ordinary
steps. Clients whose updates end at the same time all publish before any of
them mixes again, so with equal speeds every client ends together and the
run is the synchronous one.

A *round* is as many client updates as there are live clients, so rounds
count the same local work as a synchronous run's; a fast client may update
several times in one round and a straggler not at all (it is scored by the
evaluation step of clients without a score). After a round every live
client's metrics carry ``virtual_time`` (the clock at the round's last
update), and each client that updated ``staleness_mean`` / ``staleness_max``:
over the neighbour vectors it mixed, how many newer versions their senders
had published by the time its update ended (0 when nobody overtook it).

Everything the schedule remembers is in its slot of ``DriverState.sources``
(:class:`AsyncState`, plain numbers). It needs an algorithm whose client step
is "mix, then the local update" (:func:`check_async`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from dfml import programs
from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.base import CLIENT_STEP, Algorithm, Message, Metrics, RunEnv
from dfml.algorithms.virtual_clock import stamp
from dfml.clock import Speed, next_due, staleness, update_seconds
from dfml.errors import ConfigError
from dfml.programs import Program, register
from dfml.records import Callback
from dfml.steps import DriverState, Phase, Step, StepResult, StepSource

#: The schedule's slot in ``DriverState.sources``.
SLOT = "async"
#: The phase and program of a step whose clients start an update (mix).
MIX_PHASE, ASYNC_MIX = "mix", "async_mix"
#: The program of a step whose clients' updates end (train from the mixed vector).
ASYNC_TRAIN = "async_train"
#: The state extra that holds a client's mixed vector while its update is in flight.
MIXED = "async_mixed"
#: Metrics columns: the mean and the largest staleness of the vectors a client mixed.
STALENESS_MEAN, STALENESS_MAX = "staleness_mean", "staleness_max"

__all__ = ["AsyncGossip", "AsyncState", "check_async"]


# ----- client half: the two programs ----------------------------------------------
def mix_program(
    algorithm: Algorithm,
    ctx: ClientContext,
    state: ClientState,
    neighbors: Sequence[np.ndarray],
    msg: Message,
) -> tuple[ClientState, Metrics]:
    """Mix now, keep the result aside: the published vector stays the last trained one."""
    mixed = algorithm.mix(state, neighbors, msg)
    return state.evolve(extras={**state.extras, MIXED: mixed}), {}


def _from_mixed(state: ClientState) -> ClientState:
    extras = dict(state.extras)
    return state.evolve(params=extras.pop(MIXED), extras=extras)


def train_program(
    algorithm: Algorithm,
    ctx: ClientContext,
    state: ClientState,
    neighbors: Sequence[np.ndarray],
    msg: Message,
) -> tuple[ClientState, Metrics]:
    """The learner's client step from the mixed vector, with nothing more to mix."""
    return programs.get(CLIENT_STEP).run(algorithm, ctx, _from_mixed(state), (), msg)


def _batched_train(algorithm: Algorithm, model: Any) -> programs.BatchedFn | None:
    inner = programs.get(CLIENT_STEP).vectorized(algorithm, model)
    if inner is None:
        return None

    def run(
        ctxs: Sequence[Any],
        states: Sequence[Any],
        neighbors: Sequence[Sequence[Any]],
        msgs: Sequence[Any],
    ) -> list[tuple[Any, Metrics]]:
        return inner(ctxs, [_from_mixed(s) for s in states], [()] * len(states), msgs)

    return run


register(Program(ASYNC_MIX, mix_program))
register(Program(ASYNC_TRAIN, train_program, batched=_batched_train, scored=True))


# ----- driver half -----------------------------------------------------------------
@dataclass
class AsyncState:
    """The schedule's slot: the clock and every client's update in flight.

    Attributes:
        clock: virtual seconds at the last update that ended.
        done_at: client id → when its update in flight ends (none for a
            client between two updates).
        starting: clients whose update ended at ``clock`` and that mix
            again once every update ending then has published.
        read: client id → neighbour → the version of the vector it mixed.
        versions: client id → updates it has completed.
        last_done: client id → when its last update ended.
        round: the round ``updates`` counts.
        updates: client updates completed in ``round``.
        staleness_sum, staleness_count, staleness_max: over the whole run.
    """

    clock: float = 0.0
    done_at: dict[int, float] = field(default_factory=dict)
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
    """One ConfigError line unless ``algorithm``'s client step is "mix, then the
    local update" and a client can take it alone whenever it is free."""
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
            "or mixes inside its local update, which need every client at once"
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

    def next_step(self, state: DriverState, env: RunEnv) -> Step | None:
        """Clients that start (mix), else those whose updates end next, up to the
        round's remaining count of updates."""
        slot = state.sources.get(SLOT)
        if slot is None:  # the run begins: every client starts at 0
            slot = state.sources[SLOT] = AsyncState(starting=env.live())
        self._state = slot
        if slot.round != state.round:
            slot.round, slot.updates = state.round, 0
        left = len(env.live()) - slot.updates
        if left <= 0:
            return None
        if slot.starting and slot.clock not in slot.done_at.values():
            # Every update ending at the clock has published: mix now.
            ids = sorted(slot.starting)
            messages = self.learner.round_messages(state, dataclasses.replace(env, sampled=ids))
            return Step(
                MIX_PHASE,
                ASYNC_MIX,
                state.round,
                messages,
                publish=False,
                bytes_sent=self.learner.gossip_bytes(state, env, messages),
            )
        _, due = next_due(slot.done_at, left)
        return Step(Phase.TRAIN, ASYNC_TRAIN, state.round, dict.fromkeys(due, Message(state.round)))

    def absorb(
        self, state: DriverState, step: Step, results: Mapping[int, StepResult], env: RunEnv
    ) -> None:
        slot = state.sources[SLOT]
        if step.program == ASYNC_MIX:
            self._started(slot, step, env)
        else:
            self._ended(state, slot, step, results, env)

    def _started(self, slot: AsyncState, step: Step, env: RunEnv) -> None:
        """The clients mixed at ``clock``: note what they read and when they end."""
        for cid, msg in step.messages.items():
            nbrs = sorted(env.topology.mixing_row(cid)[1])
            slot.read[cid] = {j: slot.versions.get(j, 0) for j in nbrs}
            seconds = update_seconds(self.speeds[cid], self.steps[cid], len(msg.neighbors))
            slot.done_at[cid] = slot.clock + seconds
        slot.starting = []

    def _ended(
        self,
        state: DriverState,
        slot: AsyncState,
        step: Step,
        results: Mapping[int, StepResult],
        env: RunEnv,
    ) -> None:
        """Publish the ended updates, record their staleness, queue the clients to mix."""
        ids = step.participants
        now = slot.done_at[ids[0]]
        self.learner.absorb(state, step, results, env)
        before = {  # versions published before ``now`` (at most one ends at ``now``)
            j: v - (slot.last_done.get(j) == now) for j, v in slot.versions.items()
        }
        for cid in ids:
            lags = staleness(slot.read.pop(cid), before)
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
            del slot.done_at[cid]
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
