"""The generic client actor: hosts a cohort of logical clients.

A plain class (testable without Ray) plus one ``ray.remote`` wrapper. The
actor never knows which algorithm it runs: it is handed an
:class:`~dfml.algorithms.base.Algorithm` once and then asked, each round, to
run one of its client-side methods on the clients it hosts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ray
import torch

from dfml.actors.state import ClientContext, ClientData, ClientState
from dfml.data.config import DataConfig
from dfml.data.partition import ClientSplit
from dfml.models.zoo import ModelConfig, build_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CohortSpec:
    """Everything an actor needs to build its clients (indices, not data)."""

    data: DataConfig
    model: ModelConfig
    splits: Mapping[int, ClientSplit]
    seed: int
    num_threads: int = 1


def pick_device() -> torch.device:
    """CUDA when Ray gave this worker a GPU and CUDA works, CPU otherwise."""
    gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []
    if gpu_ids and torch.cuda.is_available():
        return torch.device("cuda")
    if gpu_ids:
        log.warning("Ray assigned GPU %s but CUDA is unavailable here; using CPU", gpu_ids)
    return torch.device("cpu")


class RayStore:
    """Parameters travel through Ray's object store (the normal case)."""

    put = staticmethod(ray.put)

    @staticmethod
    def get(refs: list[Any]) -> list[Any]:
        return ray.get(refs)


class LocalStore:
    """In-process "store" for the single-process runner: refs are the arrays."""

    @staticmethod
    def put(value: Any) -> Any:
        return value.copy()

    @staticmethod
    def get(refs: list[Any]) -> list[Any]:
        return list(refs)


class ClientActor:
    """Holds client states and data; runs algorithm methods on them."""

    def __init__(self, spec: CohortSpec, algorithm: Any, store: Any = RayStore) -> None:
        from dfml.data.registry import load_dataset

        torch.set_num_threads(max(1, spec.num_threads))
        self.store = store
        self.device = pick_device()
        dataset = load_dataset(spec.data)
        self.algorithm = algorithm
        self.model = build_model(spec.model, dataset.input_shape, dataset.num_classes).to(
            self.device
        )
        self.model.train(True)
        init = self.model.init_flat(spec.seed).to(self.device)
        self.contexts: dict[int, ClientContext] = {}
        self.states: dict[int, ClientState] = {}
        for cid, split in spec.splits.items():
            ctx = ClientContext(
                cid,
                self.model,
                ClientData.from_split(dataset, split, self.device),
                self.device,
                spec.seed,
            )
            self.contexts[cid] = ctx
            self.states[cid] = algorithm.init_state(ctx, init.clone())

    def _publish(self, state: ClientState) -> Any:
        return self.store.put(state.params.detach().cpu().numpy())

    def publish_all(self) -> dict[int, Any]:
        return {cid: self._publish(s) for cid, s in self.states.items()}

    def step(
        self, method: str, messages: Mapping[int, Any], publish: bool = True
    ) -> dict[int, Any]:
        """Run ``algorithm.<method>`` for each messaged client, in client order.

        All neighbour vectors of the cohort are fetched with one ``get``: one
        round trip per actor and round instead of one per client.
        """
        from dfml.algorithms.base import StepResult

        fn = getattr(self.algorithm, method)
        order = sorted(messages)
        wanted = [ref for cid in order for ref in messages[cid].neighbors]
        fetched = iter(self.store.get(wanted) if wanted else [])
        out = {}
        for cid in order:
            msg = messages[cid]
            neighbors = [next(fetched) for _ in msg.neighbors]
            state, metrics = fn(self.contexts[cid], self.states[cid], neighbors, msg)
            self.states[cid] = state
            out[cid] = StepResult(self._publish(state) if publish else None, metrics)
        return out

    def call(self, method: str, client_ids: list[int], *args: Any) -> dict[int, Any]:
        """Run a read-only ``algorithm.<method>(ctx, state, *args)`` per client."""
        fn = getattr(self.algorithm, method)
        return {cid: fn(self.contexts[cid], self.states[cid], *args) for cid in sorted(client_ids)}

    def get_state(self, client_id: int) -> ClientState:
        return self.states[client_id].to_host()

    def set_state(self, state: ClientState) -> None:
        self.states[state.client_id] = state.evolve(
            params=state.params.to(self.device),
            extras={k: v.to(self.device) for k, v in state.extras.items()},
        )

    def info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id() if ray.is_initialized() else None,
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else [],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "device": str(self.device),
            "clients": sorted(self.states),
            "train_sizes": {cid: c.data.num_train for cid, c in self.contexts.items()},
        }


RemoteClientActor = ray.remote(ClientActor)
