"""Real-GPU checks: run only where CUDA exists (skipped in CI)."""

from __future__ import annotations

import pytest
import torch

from dfml.actors.config import ResourceConfig
from dfml.algorithms.base import LocalSGDConfig
from dfml.algorithms.dfedavg import DFedAvg
from dfml.data.config import DataConfig, PartitionConfig
from dfml.experiment import ExperimentConfig, RunConfig, run_experiment
from dfml.models.zoo import ModelConfig
from dfml.topology.config import TopologyConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_quarter_gpu_actors_train_on_cuda(ray_session):
    cfg = ExperimentConfig(
        run=RunConfig(clients=8, rounds=2),
        data=DataConfig(dataset="synthetic", synthetic_samples=800),
        partition=PartitionConfig(),
        model=ModelConfig(model="cnn", hidden=16),
        topology=TopologyConfig(topology="ring"),
        resources=ResourceConfig(
            clients_per_actor=2, num_cpus_per_actor=0.5, num_gpus_per_actor=0.25
        ),
        algorithm=LocalSGDConfig(),
    )
    result = run_experiment(cfg, DFedAvg(cfg.algorithm))
    assert {a["device"] for a in result.actors} == {"cuda"}
    assert len(result.actors) == 4
    assert all(m["accuracy"] >= 0 for m in result.history[-1].metrics.values())
