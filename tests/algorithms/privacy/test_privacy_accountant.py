"""The accountant of a run (in-process federation, no Ray): each client's ε per round
equals Opacus's RDP accountant stepped once per noised step the client took."""

from __future__ import annotations

import functools
import math

import pytest

from dfml.actors.inprocess import InProcessFederation
from dfml.algorithms.base import LocalSGDConfig
from dfml.algorithms.dfedavg import DFedAvg
from dfml.algorithms.privacy.accountant import PrivacyAccountant
from dfml.algorithms.privacy.accounting import DataSizes, sgd_usage
from dfml.algorithms.privacy.dpsgd import DPSGD
from dfml.data.config import DataConfig
from dfml.experiment import ExperimentConfig, RunConfig, prepare
from dfml.models.zoo import ModelConfig
from dfml.runtime.loop import Runtime
from dfml.topology.config import TopologyConfig

DELTA = 1e-5


@functools.cache
def opacus_epsilon(noise: float, rate: float, steps: int) -> float:
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    for _ in range(steps):
        accountant.step(noise_multiplier=noise, sample_rate=rate)
    return accountant.get_epsilon(DELTA) if steps else 0.0


def test_epsilon_per_client_and_round_is_the_rdp_accountants():
    cfg = ExperimentConfig(
        run=RunConfig(algorithm="dfedavg", clients=3, rounds=2, seed=1),
        data=DataConfig(dataset="digits"),
        model=ModelConfig(model="mlp", hidden=8),
        topology=TopologyConfig(topology="ring"),
        algorithm=LocalSGDConfig(local_epochs=1, lr=0.1, batch_size=64),
    )
    prepared = prepare(cfg)
    dp = DPSGD(clip=1.0, noise=1.2)
    algorithm = DFedAvg(cfg.algorithm, privacy=dp)
    usage = {
        c: algorithm.private_usage(DataSizes(len(s.meta_train), len(s.query)))
        for c, s in enumerate(prepared.splits)
    }
    accountant = PrivacyAccountant(dp, DELTA, usage)
    fed = InProcessFederation(cfg.data, cfg.model, prepared.splits, cfg.run.seed, cfg.resources)
    history = Runtime(
        algorithm, fed, prepared.topology, 2, callbacks=[accountant], clients_per_round=2, seed=1
    ).run()

    done = dict.fromkeys(range(3), 0)
    for record in history:
        for c in record.trained:
            done[c] += 1
        for c in range(3):
            n = len(prepared.splits[c].train)
            assert usage[c] == sgd_usage(n, 64, 1)
            expected = opacus_epsilon(1.2, min(1.0, 64 / n), done[c] * usage[c].steps)
            assert record.metrics[c]["epsilon"] == pytest.approx(expected, rel=1e-12)
    assert any(v < 2 for v in done.values())  # partial participation: some clients sat out
    summary = accountant.summary()
    assert summary["dp_epsilon"] == max(summary["dp_epsilon_per_client"].values())
    assert summary["dp_epsilon_per_client"][0] == history[-1].metrics[0]["epsilon"]
    assert summary["dp_noise"] == 1.2 and summary["dp_clip"] == 1.0
    assert 0 < summary["dp_epsilon"] < math.inf
