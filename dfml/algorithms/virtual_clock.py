"""Virtual time of a synchronous run: every round waits for its slowest engaged client.

A :class:`SyncClock` is the ``clock`` service of a ``--schedule-mode sync``
run with client speeds (``--speeds``, ``--stragglers``, ``--speed-trace``
or a ``--latency``). It plans no step and changes nothing the clients
compute, so the run's bits are those of the same run without speeds. Once
the learner's driver half has finished a round (the loop asks it only then)
it charges the round the largest cost of a client that took part,

    T_r = max_i ( [i trained] · steps_i · s_i + fetched_i · ℓ_i ),

over the clients that ran a step which changes state (training, a server's
adopt): steps_i = E·⌈n_i/B⌉ local SGD steps (:func:`local_steps`) at s_i
seconds each, and ℓ_i seconds per neighbour vector it fetched. The clock
after the round goes into every live client's metrics as ``virtual_time``
(a column of metrics.parquet), from which the evaluation protocol reads
``time_to_target``; the clock lives in its slot of ``DriverState.sources``,
so a resumed run goes on counting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dfml.algorithms.base import RunEnv
from dfml.clock import Speed, update_seconds
from dfml.records import Callback
from dfml.steps import DriverState, Step, StepResult, StepSource

#: The metrics column of the virtual clock after the round (seconds).
VIRTUAL_TIME = "virtual_time"
#: The sync clock's slot in ``DriverState.sources``.
SLOT = "clock"


def local_steps(config: Any, n: int) -> int:
    """Local SGD steps of one update on n samples: E·⌈n/B⌉ (``local_epochs`` and
    ``batch_size`` of the algorithm's config; one pass in one batch where it
    has neither)."""
    epochs = int(getattr(config, "local_epochs", 1))
    batch = int(getattr(config, "batch_size", max(n, 1)))
    return epochs * max(1, math.ceil(n / batch))


def stamp(state: DriverState, env: RunEnv, time: float) -> None:
    """Write the virtual clock into every live client's metrics of this round."""
    for cid in env.live():
        state.metrics.setdefault(cid, {})[VIRTUAL_TIME] = time


@dataclass
class ClockState:
    """The sync clock's slot: the virtual seconds so far and the last round charged."""

    time: float = 0.0
    charged_round: int = -1


class SyncClock(StepSource, Callback):
    """Charges each round its slowest engaged client's virtual seconds.

    ``speeds``: client id → its :class:`~dfml.clock.Speed` (every client
    that may take part, reserve included); ``steps``: client id → local SGD
    steps of one of its updates (:func:`local_steps`).
    """

    def __init__(self, speeds: Mapping[int, Speed], steps: Mapping[int, int]) -> None:
        self.speeds, self.steps = dict(speeds), dict(steps)
        self._fetched: dict[int, int] = {}
        self._state: ClockState | None = None

    def on_step_end(self, step: Step, seconds: float) -> None:
        """Count the neighbour vectors each client fetched in a step that changes state."""
        if step.read_only:
            return
        for cid, msg in step.messages.items():
            self._fetched[cid] = self._fetched.get(cid, 0) + len(msg.neighbors)

    def round_seconds(self, trained: set[int], fetched: Mapping[int, int]) -> float:
        """T_r: the largest cost over the clients that trained or fetched this round."""
        engaged = trained | set(fetched)
        return max(
            (
                update_seconds(
                    self.speeds[c], self.steps[c] if c in trained else 0, fetched.get(c, 0)
                )
                for c in engaged
            ),
            default=0.0,
        )

    def next_step(self, state: DriverState, env: RunEnv) -> Step | None:
        slot = state.sources.setdefault(SLOT, ClockState())
        self._state = slot
        if slot.charged_round < state.round:
            slot.time += self.round_seconds(set(state.trained), self._fetched)
            slot.charged_round = state.round
            self._fetched = {}
            stamp(state, env, slot.time)
        return None

    def absorb(
        self, state: DriverState, step: Step, results: Mapping[int, StepResult], env: RunEnv
    ) -> None:
        raise RuntimeError("the sync clock plans no step, so it absorbs none")

    def summary(self) -> dict[str, Any]:
        return {
            "schedule_mode": "sync",
            "virtual_time": self._state.time if self._state is not None else 0.0,
        }
