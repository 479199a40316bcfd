"""Real-GPU checks: run only where CUDA exists (skipped in CI).

``test_device.py`` checks the same enforcement against a fake CUDA device;
these tests check it against a real one: the cap, the report and the
out-of-memory message when one client outgrows its quarter of a GPU.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dfml.actors.client_actor import ClientStepError
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


def quarter_gpu_config() -> ExperimentConfig:
    return ExperimentConfig(
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


def test_quarter_gpu_actors_train_on_cuda_within_their_share(ray_session):
    cfg = quarter_gpu_config()
    result = run_experiment(cfg, DFedAvg(cfg.algorithm))
    assert {a["device"] for a in result.actors} == {"cuda"}
    assert len(result.actors) == 4
    # The same run on CPU computes the same model, up to float rounding on the GPU.
    cpu_cfg = dataclasses.replace(
        cfg, resources=dataclasses.replace(cfg.resources, num_gpus_per_actor=0.0)
    )
    cpu = run_experiment(cpu_cfg, DFedAvg(cpu_cfg.algorithm))
    assert {a["device"] for a in cpu.actors} == {"cpu"}
    for gpu_round, cpu_round in zip(result.history, cpu.history, strict=True):
        for key in ("train_loss", "test_loss"):
            assert gpu_round.mean(key) == pytest.approx(cpu_round.mean(key), rel=1e-3), key
    # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPU, so in the actor it is device 0.
    total = {
        str(i): torch.cuda.get_device_properties(i).total_memory
        for i in range(torch.cuda.device_count())
    }
    for actor in result.actors:
        assert actor["memory_share"] == 0.25 and actor["gpu_index"] == 0
        limit = total[actor["gpu_ids"][0]] / 4
        assert actor["memory_limit_bytes"] == pytest.approx(limit, rel=1e-6)
        assert 0 < actor["peak_memory_bytes"] < actor["memory_limit_bytes"]


def test_a_client_outgrowing_its_share_fails_naming_it(ray_session):
    class Oversized(DFedAvg):
        """Client 5 asks for 40 % of the GPU: fits the card, not a quarter of it."""

        def client_step(self, ctx, state, neighbors, msg):
            if ctx.client_id == 5:
                total = torch.cuda.get_device_properties(ctx.device).total_memory
                torch.empty(int(0.4 * total), dtype=torch.uint8, device=ctx.device)
            return super().client_step(ctx, state, neighbors, msg)

    cfg = quarter_gpu_config()
    with pytest.raises(ClientStepError) as caught:
        run_experiment(cfg, Oversized(cfg.algorithm))
    err = caught.value
    assert err.client_id == 5
    message = str(err)
    assert "client 5 exceeded its GPU memory share 0.25 of cuda:0" in message
    assert "tried to allocate" in message and "--num-gpus-per-actor" in message
