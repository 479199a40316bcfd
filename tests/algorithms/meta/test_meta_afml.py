"""AFML's KL terms against closed forms; layout, sampling and objective wiring."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from dfml.algorithms.meta.afml import (
    AFMLNoise,
    afml_layout,
    afml_objective,
    encode,
    gaussian_kl,
    latent_kl,
)
from dfml.algorithms.meta.maml import maml_objective
from dfml.models.flat import FlatModel
from dfml.models.zoo import ModelConfig, build_model


def test_gaussian_kl_matches_closed_form_and_torch_distributions():
    mu = torch.tensor([0.0, 1.0, -2.0, 0.5])
    log_sigma = torch.tensor([0.0, -1.0, 0.3, -3.0])
    sigma2 = torch.exp(2 * log_sigma)
    closed = 0.5 * (sigma2 + mu**2 - 1 - torch.log(sigma2)).sum()
    torch.testing.assert_close(gaussian_kl(mu, log_sigma), closed)
    dist = kl_divergence(Normal(mu, torch.exp(log_sigma)), Normal(0.0, 1.0)).sum()
    torch.testing.assert_close(gaussian_kl(mu, log_sigma), dist)
    # N(0, 1) against itself: zero; one coordinate μ = 1, σ = 1: ½.
    assert float(gaussian_kl(torch.zeros(3), torch.zeros(3))) == 0.0
    assert float(gaussian_kl(torch.tensor([1.0]), torch.tensor([0.0]))) == pytest.approx(0.5)


def test_latent_kl_is_the_batch_mean_of_per_sample_kls():
    means = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    rho = torch.tensor([-1.0, 0.0, 0.5])
    per = [kl_divergence(Normal(m, torch.exp(rho)), Normal(0.0, 1.0)).sum() for m in means]
    torch.testing.assert_close(latent_kl(means, rho), torch.stack(per).mean())


def setup():
    model = build_model(ModelConfig(model="mlp", hidden=6), (1, 2, 2), 3)
    layout = afml_layout(model)
    base = model.init_flat(0)
    vector = layout.init_vector(base, log_sigma=-2.0, latent_log_sigma=-1.0)
    g = torch.Generator().manual_seed(1)
    support = (torch.randn(5, 1, 2, 2, generator=g), torch.randint(0, 3, (5,), generator=g))
    query = (torch.randn(4, 1, 2, 2, generator=g), torch.randint(0, 3, (4,), generator=g))
    return model, layout, base, vector, support, query, g


def test_layout_splits_encoder_and_head_and_keeps_the_base_model():
    model, layout, base, vector, *_ = setup()
    assert layout.latent_dim == 6 and layout.head_size == 6 * 3 + 3
    assert layout.encoder_size + layout.head_size == model.size
    assert vector.shape == (layout.size,) == (2 * layout.encoder_size + 6 + layout.head_size,)
    torch.testing.assert_close(layout.mean_model(vector), base)
    _, log_sigma, rho, head = layout.split(vector)
    assert (log_sigma == -2.0).all() and (rho == -1.0).all()
    x = torch.randn(3, 1, 2, 2)
    z, mean = encode(layout, vector, x, None, None)
    # Mean weights and no latent noise: the base model's own forward pass.
    torch.testing.assert_close(layout.head(head, z), model(base, x))
    torch.testing.assert_close(z, mean)
    with pytest.raises(ValueError, match=r"nn\.Sequential"):
        afml_layout(FlatModel(torch.nn.Linear(2, 2)))


def test_objective_terms_and_gradients():
    _, layout, _, vector, support, query, g = setup()
    e, z = layout.encoder_size, layout.latent_dim
    zero = AFMLNoise(torch.zeros(e), torch.zeros(5, z), torch.zeros(4, z))
    kwargs = dict(inner_lr=0.3, inner_steps=2, first_order=False)
    total, terms = afml_objective(
        layout, vector, support, query, zero, alpha=0.0, beta=0.0, **kwargs
    )
    # α = β = 0 and no noise: MAML on the head with the mean encoder frozen as features.
    mu, log_sigma, rho, head = layout.split(vector)

    def head_loss(h, feats, y):
        return torch.nn.functional.cross_entropy(layout.head(h, feats), y)

    feats_s = layout.encoder(mu, support[0])
    feats_q = layout.encoder(mu, query[0])
    expected = maml_objective(head_loss, head, (feats_s, support[1]), (feats_q, query[1]), 0.3, 2)
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(terms["enc"], head_loss(head, feats_q, query[1]))
    torch.testing.assert_close(terms["cmpx"], gaussian_kl(mu, log_sigma))
    torch.testing.assert_close(terms["cons"], latent_kl(feats_q, rho))
    total_ab, _ = afml_objective(
        layout, vector, support, query, zero, alpha=0.5, beta=0.01, **kwargs
    )
    torch.testing.assert_close(
        total_ab, terms["meta"] + 0.5 * (terms["enc"] + terms["cons"]) + 0.01 * terms["cmpx"]
    )
    # With noise, every block of the vector (θ_u, log θ_σ, ρ, θ̂) receives gradient.
    noise = AFMLNoise(
        torch.randn(e, generator=g), torch.randn(5, z, generator=g), torch.randn(4, z, generator=g)
    )
    grad = torch.func.grad(
        lambda v: afml_objective(layout, v, support, query, noise, alpha=0.5, beta=0.01, **kwargs)[
            0
        ]
    )(vector)
    for block in layout.split(grad):
        assert block.abs().max() > 0
    # ∂(β L_CMPX)/∂ log θ_σ = β (σ² − 1) exactly (the other terms see σ only through ε).
    grad_cmpx = torch.func.grad(lambda v: gaussian_kl(*layout.split(v)[:2]))(vector)
    torch.testing.assert_close(
        layout.split(grad_cmpx)[1], torch.exp(2 * log_sigma) - 1.0, rtol=1e-6, atol=1e-7
    )
