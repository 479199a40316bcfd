"""Federated Reptile (Nichol, Achiam & Schulman, 2018, "On first-order
meta-learning algorithms", arXiv:1803.02999; federated as in Jiang et al., 2019).

Each client is a task. In round t, from the meta-parameters θ, τ times::

    B_1..B_k ~ D^M ∪ D^Q                       (k = ``inner_steps`` mini-batches)
    φ_0 = θ,  φ_j = φ_{j−1} − η ∇L(φ_{j−1}; B_j)     (η = ``inner_lr``)
    θ ← θ + ε (φ_k − θ)                         (ε = ``meta_lr``)

then θ is aggregated (``server``: θ ← Σ_k (n_k/n) θ_k, which for τ = 1 is
θ + ε (Σ_k (n_k/n) φ_k − θ); ``gossip``: θ_i ← Σ_j W_ij θ_j). Reptile needs no
support / query split, so it trains on all of a client's training data.

Knobs: ``inner_lr`` η, ``inner_steps`` k, ``meta_lr`` ε, ``local_steps`` τ,
``batch_size``, ``aggregation``. ``first_order`` has no effect (Reptile is
first order by construction). Pers.k fine-tuning: k SGD steps with η on D^M.

Default ε = 1: with a server average after every round, federated Reptile
with ε = 1 is FedAvg with τ·k local steps (the observation of Jiang et al.,
2019), and on digits (Dirichlet 0.3, 20 clients, 40 rounds) it beat ε = 0.5
clearly (Pers.5 accuracy 0.92–0.93 vs 0.84–0.86): with τ > 1 local Reptile steps a
smaller ε only shortens the round's move. Lower ε for the interpolating
meta-learner of the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dfml.actors.state import ClientContext
from dfml.algorithms.base import Metrics
from dfml.algorithms.fml import MetaAlgorithm, MetaConfig
from dfml.algorithms.meta.maml import model_loss, sample_batch
from dfml.algorithms.meta.reptile import reptile_step
from dfml.algorithms.privacy.accounting import DataSizes, Usage, meta_usage
from dfml.algorithms.privacy.dpsgd import Privatizer
from dfml.errors import ConfigError


@dataclass(frozen=True)
class ReptileConfig(MetaConfig):
    """Reptile's ε is ``meta_lr`` (in (0, 1]); k = ``inner_steps`` (>= 1)."""

    inner_lr: float = 0.2
    inner_steps: int = 3
    meta_lr: float = 1.0
    local_steps: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.meta_lr > 1.0:
            raise ConfigError(f"reptile's meta_lr ε must be in (0, 1], got {self.meta_lr}")
        if self.inner_steps < 1:
            raise ConfigError(f"reptile needs inner_steps >= 1, got {self.inner_steps}")


class Reptile(MetaAlgorithm):
    """k SGD steps, then θ ← θ + ε (φ_k − θ), τ times per round."""

    name = "reptile"
    Config = ReptileConfig

    def private_usage(self, sizes: DataSizes) -> Usage:
        """τ·k noised inner steps, batches of D^M ∪ D^Q."""
        cfg = self.config
        return meta_usage([sizes.train], cfg.batch_size, cfg.local_steps * cfg.inner_steps)

    def meta_update(
        self,
        ctx: ClientContext,
        vector: torch.Tensor,
        rng: np.random.Generator,
        privacy: Privatizer | None = None,
    ) -> tuple[torch.Tensor, Metrics]:
        cfg = self.config
        x, y = ctx.data.x_train, ctx.data.y_train
        batches = [sample_batch(x, y, cfg.batch_size, rng) for _ in range(cfg.inner_steps)]
        gradient = None if privacy is None else privacy.gradient_fn(ctx.model)
        theta, loss = reptile_step(
            model_loss(ctx.model), vector, batches, cfg.inner_lr, cfg.meta_lr, gradient
        )
        return theta, {"train_loss": loss}
