"""DP-SGD's gradient against brute force, and its limits against plain SGD.

The references share no code with dfml's DP path: per-sample gradients come
from an ``nn.Module`` and ``backward()`` one sample at a time, the noise
from a fresh ``torch.Generator`` with the documented seed.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from helpers.contexts import make_contexts
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from dfml.actors.state import ClientState
from dfml.algorithms.base import LocalSGDConfig
from dfml.algorithms.batched import batched_sgd_epochs
from dfml.algorithms.dfedavg import DFedAvg
from dfml.algorithms.fedprox import proximal_term
from dfml.algorithms.meta.maml import first_order_gradient
from dfml.algorithms.privacy.dpsgd import (
    DPSGD,
    NOISE_SALT,
    clipped_sum,
    per_sample_gradients,
)
from dfml.algorithms.sgd import sgd_epochs
from dfml.models.zoo import ModelConfig, build_model

_CTXS, _INITS = make_contexts(12)  # small clients keep each test well under a second
CTXS, INITS = _CTXS[:3], _INITS[:3]


def brute_force_clipped_sum(module, theta, x, y, clip):
    """Σ_i clip(g_i) with g_i from backward() on one sample at a time."""
    m = copy.deepcopy(module)
    vector_to_parameters(theta.clone(), m.parameters())
    total = torch.zeros_like(theta, dtype=torch.float64)
    for i in range(len(y)):
        m.zero_grad()
        torch.nn.functional.cross_entropy(m(x[i : i + 1]), y[i : i + 1]).backward()
        g = parameters_to_vector(p.grad for p in m.parameters()).double()
        total += g * min(1.0, clip / (float(g.norm()) + 1e-6))
    return total


def test_clipped_per_sample_gradients_equal_a_per_sample_loop():
    ctx, theta = CTXS[0], INITS[0]
    x, y = ctx.data.x_train[:24], ctx.data.y_train[:24]
    grads, losses = per_sample_gradients(ctx.model, theta, x, y)
    norms = grads.norm(dim=1)
    clip = float(norms.median())  # about half the samples are clipped
    assert (norms > clip).any() and (norms < clip).any()
    expected = brute_force_clipped_sum(ctx.model.module, theta, x, y, clip)
    np.testing.assert_allclose(clipped_sum(grads, clip).double(), expected, rtol=1e-5, atol=1e-7)
    plain = torch.nn.functional.cross_entropy(ctx.model(theta, x), y, reduction="none")
    np.testing.assert_allclose(losses, plain.detach(), rtol=1e-6)


@pytest.mark.parametrize("kind", ["cnn"])
def test_per_sample_gradients_of_conv_models_equal_one_backward_per_sample(kind):
    """vmapped over per-sample weights, a convolution is a grouped one: still exact."""
    ctx = CTXS[0]
    model = build_model(ModelConfig(model=kind, hidden=(4,)), (1, 8, 8), 10)
    theta = model.init_flat(0)
    x, y = ctx.data.x_train[:5], ctx.data.y_train[:5]
    grads, _ = per_sample_gradients(model, theta, x, y)
    for i in range(5):
        leaf = theta.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(leaf, x[i : i + 1]), y[i : i + 1])
        (expected,) = torch.autograd.grad(loss, leaf)
        np.testing.assert_allclose(grads[i], expected, rtol=1e-4, atol=1e-5)


def test_the_private_gradient_is_the_clipped_mean_plus_seeded_noise():
    ctx, theta = CTXS[1], INITS[1]
    x, y = ctx.data.x_train[:10], ctx.data.y_train[:10]
    dp = DPSGD(clip=0.5, noise=1.3)
    got, _ = dp.start(seed=42).gradient(ctx.model, theta, x, y)
    z = torch.randn(len(theta), generator=torch.Generator().manual_seed(42)).double()
    expected = (brute_force_clipped_sum(ctx.model.module, theta, x, y, 0.5) + 1.3 * 0.5 * z) / 10
    np.testing.assert_allclose(got.double(), expected, rtol=1e-5, atol=1e-7)
    again, _ = dp.start(seed=42).gradient(ctx.model, theta, x, y)
    other, _ = dp.start(seed=43).gradient(ctx.model, theta, x, y)
    assert torch.equal(got, again) and not torch.allclose(got, other)


def local_sgd(ctx, theta, privacy=None, regularizer=None):
    return sgd_epochs(
        ctx.model,
        theta,
        ctx.data.x_train,
        ctx.data.y_train,
        lr=0.1,
        epochs=1,
        batch_size=16,
        seed=7,
        regularizer=regularizer,
        privacy=privacy,
    )


@pytest.mark.parametrize("prox", [False, True])
def test_infinite_clip_and_no_noise_is_plain_sgd_bit_for_bit(prox):
    ctx, theta = CTXS[0], INITS[0]
    reg = proximal_term(theta, 0.3) if prox else None
    plain, plain_loss = local_sgd(ctx, theta, regularizer=reg)
    private, private_loss = local_sgd(ctx, theta, DPSGD(math.inf, 0.0).start(1), reg)
    assert torch.equal(plain, private) and plain_loss == private_loss


def test_dfedavg_with_infinite_clip_and_no_noise_is_non_private_dfedavg_bit_for_bit():
    """Through the algorithm's own client step, per client and vectorised."""
    cfg = LocalSGDConfig(local_epochs=1, lr=0.1, batch_size=16)
    plain = DFedAvg(cfg)
    private = DFedAvg(cfg, privacy=DPSGD(math.inf, 0.0))
    states = [ClientState(i, theta) for i, theta in enumerate(INITS)]
    for vectorize in (False, True):
        plain.vectorize = private.vectorize = vectorize
        if vectorize:
            a = plain.batched_local_update(CTXS, states, INITS)[0]
            b = private.batched_local_update(CTXS, states, INITS)[0]
        else:
            a = [
                plain.local_update(c, s, t)[0] for c, s, t in zip(CTXS, states, INITS, strict=True)
            ]
            b = [
                private.local_update(c, s, t)[0]
                for c, s, t in zip(CTXS, states, INITS, strict=True)
            ]
        for sa, sb in zip(a, b, strict=True):
            assert torch.equal(sa.params, sb.params)


