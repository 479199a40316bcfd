"""FedProx, FedAvg-FT and pFedMe: their math against hand computations, and
the server / gossip switch (in-process: no Ray needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.contexts import make_contexts
from torch import nn

from dfml.actors.config import ResourceConfig
from dfml.actors.inprocess import InProcessFederation
from dfml.algorithms.fedavg_ft import FedAvgFT, FedAvgFTConfig
from dfml.algorithms.fedprox import FedProx, FedProxConfig, proximal_term
from dfml.algorithms.pfedme import PFedMe, PFedMeConfig, moreau_inner, pfedme_local
from dfml.algorithms.server import (
    FederatedSGDConfig,
    ServerOrGossip,
    average,
    relaxed_weights,
)
from dfml.algorithms.sgd import evaluate, sgd_epochs
from dfml.data.config import PartitionConfig
from dfml.errors import ConfigError
from dfml.experiment import ExperimentConfig, RunConfig, prepare
from dfml.models.flat import FlatModel
from dfml.models.zoo import ModelConfig
from dfml.runtime.loop import run
from dfml.topology.config import TopologyConfig


def linear_problem(seed: int = 0):
    """A 3 → 2 linear classifier, a batch of 5 and two flat vectors."""
    g = torch.Generator().manual_seed(seed)
    model = FlatModel(nn.Linear(3, 2))
    x = torch.randn(5, 3, generator=g)
    y = torch.tensor([0, 1, 1, 0, 1])
    w = torch.randn(model.size, generator=g)
    anchor = torch.randn(model.size, generator=g)
    return model, x, y, w, anchor


def ce_gradient_by_hand(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∇ mean CE of z = W x + b: ((softmax(z) − onehot(y))ᵀ x / n, mean(softmax − onehot))."""
    W, b = w[:6].reshape(2, 3).double(), w[6:].double()
    z = x.double() @ W.T + b
    err = torch.softmax(z, 1) - nn.functional.one_hot(y, 2).double()
    return torch.cat([(err.T @ x.double() / len(y)).reshape(-1), err.mean(0)]).float()


def test_fedprox_step_adds_mu_times_distance_to_the_anchor():
    model, x, y, w, anchor = linear_problem()
    lr, mu = 0.3, 0.7
    new, loss = sgd_epochs(
        model, w, x, y, lr=lr, epochs=1, batch_size=5, seed=0, regularizer=proximal_term(anchor, mu)
    )
    expected = w - lr * (ce_gradient_by_hand(w, x, y) + mu * (w - anchor))
    torch.testing.assert_close(new, expected, rtol=1e-5, atol=1e-6)
    ce = nn.functional.cross_entropy(model(w, x), y)
    assert loss == pytest.approx(float(ce + 0.5 * mu * ((w - anchor) ** 2).sum()), rel=1e-5)


def test_fedprox_with_mu_zero_is_plain_local_sgd_and_mu_pulls_to_the_start():
    (ctx, *_), inits = make_contexts(n=6)
    start = inits[0] + 0.05 * torch.randn_like(inits[0])
    results = {}
    for mu in (0.0, 0.5, 5.0):
        algo = FedProx(FedProxConfig(mu=mu, lr=0.1, local_epochs=1))
        state = algo.init_state(ctx, inits[0])
        results[mu] = algo.local_update(ctx, state, start)[0].params
    plain = ServerOrGossip(FederatedSGDConfig(lr=0.1, local_epochs=1))
    state = plain.init_state(ctx, inits[0])
    assert torch.equal(results[0.0], plain.local_update(ctx, state, start)[0].params)
    dist = {mu: float((p - start).norm()) for mu, p in results.items()}
    assert dist[5.0] < dist[0.5] < dist[0.0]


def test_pfedme_inner_steps_match_explicit_gradient_descent_and_reach_stationarity():
    model, x, y, theta0, w = linear_problem(seed=1)
    lam, p = 2.0, 0.2
    theta, _ = moreau_inner(model, theta0, w, x, y, lam=lam, steps=3, lr=p)
    ref = theta0.clone()
    for _ in range(3):  # θ ← θ − p (∇f(θ) + λ (θ − w)), gradient by hand
        ref = ref - p * (ce_gradient_by_hand(ref, x, y) + lam * (ref - w))
    torch.testing.assert_close(theta, ref, rtol=1e-5, atol=1e-6)
    # Many steps solve the Moreau problem: ∇f(θ̂) + λ(θ̂ − w) = 0.
    theta_hat, _ = moreau_inner(model, theta0, w, x, y, lam=lam, steps=60, lr=p)
    residual = ce_gradient_by_hand(theta_hat, x, y) + lam * (theta_hat - w)
    assert float(residual.norm()) < 1e-5


