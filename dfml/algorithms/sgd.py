"""Local training and evaluation: pure functions of a flat parameter vector.

Mini-batch order comes from ``numpy.random.default_rng(seed)``, so a client's
training is a deterministic function of (parameters, data, seed) and can be
replayed exactly by a reference implementation or after a restore.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from dfml.algorithms.privacy.dpsgd import Privatizer, Regularizer
from dfml.models.flat import FlatModel

__all__ = ["Regularizer", "cross_entropy", "evaluate", "minibatches", "sgd_epochs"]


def minibatches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One epoch of shuffled mini-batch index arrays (the last may be short)."""
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def cross_entropy(
    model: FlatModel, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(flat, x), y)


def sgd_epochs(
    model: FlatModel,
    flat: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    seed: int,
    regularizer: Regularizer | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    privacy: Privatizer | None = None,
) -> tuple[torch.Tensor, float]:
    """``epochs`` passes of plain SGD, θ ← θ − η ∇ℓ(θ; batch).

    ``loss_fn(θ, x, y)`` replaces the model's cross-entropy (e.g. a task's
    loss over its own labels' logits). With ``privacy`` the step is DP-SGD's,
    θ ← θ − η g̃ (:meth:`~dfml.algorithms.privacy.dpsgd.Privatizer.gradient`:
    clipped per-sample gradients plus noise; the model's cross-entropy
    only). Returns the new vector and the mean training loss over all
    batches (NaN propagates, so callers can detect divergence).
    """
    if privacy is not None and loss_fn is not None:
        raise ValueError("DP-SGD trains on the model's cross-entropy: give privacy or loss_fn")

    rng = np.random.default_rng(seed)
    theta = flat.detach()
    total, count = 0.0, 0
    # Plain reverse-mode autograd per batch: the same gradient as
    # torch.func.grad, at a fraction of its per-call cost for small models.
    for _ in range(epochs):
        for idx in minibatches(len(y), batch_size, rng):
            ib = torch.from_numpy(idx).to(x.device)
            if privacy is not None:
                g, loss = privacy.gradient(model, theta, x[ib], y[ib], regularizer)
            else:
                with torch.enable_grad():
                    leaf = theta.requires_grad_(True)
                    if loss_fn is None:
                        loss = cross_entropy(model, leaf, x[ib], y[ib])
                    else:
                        loss = loss_fn(leaf, x[ib], y[ib])
                    if regularizer is not None:
                        loss = loss + regularizer(leaf)
                    (g,) = torch.autograd.grad(loss, leaf)
            theta = (theta.detach() - lr * g).detach()
            total += float(loss.detach())
            count += 1
    return theta, (total / count if count else float("nan"))


@torch.no_grad()
def evaluate(
    model: FlatModel, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``flat`` on (x, y)."""
    if len(y) == 0:
        return float("nan"), float("nan")
    was_training = model.module.training
    if model.mode_dependent:
        model.train(False)
    try:
        loss_sum, correct = 0.0, 0
        for start in range(0, len(y), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            logits = model(flat, xb)
            loss_sum += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
        return loss_sum / len(y), correct / len(y)
    finally:
        if model.mode_dependent:
            model.train(was_training)
