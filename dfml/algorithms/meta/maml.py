"""MAML, FOMAML, Meta-SGD and Per-FedAvg meta-gradients on a flat vector.

Notation (Finn et al., 2017; Li et al., 2017; Fallah et al., 2020): θ the
meta-parameters (the shared initialisation), L_S / L_Q the loss on a support
batch S ⊂ D^M and a query batch Q ⊂ D^Q, α the inner learning rate (a scalar,
or for Meta-SGD a vector of θ's size), K the number of inner steps.

Inner loop (the client's fast adaptation)::

    φ_0 = θ,   φ_{k+1} = φ_k − α ⊙ ∇L_S(φ_k),   k = 0..K−1

Meta-objective and meta-gradient::

    L_meta(θ) = L_Q(φ_K(θ))
    MAML    : ∇_θ L_meta = Π_k (I − α ∇²L_S(φ_k)) ∇L_Q(φ_K)      (through the unrolled loop)
    FOMAML  : the same with ∇L_S treated as a constant  →  ∇L_Q(φ_K)
    Meta-SGD: (θ, α) are meta-learned together; ∂L_meta/∂α flows through
              φ_K = θ − α ⊙ Σ_k ∇L_S(φ_k) (first order keeps that path: −Σ_k g_k ⊙ ∇L_Q)

Per-FedAvg (Fallah et al., 2020, Alg. 1) with independent batches D, D′, D″::

    θ̃ = θ − α ∇f(θ; D)
    FO: ĝ = ∇f(θ̃; D′)
    HF: ĝ = ∇f(θ̃; D′) − α d,   d ≈ ∇²f(θ; D″) ∇f(θ̃; D′)  by central differences
        d = [∇f(θ + δ_u u; D″) − ∇f(θ − δ_u u; D″)] / (2 δ_u),  u = ∇f(θ̃; D′),  δ_u = δ / ‖u‖

The second-order terms come from ``torch.func.grad`` composed with itself: the
inner gradient is part of the graph the outer ``grad`` differentiates; first
order is the same code with the inner gradient detached (a stop-gradient).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.func import grad, grad_and_value, jvp

from dfml.algorithms.privacy.dpsgd import GradientFn
from dfml.algorithms.sgd import cross_entropy
from dfml.models.flat import FlatModel

#: ℓ(params, x, y) → scalar loss.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
#: θ → φ_0, where the inner loop starts (Proto-MAML: θ with its head set from the support set).
InitFn = Callable[[torch.Tensor], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]
#: A scalar inner learning rate, or Meta-SGD's per-parameter vector α.
Rate = float | torch.Tensor


def model_loss(model: FlatModel) -> LossFn:
    """Cross-entropy of ``model`` as a function of its flat vector."""

    def loss(params: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return cross_entropy(model, params, x, y)

    return loss


def sample_batch(x: torch.Tensor, y: torch.Tensor, size: int, rng: np.random.Generator) -> Batch:
    """``min(size, n)`` distinct samples drawn with ``rng`` (the whole set if smaller)."""
    n = len(y)
    if n == 0:
        raise ValueError("cannot draw a batch from an empty set")
    idx = torch.from_numpy(np.sort(rng.choice(n, min(size, n), replace=False))).to(y.device)
    return x[idx], y[idx]


def inner_loop(
    loss_fn: LossFn,
    theta: torch.Tensor,
    support: Batch,
    lr: Rate,
    steps: int,
    *,
    first_order: bool = False,
) -> torch.Tensor:
    """φ_K after K steps φ_{k+1} = φ_k − lr ⊙ ∇L_S(φ_k) on one support batch.

    Differentiable in θ (and in a tensor ``lr``) when called under
    ``torch.func.grad``; ``first_order`` detaches each inner gradient.
    """
    grad_fn = grad(loss_fn)
    phi = theta
    for _ in range(steps):
        g = grad_fn(phi, *support)
        if first_order:
            g = g.detach()
        phi = phi - lr * g
    return phi


def maml_objective(
    loss_fn: LossFn,
    theta: torch.Tensor,
    support: Batch,
    query: Batch,
    lr: Rate,
    steps: int,
    *,
    first_order: bool = False,
    init: InitFn | None = None,
) -> torch.Tensor:
    """L_meta(θ) = L_Q(φ_K(θ)), the inner loop starting at φ_0 = ``init``(θ) (θ if none).

    ``init`` stays differentiated even with ``first_order``: only the inner
    gradients are constants, so the meta-gradient reaches θ through φ_0.
    """
    start = theta if init is None else init(theta)
    phi = inner_loop(loss_fn, start, support, lr, steps, first_order=first_order)
    return loss_fn(phi, *query)


def maml_gradient(
    loss_fn: LossFn,
    theta: torch.Tensor,
    support: Batch,
    query: Batch,
    lr: float,
    steps: int,
    *,
    first_order: bool = False,
    init: InitFn | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(∇_θ L_meta, L_meta): MAML's meta-gradient, or FOMAML's with ``first_order``;
    with ``init`` the inner loop starts at init(θ) (:func:`maml_objective`)."""

    def objective(t: torch.Tensor) -> torch.Tensor:
        return maml_objective(
            loss_fn, t, support, query, lr, steps, first_order=first_order, init=init
        )

    g, value = grad_and_value(objective)(theta.detach())
    return g, value.detach()