def test_pfedme_local_update_of_w():
    model, x, y, w, _ = linear_problem(seed=2)
    lam, p, eta, k = 3.0, 0.1, 0.2, 4
    w_new, theta, _ = pfedme_local(
        model,
        w,
        x,
        y,
        lam=lam,
        inner_steps=k,
        personal_lr=p,
        lr=eta,
        epochs=1,
        batch_size=5,
        seed=0,
    )
    theta_hat, _ = moreau_inner(model, w, w, x, y, lam=lam, steps=k, lr=p)
    torch.testing.assert_close(theta, theta_hat)
    torch.testing.assert_close(w_new, w - eta * lam * (w - theta_hat))
    # θ carries over between batches: two epochs of one batch each
    w2, theta2, _ = pfedme_local(
        model,
        w,
        x,
        y,
        lam=lam,
        inner_steps=k,
        personal_lr=p,
        lr=eta,
        epochs=2,
        batch_size=5,
        seed=0,
    )
    theta_b, _ = moreau_inner(model, theta_hat, w_new, x, y, lam=lam, steps=k, lr=p)
    torch.testing.assert_close(theta2, theta_b)
    torch.testing.assert_close(w2, w_new - eta * lam * (w_new - theta_b))


def test_pfedme_uses_theta_and_fedavg_ft_uses_the_fine_tuned_model():
    (ctx, *_), inits = make_contexts(n=6)
    x, y = ctx.data.x_test, ctx.data.y_test
    pf = PFedMe(PFedMeConfig(local_epochs=1))
    state, _ = pf.local_update(ctx, pf.init_state(ctx, inits[0]), inits[0])
    assert not torch.equal(state.extras["theta"], state.params)
    assert (
        pf.evaluate_client(ctx, state)["accuracy"]
        == evaluate(ctx.model, state.extras["theta"], x, y)[1]
    )
    assert (
        pf.evaluate_client(ctx, state, state.params)["accuracy"]
        == evaluate(ctx.model, state.params, x, y)[1]
    )
    ft = FedAvgFT(FedAvgFTConfig(finetune_steps=3))
    state = ft.init_state(ctx, inits[0])
    tuned = ft.adapt(ctx, state, state.params, 3, ctx.round_seed(state.round, 0xF7))
    assert not torch.equal(tuned, state.params)
    assert ft.evaluate_client(ctx, state)["accuracy"] == evaluate(ctx.model, tuned, x, y)[1]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: FedProxConfig(mu=-1.0), "mu"),
        (lambda: FedProxConfig(aggregation="star"), "aggregation"),
        (lambda: FedAvgFTConfig(finetune_steps=-1), "finetune_steps"),
        (lambda: PFedMeConfig(lam=0.0), "lam"),
        (lambda: PFedMeConfig(inner_steps=0), "inner_steps"),
        (lambda: PFedMeConfig(lam=15.0, personal_lr=0.2), "personal_lr x lam"),
        (lambda: PFedMeConfig(lam=15.0, lr=0.2), "lr x lam"),
        (lambda: PFedMeConfig(global_lr=0.0), "global_lr"),
    ],
)
def test_configs_reject_bad_values(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_relaxed_weights_and_in_process_average():
    self_w, w = relaxed_weights(0.5, (0.25, 0.25), eta=0.4)
    assert self_w == pytest.approx(0.8) and w == pytest.approx((0.1, 0.1))
    a, b = np.array([1.0, 2.0], np.float32), np.array([3.0, -2.0], np.float32)
    np.testing.assert_allclose(average([0.25, 0.75], [a, b]), [2.5, -1.0])


def run_in_process(algorithm, topology: str = "complete", rounds: int = 3):
    cfg = ExperimentConfig(
        run=RunConfig(clients=4, rounds=rounds, seed=2),
        partition=PartitionConfig(partition="dirichlet", alpha=0.5),
        model=ModelConfig(hidden=16),
        topology=TopologyConfig(topology=topology, mixing="data-size"),
    )
    prep = prepare(cfg)
    fed = InProcessFederation(cfg.data, cfg.model, prep.splits, cfg.run.seed, ResourceConfig())
    try:
        return run(algorithm, fed, rounds, topology=prep.topology)
    finally:
        fed.shutdown()


@pytest.mark.parametrize("algo_cls, config_cls", [(FedProx, FedProxConfig), (PFedMe, PFedMeConfig)])
def test_server_and_gossip_agree_on_a_complete_graph_with_data_size_weights(algo_cls, config_cls):
    """Gossip row i of W is p_j = n_j / n on a complete graph: client i starts
    round t from Σ_j p_j x_j, the server's model; so every client's training
    loss matches round by round (up to float32 summation)."""
    knobs = {"local_epochs": 1} | ({"inner_steps": 2} if config_cls is PFedMeConfig else {})
    server = run_in_process(algo_cls(config_cls(aggregation="server", **knobs)))
    gossip = run_in_process(algo_cls(config_cls(aggregation="gossip", **knobs)))
    for s, g in zip(server, gossip, strict=True):
        for cid in s.metrics:
            assert s.metrics[cid]["train_loss"] == pytest.approx(
                g.metrics[cid]["train_loss"], rel=1e-4
            )
    # ... and differ on a ring, where the neighbourhood average is not global.
    ring = run_in_process(algo_cls(config_cls(aggregation="gossip", **knobs)), "ring")
    assert ring[-1].metrics[0]["train_loss"] != pytest.approx(
        server[-1].metrics[0]["train_loss"], rel=1e-4
    )
