"""``--eval-every k``: clients are scored every k-th round and the last, nothing else changes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers.fault import metrics, run

from dfml.algorithms.evaluation import EvalConfig
from dfml.errors import ConfigError


def scored_rounds(table) -> list[int]:
    rows = table.to_pylist()
    rounds = sorted({r["round"] for r in rows})
    return [
        rnd
        for rnd in rounds
        if all(not math.isnan(r["accuracy"]) for r in rows if r["round"] == rnd)
    ]


@pytest.mark.parametrize("algorithm", ["dfedavg", "fedavg"])
def test_eval_every_scores_every_kth_round_and_the_last(ray_session, tmp_path, algorithm):
    """Rounds 2, 5 and 6 of 7 with k = 3; the scored rows equal an every-round run's."""
    every = run(tmp_path / "every", algorithm=algorithm, rounds=7)
    sparse = run(tmp_path / "sparse", algorithm=algorithm, rounds=7, eval_every=3)
    full, part = metrics(tmp_path / "every"), metrics(tmp_path / "sparse")
    assert scored_rounds(full) == list(range(7))
    assert scored_rounds(part) == [2, 5, 6]
    unscored = [r for r in part.to_pylist() if r["round"] not in (2, 5, 6)]
    assert unscored and all(math.isnan(r["accuracy"]) for r in unscored)
    # Scoring does not touch training: same losses every round, same scores where scored.
    np.testing.assert_array_equal(
        full.column("train_loss").to_numpy(), part.column("train_loss").to_numpy()
    )
    for rnd in (2, 5, 6):
        a = [r["accuracy"] for r in full.to_pylist() if r["round"] == rnd]
        b = [r["accuracy"] for r in part.to_pylist() if r["round"] == rnd]
        assert a == b
    assert sparse["final_accuracy"] == every["final_accuracy"]


def test_eval_every_must_be_positive():
    with pytest.raises(ConfigError, match="eval_every must be >= 1, got 0"):
        EvalConfig(eval_every=0)
