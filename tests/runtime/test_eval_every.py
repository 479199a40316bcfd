"""``--eval-every k``: clients are scored every k-th round and the last, nothing else changes.

Loop semantics, so tested on the in-process federation (the same loop and
client code as the Ray one, no actors); the CLI end-to-end tests cover Ray.
"""

from __future__ import annotations

import math

import pytest
from helpers.fault import BASE

from dfml.actors.inprocess import InProcessFederation
from dfml.algorithms.evaluation import EvalConfig
from dfml.errors import ConfigError
from dfml.experiment import prepare
from dfml.launch.options import build_config
from dfml.launch.registry import algorithm_class
from dfml.records import RoundRecord
from dfml.runtime.loop import Runtime


def history(algorithm: str, eval_every: int) -> list[RoundRecord]:
    cfg, _ = build_config({**BASE, "algorithm": algorithm, "rounds": 7})
    prepared = prepare(cfg)
    fed = InProcessFederation(cfg.data, cfg.model, prepared.splits, cfg.run.seed, cfg.resources)
    algo = algorithm_class(algorithm)(cfg.algorithm)
    runtime = Runtime(algo, fed, prepared.topology, 7, seed=cfg.run.seed, eval_every=eval_every)
    return runtime.run()


def scored(record: RoundRecord) -> bool:
    return all(not math.isnan(m.get("accuracy", math.nan)) for m in record.metrics.values())


@pytest.mark.parametrize("algorithm", ["dfedavg", "fedavg"])
def test_eval_every_scores_every_kth_round_and_the_last(algorithm):
    """Rounds 2, 5 and 6 of 7 with k = 3; the scored rows equal an every-round run's."""
    full, part = history(algorithm, 1), history(algorithm, 3)
    assert [r.round for r in full if scored(r)] == list(range(7))
    assert [r.round for r in part if scored(r)] == [2, 5, 6]
    for a, b in zip(full, part, strict=True):
        assert sorted(a.metrics) == sorted(b.metrics) == [0, 1, 2, 3]
        # Scoring does not touch training: the same losses every round ...
        assert [a.metrics[c]["train_loss"] for c in a.metrics] == [
            b.metrics[c]["train_loss"] for c in b.metrics
        ]
        if a.round in (2, 5, 6):  # ... and the same scores where scored
            assert [a.metrics[c]["accuracy"] for c in a.metrics] == [
                b.metrics[c]["accuracy"] for c in b.metrics
            ]
        else:
            assert all("accuracy" not in m or math.isnan(m["accuracy"]) for m in b.metrics.values())


def test_eval_every_must_be_positive():
    with pytest.raises(ConfigError, match="eval_every must be >= 1, got 0"):
        EvalConfig(eval_every=0)