def first_order_gradient(
    gradient: GradientFn,
    theta: torch.Tensor,
    support: Batch,
    query: Batch,
    lr: float,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FOMAML's meta-gradient from a gradient oracle: (∇L_Q(φ_K), L_Q(φ_K)).

    φ_{k+1} = φ_k − lr ∇L_S(φ_k), and the meta-gradient is the query
    gradient at φ_K (the inner gradients are constants). Each of the K + 1
    gradients comes from ``gradient(θ, x, y) → (g, loss)``; with DP-SGD's
    (:meth:`~dfml.algorithms.privacy.dpsgd.Privatizer.gradient_fn`) each is
    clipped and noised. Equals :func:`maml_gradient` with ``first_order``
    when ``gradient`` is the plain one. Per-FedAvg's first-order step is
    this with K = 1 and α as ``lr``.
    """
    phi = theta.detach()
    for _ in range(steps):
        g, _ = gradient(phi, *support)
        phi = phi - lr * g
    g, value = gradient(phi, *query)
    return g, value.detach()


def split_meta_sgd(vector: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """θ‖α → (θ, α): Meta-SGD's published vector holds both halves."""
    if vector.ndim != 1 or vector.numel() % 2:
        raise ValueError(f"a Meta-SGD vector has even length 2d, got shape {tuple(vector.shape)}")
    d = vector.numel() // 2
    return vector[:d], vector[d:]


def meta_sgd_gradient(
    loss_fn: LossFn,
    theta_alpha: torch.Tensor,
    support: Batch,
    query: Batch,
    steps: int,
    *,
    first_order: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(∇_(θ‖α) L_Q(φ_K), L_Q(φ_K)) with the inner loop φ ← φ − α ⊙ ∇L_S(φ)."""

    def objective(v: torch.Tensor) -> torch.Tensor:
        theta, alpha = split_meta_sgd(v)
        return maml_objective(loss_fn, theta, support, query, alpha, steps, first_order=first_order)

    g, value = grad_and_value(objective)(theta_alpha.detach())
    return g, value.detach()


def finite_difference_hvp(
    loss_fn: LossFn, theta: torch.Tensor, batch: Batch, u: torch.Tensor, delta: float
) -> torch.Tensor:
    """∇²L(θ) u ≈ [∇L(θ + δ_u u) − ∇L(θ − δ_u u)] / (2 δ_u), δ_u = δ / ‖u‖."""
    norm = float(torch.linalg.vector_norm(u))
    if norm == 0.0:
        return torch.zeros_like(u)
    step = delta / norm
    grad_fn = grad(loss_fn)
    return (grad_fn(theta + step * u, *batch) - grad_fn(theta - step * u, *batch)) / (2 * step)


def exact_hvp(loss_fn: LossFn, theta: torch.Tensor, batch: Batch, u: torch.Tensor) -> torch.Tensor:
    """∇²L(θ) u by forward-over-reverse differentiation (no Hessian is formed)."""
    return jvp(lambda t: grad(loss_fn)(t, *batch), (theta,), (u,))[1]


def perfedavg_gradient(
    loss_fn: LossFn,
    theta: torch.Tensor,
    inner: Batch,
    outer: Batch,
    hessian: Batch | None,
    alpha: float,
    *,
    variant: str = "fo",
    delta: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-FedAvg's stochastic meta-gradient ĝ and the loss f(θ̃; D′).

    ``variant`` is ``"fo"`` (first order) or ``"hf"`` (Hessian-free: needs the
    third batch ``hessian`` = D″).
    """
    theta = theta.detach()
    adapted = theta - alpha * grad(loss_fn)(theta, *inner)
    u, value = grad_and_value(loss_fn)(adapted, *outer)
    if variant == "fo":
        return u, value.detach()
    if variant != "hf":
        raise ValueError(f"variant must be 'fo' or 'hf', got {variant!r}")
    if hessian is None:
        raise ValueError("the Hessian-free variant needs a third batch D''")
    return u - alpha * finite_difference_hvp(loss_fn, theta, hessian, u, delta), value.detach()
