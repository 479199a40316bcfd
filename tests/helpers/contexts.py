"""In-process client contexts on digits, for tests that call client code directly."""

from __future__ import annotations

import torch

from dfml.actors.state import ClientContext, ClientData
from dfml.data.config import DataConfig, PartitionConfig
from dfml.data.partition import make_splits
from dfml.data.registry import load_dataset
from dfml.models.zoo import ModelConfig, build_model


def make_contexts(n: int = 3, seed: int = 0) -> tuple[list[ClientContext], list[torch.Tensor]]:
    dataset = load_dataset(DataConfig(dataset="digits"))
    splits = make_splits(dataset.y, n, PartitionConfig(partition="dirichlet", alpha=0.5), seed)
    model = build_model(ModelConfig(hidden=16), dataset.input_shape, dataset.num_classes)
    device = torch.device("cpu")
    ctxs = [
        ClientContext(i, model, ClientData.from_split(dataset, s, device), device, seed)
        for i, s in enumerate(splits)
    ]
    return ctxs, [model.init_flat(seed) for _ in ctxs]
