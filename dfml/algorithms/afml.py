"""AFML: adaptive federated meta-learning ("Towards generalizable personalized
federated learning with adaptive local adaptation", Theorem 1 and Alg. 1).

The model is an encoder f with Gaussian weights θ ~ N(θ_u, θ_σ²), τ = (θ_u,
log θ_σ), and an unrestricted classifier head h with weights θ̂; the latent
code is Gaussian, p(z | x, θ) = N(f(x; θ), σ_z²). Any zoo model works: f is
everything but its last ``nn.Linear``, h is that layer (see
:mod:`dfml.algorithms.meta.afml`, which also fixes the flat layout
``[θ_u | log θ_σ | log σ_z | θ̂]``: one published vector per client).

ClientUpdate(j, θ, θ̂), τ = ``local_steps`` times per round::

    (x, y) ~ D = D^M,  (x′, y′) ~ D′ = D^Q,  ε_θ, ε_z ~ N(0, I)
    θ_t = θ_u + θ_σ ⊙ ε_θ                                    (reparameterised sample)
    z = f(x; θ_t) + σ_z ε_z,   z′ = f(x′; θ_t) + σ_z ε_z′
    φ_j = θ̂ − η ∇_θ̂ ℓ(h(z; θ̂), y)                          (``inner_steps`` steps, η = ``inner_lr``)
    L = ℓ(h(z′; φ_j), y′) + α (L_ENC + L_CONS) + β L_CMPX      (Theorem 1 / Eq. 4)
    g_c = ∇_θ̂ L,   g_g = ∇_(τ, log σ_z) L
    θ̂ ← θ̂ − η_1 g_c,   τ ← τ − η_2 g_g

with L_ENC = ℓ(h(z′; θ̂), y′), L_CONS = KL(N(f(x′; θ_t), σ_z²) ‖ N(0, I)) per
query sample, L_CMPX = KL(N(θ_u, θ_σ²) ‖ N(0, I)). The server (Alg. 1 lines
9-10) averages: ``server`` — θ̂ ← Σ_k p_k θ̂_k, τ ← Σ_k p_k τ_k (with τ = 1
local step exactly θ̂ − η_1 Σ_k p_k g_c^k, as in the paper up to p_k = 1/K);
``gossip`` — neighbours mix the whole vector with W. Alg. 1 samples θ_t
once per round at the server; here each client draws its own ε_θ (seeded by
experiment, client and round), the same in distribution.

Testing and Pers.k use the mean encoder θ_u and no latent noise; Pers.k
adapts only the head, φ ← φ − η ∇_φ ℓ(h(f(x; θ_u); φ), y) on D^M batches.

Knobs: ``inner_lr`` η, ``inner_steps``, ``first_order``, ``meta_lr`` η_1
(head), ``encoder_lr`` η_2 (τ and log σ_z), ``tradeoff_weight`` α,
``complexity_weight`` β, ``init_log_sigma`` (log θ_σ at round 0),
``init_latent_log_sigma`` (log σ_z at round 0), ``local_steps``,
``batch_size``, ``aggregation``. Metrics: ``train_loss`` (the meta-loss
term) and ``loss_enc``, ``loss_cons``, ``loss_cmpx``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import grad_and_value

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.base import Metrics
from dfml.algorithms.fml import MetaAlgorithm, MetaConfig, check_positive
from dfml.algorithms.meta.afml import AFMLLayout, AFMLNoise, afml_layout, afml_objective, head_loss
from dfml.algorithms.meta.maml import inner_loop, sample_batch
from dfml.algorithms.privacy.dpsgd import DPSGD, Privatizer
from dfml.errors import ConfigError


@dataclass(frozen=True)
class AFMLConfig(MetaConfig):
    """MetaConfig plus AFML's α, β, η_2 and the initial log σ of weights and latents.

    Attributes:
        encoder_lr: η_2, the step size of the Gaussian encoder (τ and log σ_z).
        tradeoff_weight: α, the weight of the encoder and consistency terms L_ENC + L_CONS.
        complexity_weight: β, the weight of the complexity term L_CMPX.
        init_log_sigma: log θ_σ of the encoder weights at round 0, in [-20, 2].
        init_latent_log_sigma: log σ_z of the latent code at round 0, in [-20, 2].
    """

    inner_lr: float = 0.2
    local_steps: int = 10
    encoder_lr: float = 0.2
    tradeoff_weight: float = 0.01
    complexity_weight: float = 1e-4
    init_log_sigma: float = -5.0
    init_latent_log_sigma: float = -2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("encoder_lr", self.encoder_lr)
        for name in ("tradeoff_weight", "complexity_weight"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a number >= 0, got {value}")
        for name in ("init_log_sigma", "init_latent_log_sigma"):
            value = getattr(self, name)
            if not -20.0 <= value <= 2.0:
                raise ConfigError(f"{name} must be in [-20, 2], got {value}")


class AFML(MetaAlgorithm):
    """Gaussian-weight encoder + head, meta-learned with AFML's trade-off terms."""

    name = "afml"
    Config = AFMLConfig

    def __init__(
        self, config: AFMLConfig, *, vectorize: bool = True, privacy: DPSGD | None = None
    ) -> None:
        super().__init__(config, vectorize=vectorize, privacy=privacy)
        self._layouts: dict[int, tuple[AFMLLayout, torch.Tensor]] = {}

    def layout(self, ctx: ClientContext) -> tuple[AFMLLayout, torch.Tensor]:
        """The encoder / head split of ``ctx.model`` and the per-entry outer step sizes."""
        key = id(ctx.model)
        if key not in self._layouts:
            try:
                layout = afml_layout(ctx.model)
            except ValueError as err:
                raise ConfigError(f"afml cannot use this model: {err}") from None
            cfg = self.config
            rates = torch.cat(
                [
                    torch.full((layout.size - layout.head_size,), cfg.encoder_lr),
                    torch.full((layout.head_size,), cfg.meta_lr),
                ]
            ).to(ctx.device)
            self._layouts[key] = (layout, rates)
        return self._layouts[key]

    def init_vector(self, ctx: ClientContext, base: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        layout, _ = self.layout(ctx)
        return layout.init_vector(base, cfg.init_log_sigma, cfg.init_latent_log_sigma)

    def model_vector(self, ctx: ClientContext, vector: torch.Tensor) -> torch.Tensor:
        return self.layout(ctx)[0].mean_model(vector)

    def meta_update(
        self,
        ctx: ClientContext,
        vector: torch.Tensor,
        rng: np.random.Generator,
        privacy: Privatizer | None = None,
    ) -> tuple[torch.Tensor, Metrics]:
        cfg = self.config
        layout, rates = self.layout(ctx)
        support, query = self.support_query(ctx, rng)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        z = layout.latent_dim
        noise = AFMLNoise(
            *(
                torch.randn(shape, generator=gen).to(ctx.device)
                for shape in ((layout.encoder_size,), (len(support[1]), z), (len(query[1]), z))
            )
        )

        def objective(v: torch.Tensor):
            return afml_objective(
                layout,
                v,
                support,
                query,
                noise,
                inner_lr=cfg.inner_lr,
                inner_steps=cfg.inner_steps,
                first_order=cfg.first_order,
                alpha=cfg.tradeoff_weight,
                beta=cfg.complexity_weight,
            )

        g, (_, terms) = grad_and_value(objective, has_aux=True)(vector.detach())
        metrics = {
            "train_loss": float(terms["meta"]),
            "loss_enc": float(terms["enc"]),
            "loss_cons": float(terms["cons"]),
            "loss_cmpx": float(terms["cmpx"]),
        }
        return vector - rates * g, metrics

    def adapt(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor, steps: int, seed: int
    ) -> torch.Tensor:
        """``steps`` head steps φ ← φ − η ∇_φ ℓ(h(f(x; θ_u); φ), y) on D^M batches."""
        if steps == 0 or len(ctx.data.y_meta) == 0:
            return params
        layout, _ = self.layout(ctx)
        mu, _, _, head = layout.split(params.detach())
        rng = np.random.default_rng(seed)
        loss = head_loss(layout)
        with torch.no_grad():
            features = layout.encoder(mu, ctx.data.x_meta)
        for _ in range(steps):
            z, y = sample_batch(features, ctx.data.y_meta, self.config.batch_size, rng)
            head = inner_loop(loss, head, (z, y), self.config.inner_lr, 1).detach()
        return layout.with_head(params.detach(), head)
