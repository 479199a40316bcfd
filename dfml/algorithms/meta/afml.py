"""AFML's model split, trade-off regularizers and client objective (pure functions).

AFML (adaptive federated meta-learning, "Towards generalizable personalized
federated learning with adaptive local adaptation", Theorem 1 and Alg. 1)
splits the network into an encoder f and a classifier head h:

* f has **Gaussian weights** θ ~ N(θ_u, diag θ_σ²), τ = (θ_u, log θ_σ),
  sampled by reparameterisation θ = θ_u + θ_σ ⊙ ε_θ, ε_θ ~ N(0, I);
* the latent code is Gaussian as in the deep variational information
  bottleneck: p(z | x, θ) = N(f(x; θ), diag σ_z²), sampled as
  z = f(x; θ) + σ_z ⊙ ε_z with a learned log σ_z (ρ);
* h (weights θ̂) is unrestricted and is the part the inner loop adapts.

Client objective for a support batch (x, y) ⊂ D and a query batch
(x′, y′) ⊂ D′, with one draw of (ε_θ, ε_z)::

    φ      = θ̂ − η ∇_θ̂ ℓ(h(z; θ̂), y)                 (K steps; Alg. 1 line "update the initial model")
    L_meta = ℓ(h(z′; φ), y′)                            meta-learning loss
    L_ENC  = ℓ(h(z′; θ̂), y′)                           −log q(y′ | θ, x′, ε): the θ → y′ path
    L_CONS = (1/|B′|) Σ_{x′} KL(N(f(x′; θ), σ_z²) ‖ N(0, I))
    L_CMPX = KL(N(θ_u, θ_σ²) ‖ N(0, I))
    L      = L_meta + α (L_ENC + L_CONS) + β L_CMPX

with KL(N(μ, σ²) ‖ N(0, 1)) = ½ (σ² + μ² − 1 − ln σ²), summed over
coordinates. The gradient of L w.r.t. (θ̂, τ, ρ) is g_c (head) and g_g
(encoder) of Alg. 1.

**Flat layout.** A client publishes one vector ``[θ_u | log θ_σ | ρ | θ̂]`` of
length 2E + Z + H, where E, H are the sizes of the base model's encoder
and head and Z its latent width. ``[θ_u | θ̂]`` is an ordinary parameter
vector of the base model: it is the deterministic model used for testing.
The split works for any model that is an ``nn.Sequential`` ending in an
``nn.Linear`` (all models of the zoo): the head is that last layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dfml.algorithms.meta.maml import Batch, inner_loop
from dfml.models.flat import FlatModel


def gaussian_kl(mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, σ²) ‖ N(0, I)) = Σ ½ (σ² + mean² − 1 − 2 log σ)."""
    return 0.5 * torch.sum(torch.exp(2 * log_sigma) + mean**2 - 1.0 - 2 * log_sigma)


