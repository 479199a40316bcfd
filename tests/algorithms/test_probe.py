"""The disagreement probe: a step source in one module, checked against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from dfml.actors.inprocess import InProcessFederation
from dfml.algorithms.base import LocalSGDConfig
from dfml.algorithms.dfedavg import DFedAvg
from dfml.algorithms.probe import DisagreementProbe, ProbeConfig
from dfml.data.config import DataConfig
from dfml.errors import ConfigError
from dfml.experiment import ExperimentConfig, RunConfig, prepare
from dfml.models.zoo import ModelConfig
from dfml.records import Callback
from dfml.runtime.loop import run
from dfml.topology.config import TopologyConfig
from dfml.topology.mixing import mixing_matrix


class LastStates(Callback):
    def on_run_start(self, algorithm, federation):
        self.federation = federation

    def on_run_end(self, history):
        self.states = self.federation.get_states()


def test_probe_measures_each_clients_distance_to_its_mixing_average():
    cfg = ExperimentConfig(
        run=RunConfig(algorithm="dfedavg", clients=6, rounds=3, seed=3),
        data=DataConfig(dataset="digits"),
        model=ModelConfig(model="mlp", hidden=8),
        topology=TopologyConfig(topology="ring", mixing="data-size"),
        algorithm=LocalSGDConfig(local_epochs=1, lr=0.1, batch_size=16),
    )
    prepared = prepare(cfg)
    fed = InProcessFederation(cfg.data, cfg.model, prepared.splits, cfg.run.seed, cfg.resources)
    probe, states = DisagreementProbe(ProbeConfig(probe_every=2), cfg.run.rounds), LastStates()
    history = run(DFedAvg(cfg.algorithm), fed, 3, [probe, states], topology=prepared.topology)

    # Rounds 1 (every 2nd) and 2 (the last) are probed; round 0 is not.
    assert probe.summary()["probe_rounds"] == [1, 2]
    assert "disagreement" not in history[0].metrics[0]
    # Independently: the dense W of the same graph times the final vectors.
    x = np.stack([states.states[i].params.numpy() for i in range(6)]).astype(np.float64)
    w = mixing_matrix(prepared.graph, "data-size", prepared.train_sizes)
    expected = np.linalg.norm(x - w @ x, axis=1)
    got = [history[-1].metrics[i]["disagreement"] for i in range(6)]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert expected.min() > 0  # a ring after 3 rounds has not reached consensus
    assert probe.summary()["probe_disagreement_mean"][-1] == pytest.approx(expected.mean(), 1e-5)
    assert probe.summary()["probe_disagreement_max"][-1] == pytest.approx(expected.max(), 1e-5)


@pytest.mark.parametrize("bad", [-1, True])
def test_probe_every_must_be_a_count(bad):
    with pytest.raises(ConfigError, match="probe_every must be an integer >= 0"):
        ProbeConfig(probe_every=bad)
