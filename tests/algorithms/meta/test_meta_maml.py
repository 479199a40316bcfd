"""MAML / FOMAML / Meta-SGD / Per-FedAvg / Reptile against plain autograd.

The references use leaf tensors, a hand-written forward pass and
``torch.autograd.grad(create_graph=True)``: no torch.func, no FlatModel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dfml.algorithms.meta.maml import (
    exact_hvp,
    finite_difference_hvp,
    maml_gradient,
    meta_sgd_gradient,
    model_loss,
    perfedavg_gradient,
    sample_batch,
    split_meta_sgd,
)
from dfml.algorithms.meta.reptile import reptile_step
from dfml.models.flat import FlatModel


def tiny() -> tuple[FlatModel, torch.Tensor]:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    model = FlatModel(module)
    return model, model.init_flat(0).double()


def batches(seed: int = 1, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    make = lambda: (  # noqa: E731
        torch.randn(n, 3, generator=g, dtype=torch.float64),
        torch.randint(0, 3, (n,), generator=g),
    )
    return make(), make(), make()


def ref_forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    w1, b1, w2, b2 = params
    return torch.tanh(x @ w1.T + b1) @ w2.T + b2


def ref_loss(params, batch) -> torch.Tensor:
    return nn.functional.cross_entropy(ref_forward(params, batch[0]), batch[1])


def unflat(flat: torch.Tensor) -> list[torch.Tensor]:
    shapes = [(4, 3), (4,), (3, 4), (3,)]
    out, i = [], 0
    for s in shapes:
        n = int(np.prod(s))
        out.append(flat[i : i + n].reshape(s).clone().requires_grad_(True))
        i += n
    return out


def flat_of(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def reference_maml(flat, support, query, lr, steps, lr_vector=None):
    """Unrolled inner loop with create_graph=True, then d L_Q / d θ (and d/dα)."""
    theta = unflat(flat)
    alpha = None if lr_vector is None else unflat(lr_vector)
    phi = theta
    for _ in range(steps):
        grads = torch.autograd.grad(ref_loss(phi, support), phi, create_graph=True)
        rates = alpha if alpha is not None else [lr] * len(phi)
        phi = [p - a * g for p, a, g in zip(phi, rates, grads, strict=True)]
    loss = ref_loss(phi, query)
    wrt = theta + (alpha or [])
    return flat_of(torch.autograd.grad(loss, wrt)), loss


@pytest.mark.parametrize("steps", [1, 3])
def test_maml_meta_gradient_equals_unrolled_autograd(steps):
    model, theta = tiny()
    support, query, _ = batches()
    got, loss = maml_gradient(model_loss(model), theta, support, query, lr=0.4, steps=steps)
    expected, expected_loss = reference_maml(theta, support, query, 0.4, steps)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    assert float(loss) == pytest.approx(float(expected_loss.detach()), abs=1e-12)


def test_fomaml_is_query_gradient_at_adapted_params_and_differs_from_maml():
    model, theta = tiny()
    support, query, _ = batches()
    fo, _ = maml_gradient(model_loss(model), theta, support, query, 0.4, 2, first_order=True)
    so, _ = maml_gradient(model_loss(model), theta, support, query, 0.4, 2, first_order=False)
    # φ_2 by two explicit SGD steps with no graph, then ∇L_Q(φ_2).
    phi = unflat(theta)
    for _ in range(2):
        grads = torch.autograd.grad(ref_loss(phi, support), phi)
        phi = [(p - 0.4 * g).detach().requires_grad_(True) for p, g in zip(phi, grads, strict=True)]
    expected = flat_of(torch.autograd.grad(ref_loss(phi, query), phi))
    torch.testing.assert_close(fo, expected, rtol=1e-9, atol=1e-12)
    # The dropped term Π(I − α∇²L_S) is not the identity on this curved model.
    assert float(torch.linalg.vector_norm(so - fo)) > 1e-3 * float(torch.linalg.vector_norm(so))
    # With zero inner steps there is nothing to drop: both are ∇L_Q(θ).
    fo0, _ = maml_gradient(model_loss(model), theta, support, query, 0.4, 0, first_order=True)
    so0, _ = maml_gradient(model_loss(model), theta, support, query, 0.4, 0)
    torch.testing.assert_close(fo0, so0)


def test_meta_sgd_gradient_reaches_alpha_and_alpha_changes():
    model, theta = tiny()
    support, query, _ = batches()
    alpha = torch.full_like(theta, 0.3) + 0.05 * torch.arange(theta.numel()) / theta.numel()
    vector = torch.cat([theta, alpha])
    got, _ = meta_sgd_gradient(model_loss(model), vector, support, query, steps=2)
    expected, _ = reference_maml(theta, support, query, None, 2, lr_vector=alpha)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    g_theta, g_alpha = split_meta_sgd(got)
    assert g_alpha.abs().max() > 0 and g_theta.abs().max() > 0
    # One step: ∂L_Q/∂α = −∇L_S(θ) ⊙ ∇L_Q(φ) exactly (first order keeps this path).
    fo, _ = meta_sgd_gradient(model_loss(model), vector, support, query, steps=1, first_order=True)
    t = unflat(theta)
    g_s = flat_of(torch.autograd.grad(ref_loss(t, support), t))
    phi = unflat(theta - alpha * g_s)
    g_q = flat_of(torch.autograd.grad(ref_loss(phi, query), phi))
    torch.testing.assert_close(split_meta_sgd(fo)[1], -g_s * g_q, rtol=1e-9, atol=1e-12)
    # A meta-step moves α and lowers the meta-loss for a small step.
    new = vector - 0.05 * got
    assert not torch.equal(split_meta_sgd(new)[1], alpha)
    _, before = meta_sgd_gradient(model_loss(model), vector, support, query, steps=2)
    _, after = meta_sgd_gradient(model_loss(model), new, support, query, steps=2)
    assert after < before


def test_reptile_step_equals_its_formula():
    model, theta = tiny()
    b1, b2, b3 = batches()
    got, loss = reptile_step(model_loss(model), theta, [b1, b2, b3], inner_lr=0.2, epsilon=0.3)
    module = model.module
    torch.nn.utils.vector_to_parameters(theta.clone(), module.parameters())
    opt = torch.optim.SGD(module.parameters(), lr=0.2)
    losses = []
    for x, y in (b1, b2, b3):
        opt.zero_grad()
        ell = nn.functional.cross_entropy(module(x), y)
        ell.backward()
        opt.step()
        losses.append(float(ell.detach()))
    phi = torch.nn.utils.parameters_to_vector(module.parameters()).detach()
    torch.testing.assert_close(got, theta + 0.3 * (phi - theta), rtol=1e-9, atol=1e-12)
    assert loss == pytest.approx(np.mean(losses), abs=1e-12)
    # ε = 1 is plain SGD.
    plain, _ = reptile_step(model_loss(model), theta, [b1, b2, b3], inner_lr=0.2, epsilon=1.0)
    torch.testing.assert_close(plain, phi, rtol=1e-9, atol=1e-12)


def test_perfedavg_first_order_and_hessian_free():
    model, theta = tiny()
    d, d1, d2 = batches(seed=5)
    loss = model_loss(model)
    fo, _ = perfedavg_gradient(loss, theta, d, d1, None, alpha=0.3, variant="fo")
    t = unflat(theta)
    adapted = unflat(theta - 0.3 * flat_of(torch.autograd.grad(ref_loss(t, d), t)))
    u = flat_of(torch.autograd.grad(ref_loss(adapted, d1), adapted))
    torch.testing.assert_close(fo, u, rtol=1e-9, atol=1e-12)
    # Exact Hessian-vector product by double backward on the reference model.
    t = unflat(theta)
    g = torch.autograd.grad(ref_loss(t, d2), t, create_graph=True)
    hu = flat_of(torch.autograd.grad(flat_of(g) @ u, t))
    torch.testing.assert_close(exact_hvp(loss, theta, d2, u), hu, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(
        finite_difference_hvp(loss, theta, d2, u, delta=1e-4), hu, rtol=1e-5, atol=1e-7
    )
    hf, _ = perfedavg_gradient(loss, theta, d, d1, d2, alpha=0.3, variant="hf", delta=1e-4)
    torch.testing.assert_close(hf, u - 0.3 * hu, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="third batch"):
        perfedavg_gradient(loss, theta, d, d1, None, alpha=0.3, variant="hf")


def test_sample_batch_draws_distinct_samples_deterministically():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    a = sample_batch(x, y, 4, np.random.default_rng(3))
    b = sample_batch(x, y, 4, np.random.default_rng(3))
    assert torch.equal(a[1], b[1]) and len(set(a[1].tolist())) == 4
    assert torch.equal(a[0][:, 0].long(), a[1])
    assert len(sample_batch(x, y, 50, np.random.default_rng(0))[1]) == 10