def latent_kl(mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """(1/B) Σ_b KL(N(mean_b, σ²) ‖ N(0, I)) for a batch of means (B, Z) and one log σ (Z)."""
    per_sample = 0.5 * (torch.exp(2 * log_sigma) + mean**2 - 1.0 - 2 * log_sigma)
    return per_sample.sum() / mean.shape[0]


@dataclass(frozen=True)
class AFMLLayout:
    """The encoder f, the head h and where each piece sits in the flat vector."""

    encoder: FlatModel
    head: FlatModel
    encoder_size: int
    latent_dim: int
    head_size: int

    @property
    def size(self) -> int:
        return 2 * self.encoder_size + self.latent_dim + self.head_size

    def split(
        self, vector: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[θ_u | log θ_σ | ρ | θ̂]`` → (θ_u, log θ_σ, ρ, θ̂)."""
        if vector.shape != (self.size,):
            raise ValueError(f"an AFML vector has length {self.size}, got {tuple(vector.shape)}")
        e, z = self.encoder_size, self.latent_dim
        return vector[:e], vector[e : 2 * e], vector[2 * e : 2 * e + z], vector[2 * e + z :]

    def init_vector(
        self, base: torch.Tensor, log_sigma: float, latent_log_sigma: float
    ) -> torch.Tensor:
        """θ_u, θ̂ from a base-model vector; constant log θ_σ and ρ."""
        e = self.encoder_size
        return torch.cat(
            [
                base[:e],
                torch.full((e,), log_sigma, dtype=base.dtype, device=base.device),
                torch.full(
                    (self.latent_dim,), latent_log_sigma, dtype=base.dtype, device=base.device
                ),
                base[e:],
            ]
        )

    def mean_model(self, vector: torch.Tensor) -> torch.Tensor:
        """``[θ_u | θ̂]``: the base model with the encoder's mean weights."""
        mu, _, _, head = self.split(vector)
        return torch.cat([mu, head])

    def with_head(self, vector: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        """The vector with θ̂ replaced (personalised head)."""
        return torch.cat([vector[: self.size - self.head_size], head])


def afml_layout(model: FlatModel) -> AFMLLayout:
    """Split ``model`` into encoder (all but the last layer) and head (its last ``nn.Linear``)."""
    module = model.module
    children = list(module.children()) if isinstance(module, nn.Sequential) else []
    if not children or not isinstance(children[-1], nn.Linear):
        raise ValueError(
            f"AFML needs an nn.Sequential model ending in nn.Linear, got {type(module).__name__}"
        )
    encoder, head = FlatModel(nn.Sequential(*children[:-1])), FlatModel(children[-1])
    if encoder.size + head.size != model.size:
        raise ValueError("encoder and head do not partition the model's parameters")
    return AFMLLayout(encoder, head, encoder.size, children[-1].in_features, head.size)


def sample_encoder(
    layout: AFMLLayout, vector: torch.Tensor, eps: torch.Tensor | None
) -> torch.Tensor:
    """θ = θ_u + exp(log θ_σ) ⊙ ε_θ (θ_u itself when ``eps`` is None)."""
    mu, log_sigma, _, _ = layout.split(vector)
    return mu if eps is None else mu + torch.exp(log_sigma) * eps


def encode(
    layout: AFMLLayout,
    vector: torch.Tensor,
    x: torch.Tensor,
    weight_eps: torch.Tensor | None,
    latent_eps: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, f(x; θ)): a latent sample and its mean, for sampled (or mean) weights."""
    _, _, rho, _ = layout.split(vector)
    mean = layout.encoder(sample_encoder(layout, vector, weight_eps), x)
    z = mean if latent_eps is None else mean + torch.exp(rho) * latent_eps
    return z, mean


def head_loss(layout: AFMLLayout):
    """ℓ(h(z; θ̂), y) as a function of the head vector θ̂ (for the inner loop)."""

    def loss(head: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(layout.head(head, z), y)

    return loss


@dataclass(frozen=True)
class AFMLNoise:
    """One reparameterisation draw: ε_θ for the encoder, ε_z per support / query sample."""

    weights: torch.Tensor
    support: torch.Tensor
    query: torch.Tensor


def afml_objective(
    layout: AFMLLayout,
    vector: torch.Tensor,
    support: Batch,
    query: Batch,
    noise: AFMLNoise,
    *,
    inner_lr: float,
    inner_steps: int,
    first_order: bool,
    alpha: float,
    beta: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = L_meta + α (L_ENC + L_CONS) + β L_CMPX and its four terms."""
    mu, log_sigma, rho, head = layout.split(vector)
    (xs, ys), (xq, yq) = support, query
    z_s, _ = encode(layout, vector, xs, noise.weights, noise.support)
    z_q, mean_q = encode(layout, vector, xq, noise.weights, noise.query)
    loss_h = head_loss(layout)
    phi = inner_loop(loss_h, head, (z_s, ys), inner_lr, inner_steps, first_order=first_order)
    terms = {
        "meta": loss_h(phi, z_q, yq),
        "enc": loss_h(head, z_q, yq),
        "cons": latent_kl(mean_q, rho),
        "cmpx": gaussian_kl(mu, log_sigma),
    }
    total = terms["meta"] + alpha * (terms["enc"] + terms["cons"]) + beta * terms["cmpx"]
    return total, terms
