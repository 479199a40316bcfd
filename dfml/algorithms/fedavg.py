"""FedAvg (McMahan et al., 2017) with a stateless server.

Each round every client trains E epochs from the global model x; the server
step x ← Σ_k (n_k / n) x_k runs as a Ray task next to the data (the driver
only passes refs), and every client adopts x. This is DFedAvg on a star
whose hub holds no data: the same client code, a different message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import ray

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.aggregate import data_size_weights, weighted_average
from dfml.algorithms.base import Algorithm, LocalSGDConfig, Message, Metrics, SetupContext


@ray.remote(num_cpus=0)
def server_average(weights: Sequence[float], *vectors: np.ndarray) -> np.ndarray:
    """The server step as a Ray task (num_cpus=0: actors may hold every CPU)."""
    return weighted_average(vectors, weights)


class FedAvg(Algorithm):
    """Local SGD from the global model, then a data-size weighted average."""

    name = "fedavg"
    Config = LocalSGDConfig

    def setup(self, ctx: SetupContext) -> None:
        super().setup(ctx)
        self.server_weights = tuple(float(w) for w in data_size_weights(ctx.train_sizes))

    def round_messages(self, round_index: int, refs: Mapping[int, Any]) -> dict[int, Message]:
        return {cid: Message(round=round_index) for cid in refs}

    def after_round(self, round_index, federation, refs, metrics):
        ids = sorted(refs)
        global_ref = server_average.remote(
            [self.server_weights[c] for c in ids], *[refs[c] for c in ids]
        )
        adopt = Message(round=round_index, neighbors=(global_ref,), weights=(1.0,), self_weight=0.0)
        results = federation.step("adopt_global", dict.fromkeys(ids, adopt), publish=False)
        merged = {cid: {**metrics[cid], **results[cid].metrics} for cid in ids}
        upload_and_download = 2 * len(ids) * self.param_bytes
        return dict.fromkeys(ids, global_ref), merged, upload_and_download

    def client_step(self, ctx: ClientContext, state: ClientState, neighbors, msg: Message):
        state, metrics = self.local_update(ctx, state, state.params)
        return state.evolve(round=state.round + 1), metrics

    def adopt_global(
        self, ctx: ClientContext, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> tuple[ClientState, Metrics]:
        """x_k ← x (the server's average); report the global model's accuracy."""
        state = state.evolve(params=self.mix(state, neighbors, msg))
        return state, self.evaluate_client(ctx, state)
