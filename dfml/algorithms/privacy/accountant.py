"""The run's privacy accountant: every client's ε after every round.

It plans no step of its own. The loop asks it for one only once the
learner's driver half has finished the round (the algorithm is always
asked first); then it counts the noised steps of the clients that trained
(their :class:`~dfml.algorithms.privacy.accounting.Usage`, declared by the
algorithm before any actor started) and writes each live client's ε into
the round's metrics, so ``metrics.parquet`` has an ``epsilon`` column. The
counts live in its slot of ``DriverState.sources`` (:class:`PrivacyState`),
so a checkpoint holds them and a resumed run goes on counting. Clients that
left keep their ε in the summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dfml.algorithms.base import RunEnv
from dfml.algorithms.privacy.accounting import Usage, epsilon
from dfml.algorithms.privacy.dpsgd import DPSGD
from dfml.records import Callback
from dfml.steps import DriverState, Step, StepResult, StepSource

#: The accountant's slot in ``DriverState.sources``.
SLOT = "privacy"
#: The metrics column of a client's ε after the round.
EPSILON = "epsilon"


@dataclass
class PrivacyState:
    """The accountant's slot: noised steps per client so far, and the last round counted."""

    steps: dict[int, int] = field(default_factory=dict)
    counted_round: int = -1


class PrivacyAccountant(StepSource, Callback):
    """ε per client and round (a metrics column) and the final ε (summary keys).

    ``usage``: client id → its noised steps per round of training and their
    sampling rate, for every client that may take part (initial and reserve).
    """

    def __init__(
        self,
        dp: DPSGD,
        delta: float,
        usage: Mapping[int, Usage],
        target_epsilon: float | None = None,
    ) -> None:
        self.dp, self.delta, self.usage = dp, delta, dict(usage)
        self.target_epsilon = target_epsilon
        self._state: PrivacyState | None = None

    def epsilon_of(self, client: int, steps: int) -> float:
        """ε of ``client`` after ``steps`` noised steps."""
        return epsilon(self.dp.noise, self.usage[client].sample_rate, steps, self.delta)

    def next_step(self, state: DriverState, env: RunEnv) -> Step | None:
        slot = state.sources.setdefault(SLOT, PrivacyState())
        self._state = slot
        if slot.counted_round < state.round:
            for cid in sorted(state.trained):
                slot.steps[cid] = slot.steps.get(cid, 0) + self.usage[cid].steps
            slot.counted_round = state.round
            for cid in env.live():
                value = self.epsilon_of(cid, slot.steps.get(cid, 0))
                state.metrics.setdefault(cid, {})[EPSILON] = value
        return None

    def absorb(
        self, state: DriverState, step: Step, results: Mapping[int, StepResult], env: RunEnv
    ) -> None:
        raise RuntimeError("the privacy accountant plans no step, so it absorbs none")

    def summary(self) -> dict[str, Any]:
        """``dp_epsilon``: the largest ε of any client (the run's guarantee, at ``dp_delta``)."""
        steps = self._state.steps if self._state is not None else {}
        per_client = {cid: self.epsilon_of(cid, n) for cid, n in sorted(steps.items())}
        return {
            "dp_epsilon": max(per_client.values(), default=0.0),
            "dp_epsilon_per_client": per_client,
            "dp_delta": self.delta,
            "dp_clip": self.dp.clip,
            "dp_noise": self.dp.noise,
            "dp_target_epsilon": self.target_epsilon,
            "dp_steps_per_client": dict(sorted(steps.items())),
        }
