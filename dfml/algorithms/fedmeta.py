"""FedMeta (Chen, Luo, Dong, Li & He, 2018: "Federated meta-learning with fast
convergence and efficient communication", arXiv:1802.07876) with MAML or Meta-SGD.

Each client is a task: its support set is D^M, its query set D^Q. In round t
the clients receive the meta-parameters and, τ times::

    S ~ D^M, Q ~ D^Q
    φ   = θ − α ∇L_S(θ)                       (K inner steps; Meta-SGD: α ⊙ ∇L_S)
    g   = ∇_θ L_Q(φ)                           (MAML: through the inner loop;
                                                 FOMAML with ``first_order``)
    θ  ← θ − β g                               (Meta-SGD: (θ, α) ← (θ, α) − β ∇_(θ,α) L_Q(φ))

then θ is aggregated: ``server`` — the FedMeta server average
θ ← Σ_k (n_k/n) θ_k (with τ = 1 this is exactly the paper's
θ ← θ − β Σ_k (n_k/n) g_k); ``gossip`` — θ_i ← Σ_j W_ij θ_j over neighbours.

**Meta-SGD** meta-learns a per-parameter learning-rate vector α of θ's size
together with θ; both travel as ONE published vector θ‖α, so neighbours and
the server mix α too. α starts at ``inner_lr`` everywhere.

Knobs: ``inner_lr`` α (initial α for Meta-SGD), ``inner_steps`` K,
``first_order``, ``meta_lr`` β, ``local_steps`` τ, ``batch_size``,
``aggregation``. Pers.k fine-tuning uses the method's own inner step (α, or
α ⊙ for Meta-SGD).
"""

from __future__ import annotations

import numpy as np
import torch

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.base import Metrics
from dfml.algorithms.fml import MetaAlgorithm
from dfml.algorithms.meta.maml import (
    first_order_gradient,
    inner_loop,
    maml_gradient,
    meta_sgd_gradient,
    model_loss,
    sample_batch,
    split_meta_sgd,
)
from dfml.algorithms.privacy.accounting import DataSizes, Usage
from dfml.algorithms.privacy.dpsgd import Privatizer
from dfml.errors import ConfigError


class FedMetaMAML(MetaAlgorithm):
    """FedMeta with MAML (second order) or FOMAML (``first_order``)."""

    name = "fedmeta-maml"

    def private_usage(self, sizes: DataSizes) -> Usage:
        """FOMAML: K + 1 noised gradients per meta-update (K support, 1 query)."""
        if not self.config.first_order:
            raise ConfigError(
                "fedmeta-maml's second-order meta-gradient is not a sum of per-sample "
                "gradients: DP-SGD needs --first-order true"
            )
        return self.first_order_usage(sizes, self.config.inner_steps + 1)

    def meta_update(
        self,
        ctx: ClientContext,
        vector: torch.Tensor,
        rng: np.random.Generator,
        privacy: Privatizer | None = None,
    ) -> tuple[torch.Tensor, Metrics]:
        cfg = self.config
        support, query = self.support_query(ctx, rng)
        if privacy is not None:
            g, loss = first_order_gradient(
                privacy.gradient_fn(ctx.model),
                vector,
                support,
                query,
                cfg.inner_lr,
                cfg.inner_steps,
            )
            return vector - cfg.meta_lr * g, {"train_loss": float(loss)}
        g, loss = maml_gradient(
            model_loss(ctx.model),
            vector,
            support,
            query,
            cfg.inner_lr,
            cfg.inner_steps,
            first_order=cfg.first_order,
        )
        return vector - cfg.meta_lr * g, {"train_loss": float(loss)}


class FedMetaSGD(MetaAlgorithm):
    """FedMeta with Meta-SGD: the published vector is θ‖α."""

    name = "fedmeta-metasgd"

    def init_vector(self, ctx: ClientContext, base: torch.Tensor) -> torch.Tensor:
        return torch.cat([base, torch.full_like(base, self.config.inner_lr)])

    def model_vector(self, ctx: ClientContext, vector: torch.Tensor) -> torch.Tensor:
        return split_meta_sgd(vector)[0]

    def meta_update(
        self,
        ctx: ClientContext,
        vector: torch.Tensor,
        rng: np.random.Generator,
        privacy: Privatizer | None = None,
    ) -> tuple[torch.Tensor, Metrics]:
        cfg = self.config
        support, query = self.support_query(ctx, rng)
        g, loss = meta_sgd_gradient(
            model_loss(ctx.model),
            vector,
            support,
            query,
            cfg.inner_steps,
            first_order=cfg.first_order,
        )
        alpha = split_meta_sgd(vector)[1]
        return vector - cfg.meta_lr * g, {
            "train_loss": float(loss),
            "alpha_mean": float(alpha.mean()),
        }

    def adapt(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor, steps: int, seed: int
    ) -> torch.Tensor:
        """``steps`` Meta-SGD steps θ ← θ − α ⊙ ∇L(θ) on fresh D^M batches; α is kept."""
        if steps == 0 or len(ctx.data.y_meta) == 0:
            return params
        rng = np.random.default_rng(seed)
        theta, alpha = split_meta_sgd(params.detach())
        loss = model_loss(ctx.model)
        for _ in range(steps):
            batch = sample_batch(ctx.data.x_meta, ctx.data.y_meta, self.config.batch_size, rng)
            theta = inner_loop(loss, theta, batch, alpha, 1).detach()
        return torch.cat([theta, alpha])
