"""The honest clients' accuracy: attackers left out of every mean it reports.

A step source that plans no step, as the privacy accountant: whenever the
loop asks it (after the learner and the evaluation are done with a step),
it copies each honest client's ``accuracy`` into ``honest_accuracy``, so
``metrics.parquet`` has the column with NaN on the attackers' rows. At the
end of the run it adds the honest means and the attacker ids to
summary.json.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dfml.algorithms.base import RunEnv
from dfml.algorithms.robust.settings import Robustness
from dfml.records import Callback, RoundRecord
from dfml.steps import DriverState, Step, StepResult, StepSource

#: The metrics column of an honest client's accuracy.
HONEST_ACCURACY = "honest_accuracy"


class ByzantineReport(StepSource, Callback):
    """``honest_accuracy`` per client and round, the honest means in summary.json.

    ``test_sizes``: client id → its test samples (the weighted mean's weights).
    """

    def __init__(self, robustness: Robustness, test_sizes: Mapping[int, int]) -> None:
        self.robustness = robustness
        self.test_sizes = dict(test_sizes)
        self.history: list[RoundRecord] = []

    def next_step(self, state: DriverState, env: RunEnv) -> Step | None:
        for cid, metrics in state.metrics.items():
            if "accuracy" in metrics and not self.robustness.is_attacker(cid):
                metrics[HONEST_ACCURACY] = metrics["accuracy"]
        return None

    def absorb(
        self, state: DriverState, step: Step, results: Mapping[int, StepResult], env: RunEnv
    ) -> None:
        raise RuntimeError("the Byzantine report plans no step, so it absorbs none")

    def on_round_end(self, record: RoundRecord) -> None:
        self.history.append(record)

    def on_resume(self, history: Sequence[RoundRecord]) -> None:
        self.history = list(history)

    def honest(self, record: RoundRecord) -> list[tuple[int, float]]:
        """(client, accuracy) of the round's honest clients that were scored."""
        return [
            (cid, m[HONEST_ACCURACY])
            for cid, m in sorted(record.metrics.items())
            if not math.isnan(m.get(HONEST_ACCURACY, math.nan))
        ]

    def summary(self) -> dict[str, Any]:
        """``honest_accuracy`` (the last round's mean over honest clients),
        ``honest_weighted_accuracy`` (weighted by test samples), the per-round
        mean, and who attacked how."""
        per_round = []
        for record in self.history:
            pairs = self.honest(record)
            per_round.append(float(np.mean([a for _, a in pairs])) if pairs else math.nan)
        last = self.honest(self.history[-1]) if self.history else []
        weighted = math.nan
        if last:
            sizes = np.array([self.test_sizes[c] for c, _ in last], dtype=np.float64)
            weighted = float(np.dot([a for _, a in last], sizes) / sizes.sum())
        rob = self.robustness
        return {
            "byzantine_clients": sorted(rob.attackers),
            "attack": rob.attack if rob.attackers else None,
            "robust_aggregation": rob.rule,
            HONEST_ACCURACY: per_round[-1] if per_round else math.nan,
            "honest_weighted_accuracy": weighted,
            "honest_accuracy_per_round": per_round,
            "honest_clients": len(last),
        }
