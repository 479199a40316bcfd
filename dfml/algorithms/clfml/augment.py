"""Phase 5 of CL-FML: samples for the missing labels 𝒯 ∖ ℒ_k of an engaged cluster.

A cluster C_ℓ that holds a label trains a small label-conditional generator
g_ℓ; its parameters (never raw samples) are shared with the clients of an
engaged cluster C_k that lack the label, and those clients generate labelled
samples {(x, y) : y ∈ 𝒯 ∖ ℒ_k} locally, then mix them up.

* :class:`ConditionalVAE` is g_ℓ: an MLP encoder q(z | x, y) and decoder
  p(x | z, y) on flattened inputs in [0, 1] (Bernoulli likelihood, so the
  reconstruction term is binary cross-entropy), with a diagonal Gaussian
  posterior and a standard normal prior. It is kept small (one hidden layer
  each way, latent 8) because it trains and samples on the clients. Its
  parameters form one flat float32 vector (:meth:`ConditionalVAE.flat_model`),
  like every model in the project, so it is sent and averaged the same way;
  :meth:`~ConditionalVAE.loss` and :meth:`~ConditionalVAE.sample` accept such
  a vector through ``params``.
* :func:`mixup_same_label` mixes generated samples with generated samples of
  the *same* label (λ ~ Beta(α, α)). Mixing within a label keeps every label
  hard and meaningful, so the classifier's loss is unchanged; mixing with
  real samples of *other* labels would need soft targets (λ y_a + (1−λ) y_b).

Labels here are class indices 0..C−1 (positions of the labels in the
universe ℒ), not raw label ids.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dfml.errors import ConfigError
from dfml.models.flat import FlatModel


def _positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


class ConditionalVAE(nn.Module):
    """Label-conditional VAE g_ℓ: x ∈ [0, 1]^D, y ∈ {0..C−1}, z ∈ ℝ^latent."""

    def __init__(self, input_dim: int, num_classes: int, latent: int = 8, hidden: int = 64) -> None:
        super().__init__()
        for name, value in (
            ("input_dim", input_dim),
            ("num_classes", num_classes),
            ("latent", latent),
            ("hidden", hidden),
        ):
            _positive_int(name, value)
        self.input_dim, self.num_classes, self.latent = input_dim, num_classes, latent
        self.encoder = nn.Sequential(
            nn.Linear(input_dim + num_classes, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent + num_classes, hidden), nn.ReLU(), nn.Linear(hidden, input_dim)
        )
        self._layout = FlatModel(self)

    @property
    def num_parameters(self) -> int:
        """Length of the flat parameter vector (what a cluster sends per generator)."""
        return self._layout.size

    def flat_model(self) -> FlatModel:
        """The flat-vector layout of this module (``size``, ``init_flat``, ``unflatten``)."""
        return self._layout

    def flat(self) -> torch.Tensor:
        """The module's current parameters as one flat float32 vector (a copy)."""
        return torch.cat([p.detach().reshape(-1) for p in self.parameters()]).clone()

    def _onehot(self, y: torch.Tensor) -> torch.Tensor:
        y = torch.as_tensor(y)
        if y.ndim != 1 or y.dtype.is_floating_point:
            raise ConfigError(
                f"labels must be a 1-D integer tensor, got {y.dtype} {tuple(y.shape)}"
            )
        bad = y[(y < 0) | (y >= self.num_classes)]
        if bad.numel():
            raise ConfigError(f"label index {int(bad[0])} outside 0..{self.num_classes - 1}")
        return F.one_hot(y.long(), self.num_classes).float()

    def _inputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.reshape(x.shape[0], -1).float()
        if flat.shape[1] != self.input_dim:
            raise ConfigError(f"inputs have {flat.shape[1]} features, expected {self.input_dim}")
        if len(y) != len(flat):
            raise ConfigError(f"got {len(flat)} inputs but {len(y)} labels")
        if flat.numel() and (float(flat.min()) < 0.0 or float(flat.max()) > 1.0):
            raise ConfigError("inputs must lie in [0, 1] (Bernoulli likelihood)")
        return flat, self._onehot(y).to(flat.device)

    def forward(
        self, x: torch.Tensor, y_onehot: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(decoder logits, μ, log σ²) for flat x, one-hot y and noise eps ~ N(0, I)."""
        stats = self.encoder(torch.cat([x, y_onehot], dim=1))
        mu, logvar = stats[:, : self.latent], stats[:, self.latent :]
        z = mu + torch.exp(0.5 * logvar) * eps
        return self.decoder(torch.cat([z, y_onehot], dim=1)), mu, logvar

    def loss(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator | None = None,
        params: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Negative ELBO per sample, averaged over the batch: BCE(x, x̂) summed + KL(q ‖ N(0, I)).

        With ``params`` (a flat vector) the module's own parameters are not
        used and gradients flow to ``params``.
        """
        flat, onehot = self._inputs(x, y)
        eps = torch.randn(
            flat.shape[0], self.latent, generator=generator, device=flat.device, dtype=flat.dtype
        )
        if params is None:
            logits, mu, logvar = self(flat, onehot, eps)
        else:
            logits, mu, logvar = functional_call(
                self, self._layout.unflatten(params), (flat, onehot, eps)
            )
        recon = F.binary_cross_entropy_with_logits(logits, flat, reduction="none").sum(dim=1)
        kl = -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
        return (recon + kl).mean()

    @torch.no_grad()
    def sample(
        self,
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
        params: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One generated x ∈ [0, 1]^D per label: the decoder's mean at z ~ N(0, I)."""
        device = next(self.parameters()).device if params is None else params.device
        onehot = self._onehot(torch.as_tensor(labels)).to(device)
        z = torch.randn(onehot.shape[0], self.latent, generator=generator, device=device)
        inputs = torch.cat([z, onehot], dim=1)
        if params is None:
            logits = self.decoder(inputs)
        else:
            named = self._layout.unflatten(params)
            decoder = {
                k.removeprefix("decoder."): v for k, v in named.items() if k.startswith("decoder.")
            }
            logits = functional_call(self.decoder, decoder, (inputs,))
        return torch.sigmoid(logits)


def mixup_same_label(
    x: torch.Tensor, y: torch.Tensor, alpha: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp within each label: x̃_i = λ_i x_i + (1 − λ_i) x_π(i), λ_i ~ Beta(α, α).

    π is a random permutation inside the label of i (a label's only sample
    mixes with itself), so y is returned unchanged and x̃ stays in the convex
    hull of the generated samples of its label. Labels are processed in
    sorted order, so one ``rng`` state gives one result.
    """
    if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"mixup alpha must be a positive number, got {alpha!r}")
    if len(x) != len(y):
        raise ConfigError(f"got {len(x)} samples but {len(y)} labels")
    mixed = x.clone()
    y_np = torch.as_tensor(y).cpu().numpy()
    for label in np.unique(y_np):
        idx = np.flatnonzero(y_np == label)
        partner = rng.permutation(idx)
        lam = torch.as_tensor(rng.beta(alpha, alpha, size=idx.size), dtype=x.dtype, device=x.device)
        lam = lam.reshape(-1, *([1] * (x.ndim - 1)))
        i, j = torch.as_tensor(idx, device=x.device), torch.as_tensor(partner, device=x.device)
        mixed[i] = lam * x[i] + (1.0 - lam) * x[j]
    return mixed, torch.as_tensor(y).clone()


def generate_missing(
    vae: ConditionalVAE,
    missing: list[int] | tuple[int, ...],
    per_label: int,
    alpha: float,
    generator: torch.Generator,
    rng: np.random.Generator,
    params: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_label`` mixed-up generated samples for each missing class index (sorted by label)."""
    _positive_int("per_label", per_label)
    if not missing:
        return torch.empty(0, vae.input_dim), torch.empty(0, dtype=torch.long)
    labels = torch.as_tensor(sorted(missing), dtype=torch.long).repeat_interleave(per_label)
    return mixup_same_label(vae.sample(labels, generator, params), labels, alpha, rng)
