"""GPU-fraction placement and cohort planning.

The shared test session declares 2 fake GPUs: Ray assigns GPU ids and
``CUDA_VISIBLE_DEVICES`` to ``num_gpus=0.25`` actors, CUDA is unavailable, so
actors must fall back to CPU.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import ray
import torch

from dfml.actors.config import ResourceConfig
from dfml.actors.federation import Federation
from dfml.actors.roster import Roster
from dfml.algorithms.base import LocalSGDConfig, Message
from dfml.algorithms.dfedavg import DFedAvg
from dfml.data.config import DataConfig, PartitionConfig
from dfml.data.partition import make_splits
from dfml.data.registry import load_dataset
from dfml.errors import ConfigError
from dfml.models.zoo import ModelConfig


def _federation(clients: int, resources: ResourceConfig) -> Federation:
    data = DataConfig(dataset="synthetic", synthetic_samples=400, synthetic_shape=(6,))
    splits = make_splits(load_dataset(data).y, clients, PartitionConfig(), 0)
    return Federation(data, ModelConfig(model="mlp", hidden=4), splits, 0, resources)


def test_quarter_gpu_actors_pack_four_per_gpu(ray_session):
    gpus = int(ray.cluster_resources()["GPU"])
    fed = _federation(
        4 * gpus,
        ResourceConfig(clients_per_actor=1, num_cpus_per_actor=0.25, num_gpus_per_actor=0.25),
    )
    try:
        fed.start(DFedAvg(LocalSGDConfig()))
        infos = fed.info()
    finally:
        fed.shutdown()
    assert len(infos) == 4 * gpus
    per_gpu = Counter(i["gpu_ids"][0] for i in infos)
    assert sorted(per_gpu.values()) == [4] * gpus, per_gpu
    assert all(
        len(i["gpu_ids"]) == 1 and i["cuda_visible_devices"] == i["gpu_ids"][0] for i in infos
    )
    # Fake GPUs (no CUDA) → CPU fallback; real GPUs → CUDA.
    assert {i["device"] for i in infos} == {"cuda" if torch.cuda.is_available() else "cpu"}


def test_gpu_request_without_gpus_fails_fast(monkeypatch, ray_session):
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    fed = _federation(2, ResourceConfig(num_gpus_per_actor=0.25))
    with pytest.raises(ConfigError, match="asks for GPUs but the Ray cluster has none"):
        fed.start(DFedAvg(LocalSGDConfig()))


def test_unplaceable_actors_time_out_with_a_clear_error(ray_session):
    fed = _federation(2, ResourceConfig(clients_per_actor=1, num_cpus_per_actor=3.0))
    fed.start_timeout_s = 3.0
    with pytest.raises(ConfigError, match="could not be placed"):
        fed.start(DFedAvg(LocalSGDConfig()))


def plan_cohorts(n, cfg, cluster_cpus, cluster_gpus):
    return Roster.plan(range(n), cfg, cluster_cpus, cluster_gpus).slots


def test_plan_cohorts():
    auto = ResourceConfig()
    assert plan_cohorts(10, auto, cluster_cpus=2, cluster_gpus=0) == [
        list(range(5)),
        list(range(5, 10)),
    ]
    assert len(plan_cohorts(3, auto, cluster_cpus=16, cluster_gpus=0)) == 3
    gpu = ResourceConfig(num_cpus_per_actor=0.5, num_gpus_per_actor=0.25)
    assert len(plan_cohorts(100, gpu, cluster_cpus=16, cluster_gpus=1)) == 4
    fixed = plan_cohorts(10, ResourceConfig(clients_per_actor=4), 2, 0)
    assert [len(c) for c in fixed] == [3, 4, 3]
    assert sorted(c for cohort in fixed for c in cohort) == list(range(10))
    assert len(plan_cohorts(10, ResourceConfig(max_actors=2, num_cpus_per_actor=0.1), 8, 0)) == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_gpus_per_actor": 1.5}, "num_gpus_per_actor"),
        ({"num_cpus_per_actor": 0}, "num_cpus_per_actor"),
        ({"clients_per_actor": 0}, "clients_per_actor"),
    ],
)
def test_bad_resources(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ResourceConfig(**kwargs)


def test_actors_map_the_drivers_dataset_from_the_object_store(ray_session):
    """Given the driver's dataset, actors read it from the object store (one
    ``ray.put``) instead of loading their own: clients trained on a copy whose
    features are all zero see zeros, which the config's own dataset has not."""
    data = DataConfig(dataset="synthetic", synthetic_samples=400, synthetic_shape=(6,))
    own = load_dataset(data)
    zeros = replace(own, x=np.zeros_like(own.x))
    splits = make_splits(own.y, 4, PartitionConfig(), 0)
    fed = Federation(
        data, ModelConfig(model="mlp", hidden=4), splits, 0, ResourceConfig(), dataset=zeros
    )
    try:
        fed.start(DFedAvg(LocalSGDConfig()))
        # Put once; released after start, since no reserved share can join.
        assert fed.dataset is None and fed._dataset_ref is None
        sums = ray.get(
            [
                a.__ray_call__.remote(
                    lambda self: [float(c.data.x_train.abs().sum()) for c in self.contexts.values()]
                )
                for a in fed.actors
            ]
        )
    finally:
        fed.shutdown()
    assert [s for part in sums for s in part] == [0.0] * 4
    assert float(np.abs(own.x).sum()) > 0


def test_a_joining_client_maps_the_drivers_dataset_too(ray_session):
    """With a reserved share the driver keeps the dataset's ref after start and
    hands it to a join: the joining client trains on the driver's copy too."""
    data = DataConfig(dataset="synthetic", synthetic_samples=400, synthetic_shape=(6,))
    own = load_dataset(data)
    zeros = replace(own, x=np.zeros_like(own.x))
    splits = make_splits(own.y, 4, PartitionConfig(), 0)
    fed = Federation(
        data,
        ModelConfig(model="mlp", hidden=4),
        splits,
        0,
        ResourceConfig(),
        initial=[0, 1, 2],
        dataset=zeros,
    )
    try:
        fed.start(DFedAvg(LocalSGDConfig()))
        assert fed._dataset_ref is not None  # client 3 may join
        fed.add_clients({3: Message(round=0)})
        k = fed.actor_of[3]
        total = ray.get(
            fed.actors[k].__ray_call__.remote(
                lambda self: float(self.contexts[3].data.x_train.abs().sum())
            )
        )
    finally:
        fed.shutdown()
    assert total == 0.0
