"""FedProx, FedAvg-FT and pFedMe run 3 rounds on digits through the runtime, with
the end-of-run personalization protocol. In process (``--backend local``): the
subject is the algorithms and the protocol; the actors have tests of their own."""

from __future__ import annotations

import math

import pytest
from helpers import assert_test_accuracy

from dfml.actors.config import ResourceConfig
from dfml.algorithms.evaluation import EvalConfig, PersonalizedEvaluation
from dfml.data.config import PartitionConfig
from dfml.experiment import ExperimentConfig, RunConfig, run_experiment
from dfml.launch.registry import algorithm_class

ROUNDS = 3


@pytest.mark.parametrize(
    "name, aggregation",
    [("fedprox", "gossip"), ("fedavg-ft", "server"), ("pfedme", "server")],
)
def test_smoke_three_rounds_on_digits(name, aggregation):
    cfg = ExperimentConfig(
        run=RunConfig(algorithm=name, clients=4, rounds=ROUNDS, seed=0),
        partition=PartitionConfig(partition="dirichlet", alpha=0.5),
        resources=ResourceConfig(backend="local"),
    )
    cls = algorithm_class(name)
    algorithm = cls(cls.Config(aggregation=aggregation, local_epochs=1))
    evaluation = PersonalizedEvaluation(EvalConfig(local_only_epochs=1), ROUNDS)
    result = run_experiment(cfg, algorithm, [evaluation])
    assert len(result.history) == ROUNDS
    last = result.history[-1]
    assert sorted(last.metrics) == [0, 1, 2, 3]
    for cid, m in last.metrics.items():
        for key in ("train_loss", "qoi"):
            assert math.isfinite(m[key]), key
        for key in ("accuracy", "global_accuracy", "pers5_accuracy"):
            assert_test_accuracy(m[key], len(result.prepared.splits[cid].test))
    # Either mode moves 8 vectors a round (server: 4 uploads and 4 downloads; ring:
    # 4 clients × 2 neighbours); what tells the modes apart is the adopt step.
    assert last.bytes_sent == 2 * 4 * result.prepared.param_count * 4
    if aggregation == "server":
        assert "adopt" in last.phase_seconds
        # every client holds the server model: Pers.0 is the global model
        assert all(m["pers0_accuracy"] == m["global_accuracy"] for m in last.metrics.values())
    else:
        assert "adopt" not in last.phase_seconds
    summary = evaluation.summary()
    assert summary["pers5_accuracy"] == pytest.approx(last.mean("pers5_accuracy"))
    assert len(summary["per_client_qoi"]) == 4
