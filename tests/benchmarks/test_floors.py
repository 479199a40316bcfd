"""Workload W's two floors compute dfml's math: on a tiny DFedAvg run both give
the vectors and accuracies of dfml's in-process run (so the benchmark's
ratios compare like with like)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dfml.actors.inprocess import InProcessFederation
from dfml.algorithms.base import LocalSGDConfig
from dfml.algorithms.dfedavg import DFedAvg
from dfml.data.config import DataConfig, PartitionConfig
from dfml.experiment import ExperimentConfig, RunConfig, prepare
from dfml.models.zoo import ModelConfig
from dfml.records import Callback
from dfml.runtime.loop import run
from dfml.topology.config import TopologyConfig

FLOORS = Path(__file__).resolve().parents[2] / "benchmarks" / "floors.py"
_spec = importlib.util.spec_from_file_location("floors", FLOORS)
floors = sys.modules["floors"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(floors)  # a script, not a package: loaded from its file


class Final(Callback):
    def on_run_start(self, algorithm, federation):
        self.federation = federation

    def on_run_end(self, history):
        self.states = self.federation.get_states()


@pytest.mark.parametrize("floor", ["plain_floor", "vectorised_floor"])
def test_floor_equals_dfml_in_process(floor):
    cfg = ExperimentConfig(
        run=RunConfig(algorithm="dfedavg", clients=5, rounds=3, seed=7),
        data=DataConfig(dataset="digits"),
        partition=PartitionConfig(partition="dirichlet", alpha=0.5),
        model=ModelConfig(model="mlp", hidden=16),
        topology=TopologyConfig(topology="ring", mixing="data-size"),
        algorithm=LocalSGDConfig(local_epochs=2, lr=0.1, batch_size=16),
    )
    prepared = prepare(cfg)
    fed = InProcessFederation(cfg.data, cfg.model, prepared.splits, cfg.run.seed, cfg.resources)
    final = Final()
    history = run(DFedAvg(cfg.algorithm), fed, 3, [final], topology=prepared.topology.copy())
    got = np.stack([final.states[i].params.numpy() for i in range(5)])
    dfml_acc = [history[-1].metrics[i]["accuracy"] for i in range(5)]

    problem = floors.problem_of(cfg, prepared)
    # Sizes differ between clients (Dirichlet), so the vectorised floor pads and masks.
    assert len({len(y) for _, y in problem.train}) > 1
    vectors, accs, times = getattr(floors, floor)(problem, 3, **_small_blocks(floor))
    assert vectors.dtype == torch.float32 and len(times) == 3
    np.testing.assert_allclose(vectors.numpy(), got, rtol=0, atol=2e-5)
    np.testing.assert_allclose(accs, dfml_acc, atol=1e-6)
    assert not np.allclose(got, problem.init.numpy())  # it trained


def _small_blocks(floor: str) -> dict[str, int]:
    """Blocks of two clients: the vectorised floor's block seams are crossed."""
    return {"block": 2} if floor == "vectorised_floor" else {}
