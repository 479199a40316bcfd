"""What the step loop reports: finished rounds, and the callbacks that receive them.

They sit at the bottom of the package, below the algorithms and the
runtime, because both sides use them: the loop (:mod:`dfml.runtime.loop`)
makes a :class:`RoundRecord` per round and calls every :class:`Callback`;
the evaluation protocol, the task service, the fault report and the
results writer are callbacks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dfml.programs import Metrics
from dfml.steps import Step


@dataclass
class RoundRecord:
    """One finished round as the callbacks see it.

    ``metrics`` has one entry per live client; ``trained`` says which of them
    ran the training step (partial participation); ``epoch`` is the
    membership epoch the round ran in; ``cross_node_bytes`` is the part of
    the neighbour vectors fetched that crossed nodes (see
    :func:`dfml.actors.placement.cross_node_bytes`; 0 on one node).
    """

    round: int
    metrics: dict[int, Metrics]
    bytes_sent: int
    seconds: float
    epoch: int = 0
    trained: frozenset[int] = frozenset()
    phase_seconds: dict[str, float] = field(default_factory=dict)
    cross_node_bytes: int = 0

    def mean(self, key: str) -> float:
        values = [m[key] for m in self.metrics.values() if key in m and not math.isnan(m[key])]
        return float(np.mean(values)) if values else float("nan")


class Callback:
    """What happens around the step loop (progress, results, reports): no-op
    hooks; subclasses override what they need.

    A callback sees the run start (:meth:`on_start` gets the
    :class:`~dfml.runtime.loop.Runtime`, whose ``add_clients`` /
    ``remove_clients`` change membership between rounds), every step with its
    phase, every finished round, a resume (the rounds already done), and the
    end. A callback that is also a :class:`~dfml.steps.StepSource` plans
    steps of its own.
    """

    def on_start(self, runtime: Any) -> None:
        return None

    def on_run_start(self, algorithm: Any, federation: Any) -> None:
        return None

    def on_step_end(self, step: Step, seconds: float) -> None:
        return None

    def on_resume(self, history: Sequence[RoundRecord]) -> None:
        """The run resumed from a checkpoint after ``history`` (rounds already done)."""
        return None

    def on_round_end(self, record: RoundRecord) -> None:
        return None

    def on_run_end(self, history: Sequence[RoundRecord]) -> None:
        return None

    def summary(self) -> dict[str, Any]:
        """Keys this callback adds to summary.json."""
        return {}

    def on_results(self, summary: Mapping[str, Any], out: Path | None) -> None:
        """``summary`` (summary.json, however the run ended) and the plots are
        written in ``out``: for callbacks that copy results elsewhere (trackers)."""
        return None
