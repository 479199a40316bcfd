"""Per-FedAvg (Fallah, Mokhtari & Ozdaglar, 2020, "Personalized federated
learning with theoretical guarantees: a model-agnostic meta-learning
approach", NeurIPS; arXiv:2002.07948), Algorithm 1.

Objective: F(θ) = Σ_i p_i f_i(θ − α ∇f_i(θ)) — a model that is good after
one local gradient step. Client i, from the model θ it starts the round
with, τ times::

    D ~ D^M, D′ ~ D^Q (independent batches)
    θ̃ = θ − α ∇f_i(θ; D)
    FO (``first_order``):  θ ← θ − β ∇f_i(θ̃; D′)
    HF (default)        :  D″ ~ D^M,
                           θ ← θ − β (I − α ∇²f_i(θ; D″)) ∇f_i(θ̃; D′)
                           with the Hessian-vector product by central differences
                           [∇f(θ + δ_u u; D″) − ∇f(θ − δ_u u; D″)] / 2δ_u, u = ∇f_i(θ̃; D′),
                           δ_u = ``hvp_delta`` / ‖u‖

then θ is aggregated (``server``: θ ← Σ_i p_i θ_i, the paper's server;
``gossip``: θ_i ← Σ_j W_ij θ_j). A client personalizes with the same single
step θ − α ∇f_i(θ) (Pers.k: k such steps on D^M batches).

Knobs: ``inner_lr`` α, ``meta_lr`` β, ``local_steps`` τ, ``first_order``
(FO vs HF), ``hvp_delta`` δ, ``batch_size``, ``aggregation``.
``inner_steps`` is 1 by definition of the objective.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dfml.actors.state import ClientContext
from dfml.algorithms.base import Metrics
from dfml.algorithms.fml import MetaAlgorithm, MetaConfig
from dfml.algorithms.meta.maml import (
    first_order_gradient,
    model_loss,
    perfedavg_gradient,
    sample_batch,
)
from dfml.algorithms.privacy.accounting import DataSizes, Usage
from dfml.algorithms.privacy.dpsgd import Privatizer
from dfml.errors import ConfigError


@dataclass(frozen=True)
class PerFedAvgConfig(MetaConfig):
    """MetaConfig with one inner step and the finite-difference δ of the HF variant.

    Attributes:
        hvp_delta: δ, the central-difference step of the HF Hessian-vector product.
    """

    hvp_delta: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.inner_steps != 1:
            raise ConfigError(
                f"perfedavg takes exactly one inner step, got inner_steps={self.inner_steps}"
            )
        if not (self.hvp_delta > 0 and math.isfinite(self.hvp_delta)):
            raise ConfigError(f"hvp_delta must be a positive number, got {self.hvp_delta}")


class PerFedAvg(MetaAlgorithm):
    """τ Per-FedAvg steps (FO or HF) from the round's model, then aggregation."""

    name = "perfedavg"
    Config = PerFedAvgConfig

    def private_usage(self, sizes: DataSizes) -> Usage:
        """FO: two noised gradients per step (θ̃ on D, the step on D′)."""
        if not self.config.first_order:
            raise ConfigError(
                "perfedavg's Hessian-free step differences gradients, which DP-SGD does not "
                "privatise: use --first-order true"
            )
        return self.first_order_usage(sizes, 2)

    def meta_update(
        self,
        ctx: ClientContext,
        vector: torch.Tensor,
        rng: np.random.Generator,
        privacy: Privatizer | None = None,
    ) -> tuple[torch.Tensor, Metrics]:
        cfg = self.config
        inner, outer = self.support_query(ctx, rng)
        if privacy is not None:  # FO: θ̃ = θ − α g̃(θ; D), step g̃(θ̃; D′)
            g, loss = first_order_gradient(
                privacy.gradient_fn(ctx.model), vector, inner, outer, cfg.inner_lr, 1
            )
            return vector - cfg.meta_lr * g, {"train_loss": float(loss)}
        hessian = (
            None
            if cfg.first_order
            else sample_batch(ctx.data.x_meta, ctx.data.y_meta, cfg.batch_size, rng)
        )
        g, loss = perfedavg_gradient(
            model_loss(ctx.model),
            vector,
            inner,
            outer,
            hessian,
            cfg.inner_lr,
            variant="fo" if cfg.first_order else "hf",
            delta=cfg.hvp_delta,
        )
        return vector - cfg.meta_lr * g, {"train_loss": float(loss)}
