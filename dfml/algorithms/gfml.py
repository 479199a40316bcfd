"""G-FML: one global federated meta-model over all clients — the "group-based
FML" baseline of CL-FML (cluster-based, label-aware federated meta-learning;
slides in ``papers/``), i.e. CL-FML's meta-model learning with a single
cluster that holds every client.

Each client splits its data into a meta-training set D^M (may be label
imbalanced) and a label-balanced query set D^Q. In round t client i

1. aggregates its neighbours' meta-models,
   θ̃_i = Σ_{j ∈ N(i) ∪ {i}} w_ij θ_j with the topology's mixing matrix W
   (CL-FML: w_ij ∝ |D_j|; ``mixing: data-size`` uses |D^M_j ∪ D^Q_j|, and
   D^Q is a fixed fraction of each client's data, so the ratios agree up
   to rounding),
2. trains on D^M for E_M = ``local_epochs`` epochs of SGD,
   θ_i ← θ̃_i − η ∇ℛ_i(θ̃_i)   (η = ``lr``).

The meta-model is then fine-tuned on the client's label-balanced query set
D^Q: :meth:`GFML.adapt` (Pers.k) takes k SGD steps with η on D^Q batches.
``accuracy`` each round is the meta-model's own (before fine-tuning).
With ``aggregation: server`` step 1 is the server's data-size average.

Knobs: ``local_epochs`` E_M, ``lr`` η, ``batch_size``, ``aggregation``
(default ``gossip``: CL-FML is decentralized).
"""

from __future__ import annotations

import numpy as np
import torch

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.meta.maml import inner_loop, model_loss, sample_batch
from dfml.algorithms.server import FederatedSGDConfig, ServerOrGossip


class GFML(ServerOrGossip):
    """Decentralized SGD on D^M (the global meta-model); fine-tuning on D^Q."""

    name = "gfml"
    Config = FederatedSGDConfig

    def local_data(self, ctx: ClientContext) -> tuple[torch.Tensor, torch.Tensor]:
        """G-FML meta-trains on D^M only; D^Q is kept for fine-tuning."""
        return ctx.data.x_meta, ctx.data.y_meta

    def adapt(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor, steps: int, seed: int
    ) -> torch.Tensor:
        """k fine-tuning steps θ ← θ − η ∇ℛ(θ; B), B ~ D^Q (D^M if D^Q is empty)."""
        d = ctx.data
        x, y = (d.x_query, d.y_query) if len(d.y_query) else (d.x_meta, d.y_meta)
        if steps == 0 or len(y) == 0:
            return params
        rng = np.random.default_rng(seed)
        theta = params.detach()
        loss = model_loss(ctx.model)
        for _ in range(steps):
            batch = sample_batch(x, y, self.config.batch_size, rng)
            theta = inner_loop(loss, theta, batch, self.config.lr, 1).detach()
        return theta