def test_a_clip_no_gradient_reaches_and_no_noise_is_plain_sgd_up_to_rounding():
    """The per-sample path itself (finite C) sums to the batch gradient."""
    ctx, theta = CTXS[2], INITS[2]
    plain, _ = local_sgd(ctx, theta)
    private, _ = local_sgd(ctx, theta, DPSGD(1e9, 0.0).start(1))
    np.testing.assert_allclose(private, plain, rtol=1e-5, atol=1e-6)


def test_vectorised_dp_sgd_equals_the_per_client_loop():
    dp = DPSGD(clip=1.0, noise=0.8)
    seeds, noise_seeds = [11, 12, 13], [21, 22, 23]
    xs = [c.data.x_train for c in CTXS]
    ys = [c.data.y_train for c in CTXS]
    thetas, losses = batched_sgd_epochs(
        CTXS[0].model,
        torch.stack(INITS),
        xs,
        ys,
        lr=0.1,
        epochs=1,
        batch_size=16,
        seeds=seeds,
        privacy=dp,
        noise_seeds=noise_seeds,
    )
    for c, ctx in enumerate(CTXS):
        theta, loss = sgd_epochs(
            ctx.model,
            INITS[c],
            xs[c],
            ys[c],
            lr=0.1,
            epochs=1,
            batch_size=16,
            seed=seeds[c],
            privacy=dp.start(noise_seeds[c]),
        )
        np.testing.assert_allclose(thetas[c], theta, rtol=1e-5, atol=1e-6)
        assert float(losses[c]) == pytest.approx(loss, rel=1e-5)


def test_the_noise_seed_is_the_clients_round_seed_with_the_noise_salt():
    ctx, state = CTXS[0], ClientState(0, INITS[0], round=4)
    algorithm = DFedAvg(LocalSGDConfig(), privacy=DPSGD(1.0, 1.0))
    z = algorithm.privatizer(ctx, state).noise(5, torch.device("cpu"))
    seed = int(np.random.SeedSequence([ctx.seed, 0, 4, NOISE_SALT]).generate_state(1)[0])
    assert torch.equal(z, torch.randn(5, generator=torch.Generator().manual_seed(seed)))
    assert DFedAvg(LocalSGDConfig()).privatizer(ctx, state) is None


def test_first_order_gradient_is_fomaml():
    """φ = θ − α∇L_S(θ) twice, then ∇L_Q(φ): by hand with autograd."""
    ctx, theta = CTXS[0], INITS[0]
    d = ctx.data
    support, query = (d.x_meta[:16], d.y_meta[:16]), (d.x_query[:8], d.y_query[:8])

    def grad_at(params, x, y):
        leaf = params.detach().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(ctx.model(leaf, x), y)
        return torch.autograd.grad(loss, leaf)[0], loss.detach()

    phi = theta
    for _ in range(2):
        phi = phi - 0.1 * grad_at(phi, *support)[0]
    expected, value = grad_at(phi, *query)
    plain = DPSGD(math.inf, 0.0).start(0).gradient_fn(ctx.model)
    got, got_value = first_order_gradient(plain, theta, support, query, 0.1, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert float(got_value) == pytest.approx(float(value), rel=1e-6)


@pytest.mark.parametrize(
    ("clip", "noise", "message"),
    [
        (0.0, 0.0, "C must be > 0"),
        (-1.0, 0.0, "C must be > 0"),
        (1.0, -0.1, "σ must be a finite number >= 0"),
        (math.inf, 1.0, "needs a finite clipping bound"),
    ],
)
def test_settings_outside_their_range_are_refused(clip, noise, message):
    with pytest.raises(ValueError, match=message):
        DPSGD(clip, noise)
