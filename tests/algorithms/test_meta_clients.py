"""Client halves of the meta family, in-process: vector layouts, adaptation, scoring."""

from __future__ import annotations

import numpy as np
import torch
from helpers.contexts import make_contexts

from dfml.algorithms.afml import AFML, AFMLConfig
from dfml.algorithms.fedmeta import FedMetaMAML, FedMetaSGD
from dfml.algorithms.fml import EVAL_SALT, MetaConfig
from dfml.algorithms.meta.maml import model_loss, sample_batch, split_meta_sgd
from dfml.algorithms.sgd import evaluate


def test_meta_sgd_client_publishes_theta_alpha_and_learns_alpha():
    (ctx, *_), (init, *_) = make_contexts(2)
    alg = FedMetaSGD(MetaConfig(inner_lr=0.07, local_steps=3, batch_size=16))
    state = alg.init_state(ctx, init.clone())
    theta, alpha = split_meta_sgd(state.params)
    assert torch.equal(theta, init) and torch.all(alpha == 0.07)
    new, metrics = alg.local_update(ctx, state, state.params)
    theta2, alpha2 = split_meta_sgd(new.params)
    assert not torch.equal(theta2, theta) and not torch.equal(alpha2, alpha)
    assert np.isfinite(metrics["train_loss"]) and "alpha_mean" in metrics
    # Scoring a vector uses its θ half.
    got = alg.evaluate_client(ctx, new, new.params)
    loss, acc = evaluate(ctx.model, theta2, ctx.data.x_test, ctx.data.y_test)
    assert got == {"test_loss": loss, "accuracy": acc}


def test_meta_sgd_adapt_takes_alpha_scaled_steps_and_keeps_alpha():
    (ctx, *_), (init, *_) = make_contexts(2)
    alg = FedMetaSGD(MetaConfig(batch_size=8))
    alpha = torch.linspace(0.01, 0.2, init.numel())
    vector = torch.cat([init, alpha])
    adapted = alg.adapt(ctx, alg.init_state(ctx, init), vector, steps=2, seed=5)
    rng = np.random.default_rng(5)
    theta = init
    for _ in range(2):
        x, y = sample_batch(ctx.data.x_meta, ctx.data.y_meta, 8, rng)
        theta = theta - alpha * torch.func.grad(model_loss(ctx.model))(theta, x, y)
    torch.testing.assert_close(adapted, torch.cat([theta, alpha]))
    assert alg.adapt(ctx, alg.init_state(ctx, init), vector, steps=0, seed=5) is vector


def test_maml_scores_the_adapted_model_and_reports_the_meta_model_too():
    (ctx, *_), (init, *_) = make_contexts(2)
    alg = FedMetaMAML(MetaConfig(inner_lr=0.1, inner_steps=3, batch_size=8))
    state = alg.init_state(ctx, init)
    metrics = alg.evaluate_client(ctx, state)
    adapted = alg.adapt(ctx, state, init, 3, ctx.round_seed(state.round, EVAL_SALT))
    assert not torch.equal(adapted, init)
    assert metrics["accuracy"] == evaluate(ctx.model, adapted, ctx.data.x_test, ctx.data.y_test)[1]
    assert (
        metrics["init_accuracy"] == evaluate(ctx.model, init, ctx.data.x_test, ctx.data.y_test)[1]
    )


def test_afml_vector_scoring_and_head_only_adaptation():
    (ctx, *_), (init, *_) = make_contexts(2)
    alg = AFML(AFMLConfig(local_steps=2, batch_size=16))
    state = alg.init_state(ctx, init.clone())
    layout, _ = alg.layout(ctx)
    assert state.params.numel() == layout.size > init.numel()
    torch.testing.assert_close(layout.mean_model(state.params), init)
    new, metrics = alg.local_update(ctx, state, state.params)
    assert {"train_loss", "loss_enc", "loss_cons", "loss_cmpx"} <= set(metrics)
    for before, after in zip(layout.split(state.params), layout.split(new.params), strict=True):
        assert not torch.equal(before, after)  # θ_u, log θ_σ, log σ_z and θ̂ all learn
    adapted = alg.adapt(ctx, new, new.params, steps=3, seed=1)
    head = layout.head_size
    assert torch.equal(adapted[:-head], new.params[:-head])
    assert not torch.equal(adapted[-head:], new.params[-head:])
    got = alg.evaluate_client(ctx, new, adapted)
    expected = evaluate(ctx.model, layout.mean_model(adapted), ctx.data.x_test, ctx.data.y_test)
    assert (got["test_loss"], got["accuracy"]) == expected
