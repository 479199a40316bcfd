"""Reptile (Nichol, Achiam & Schulman, 2018): a first-order meta-update by interpolation.

From θ, run k plain SGD steps on mini-batches B_1..B_k of the task::

    φ_0 = θ,   φ_{j} = φ_{j−1} − η ∇L(φ_{j−1}; B_j),   j = 1..k

then move the meta-parameters part of the way towards the adapted ones::

    θ ← θ + ε (φ_k − θ)

ε = 1 is plain local SGD; with one task per client and a server average,
Σ_i p_i (θ + ε(φ_k^i − θ)) = θ + ε (Σ_i p_i φ_k^i − θ) is federated Reptile.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.func import grad_and_value

from dfml.algorithms.meta.maml import Batch, LossFn
from dfml.algorithms.privacy.dpsgd import GradientFn


def reptile_step(
    loss_fn: LossFn,
    theta: torch.Tensor,
    batches: Sequence[Batch],
    inner_lr: float,
    epsilon: float,
    gradient: GradientFn | None = None,
) -> tuple[torch.Tensor, float]:
    """θ + ε(φ_k − θ) after one SGD step per batch; also the mean inner loss.

    ``gradient(φ, x, y) → (g, loss)`` replaces ∇``loss_fn`` (DP-SGD's
    clipped, noised gradient: Reptile's inner steps are its only contact
    with the data, and the interpolation is post-processing).
    """
    if not batches:
        raise ValueError("Reptile needs at least one inner batch")
    step = grad_and_value(loss_fn) if gradient is None else gradient
    theta = theta.detach()
    phi, total = theta, 0.0
    for x, y in batches:
        g, loss = step(phi, x, y)
        phi = phi - inner_lr * g
        total += float(loss)
    return theta + epsilon * (phi - theta), total / len(batches)
