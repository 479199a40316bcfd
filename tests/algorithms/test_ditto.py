"""Ditto: its client step against an independent PyTorch computation, the λ
limits, the FedAvg trajectory of w, and in-process runs (no Ray needed)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from helpers.contexts import make_contexts
from torch import nn

from dfml.actors.config import ResourceConfig
from dfml.actors.inprocess import InProcessFederation
from dfml.actors.state import ClientContext, ClientData
from dfml.algorithms.base import Message
from dfml.algorithms.ditto import PERSONAL, PERSONAL_SALT, Ditto, DittoConfig
from dfml.algorithms.evaluation import personalization_metrics
from dfml.algorithms.fedprox import FedProx, FedProxConfig
from dfml.algorithms.server import FederatedSGDConfig, ServerOrGossip
from dfml.algorithms.sgd import evaluate, sgd_epochs
from dfml.data.config import PartitionConfig
from dfml.errors import ConfigError
from dfml.experiment import ExperimentConfig, RunConfig, prepare
from dfml.launch.options import build_config
from dfml.launch.registry import ALGORITHMS
from dfml.models.flat import FlatModel
from dfml.models.zoo import ModelConfig
from dfml.runtime.loop import run
from dfml.topology.config import TopologyConfig


def tiny_context(seed: int = 0) -> ClientContext:
    """A 3 → 2 linear classifier on 6 + 4 training and 5 test samples."""
    g = torch.Generator().manual_seed(seed)

    def pair(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g)

    data = ClientData(*pair(6), *pair(4), *pair(5))
    return ClientContext(0, FlatModel(nn.Linear(3, 2)), data, torch.device("cpu"), seed)


def reference_sgd(
    start: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    seed: int,
    lam: float = 0.0,
    anchor: torch.Tensor | None = None,
) -> torch.Tensor:
    """torch.optim.SGD on an nn.Linear: CE (+ (λ/2)‖v − anchor‖²), batches from
    numpy's ``default_rng(seed).permutation`` per epoch."""
    module = nn.Linear(3, 2)
    nn.utils.vector_to_parameters(start.clone(), module.parameters())
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for s in range(0, len(y), batch_size):
            idx = torch.from_numpy(order[s : s + batch_size])
            opt.zero_grad()
            loss = nn.functional.cross_entropy(module(x[idx]), y[idx])
            if anchor is not None:
                v = nn.utils.parameters_to_vector(module.parameters())
                loss = loss + 0.5 * lam * torch.sum((v - anchor) ** 2)
            loss.backward()
            opt.step()
    return nn.utils.parameters_to_vector(module.parameters()).detach()


def test_client_step_is_sgd_for_w_and_proximal_sgd_from_the_received_w_for_v():
    ctx = tiny_context()
    g = torch.Generator().manual_seed(1)
    own, nbr, v0 = (torch.randn(ctx.model.size, generator=g) for _ in range(3))
    cfg = DittoConfig(
        aggregation="gossip",
        lr=0.3,
        personal_lr=0.2,
        lam=1.5,
        local_epochs=2,
        personal_epochs=3,
        batch_size=4,
    )
    algo = Ditto(cfg)
    state = algo.init_state(ctx, own)
    assert torch.equal(state.extras[PERSONAL], own)
    state = state.evolve(extras={PERSONAL: v0})
    msg = Message(round=0, neighbors=(nbr.numpy(),), weights=(0.4,), self_weight=0.6)
    new, metrics = algo.client_step(ctx, state, [nbr.numpy()], msg)

    x, y = ctx.data.x_train, ctx.data.y_train
    w_t = 0.6 * own + 0.4 * nbr  # the received (mixed) model anchors v
    w_ref = reference_sgd(w_t, x, y, lr=0.3, epochs=2, batch_size=4, seed=ctx.round_seed(0))
    v_ref = reference_sgd(
        v0,
        x,
        y,
        lr=0.2,
        epochs=3,
        batch_size=4,
        seed=ctx.round_seed(0, PERSONAL_SALT),
        lam=1.5,
        anchor=w_t,
    )
    torch.testing.assert_close(new.params, w_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(new.extras[PERSONAL], v_ref, rtol=1e-6, atol=1e-6)
    assert new.round == 1
    assert set(metrics) >= {"train_loss", "personal_loss", "accuracy", "test_loss"}
    assert new.last_loss == metrics["train_loss"]
    # accuracy is v_i's, the model the client uses
    loss, acc = evaluate(ctx.model, v_ref, ctx.data.x_test, ctx.data.y_test)
    assert metrics["accuracy"] == acc and metrics["test_loss"] == pytest.approx(loss, rel=1e-5)


def test_personal_lr_defaults_to_lr():
    ctx = tiny_context(seed=3)
    w = ctx.model.init_flat(0)
    v0 = w + 0.5
    cfg = DittoConfig(lr=0.25, lam=0.7, batch_size=4)
    assert cfg.personal_lr is None and cfg.personal_step == 0.25
    state = Ditto(cfg).init_state(ctx, w).evolve(extras={PERSONAL: v0})
    new, _ = Ditto(cfg).local_update(ctx, state, w)
    x, y = ctx.data.x_train, ctx.data.y_train
    seed = ctx.round_seed(0, PERSONAL_SALT)
    v_ref = reference_sgd(v0, x, y, lr=0.25, epochs=1, batch_size=4, seed=seed, lam=0.7, anchor=w)
    torch.testing.assert_close(new.extras[PERSONAL], v_ref, rtol=1e-6, atol=1e-6)


def test_w_is_exactly_fedavgs_local_update():
    (ctx, *_), inits = make_contexts(n=6)
    start = inits[0] + 0.05 * torch.randn_like(inits[0])
    ditto = Ditto(DittoConfig(lr=0.1, local_epochs=2, lam=0.5))
    new, _ = ditto.local_update(ctx, ditto.init_state(ctx, inits[0]), start)
    for other in (
        FedProx(FedProxConfig(mu=0.0, lr=0.1, local_epochs=2)),
        ServerOrGossip(FederatedSGDConfig(lr=0.1, local_epochs=2)),
    ):
        ref, metrics = other.local_update(ctx, other.init_state(ctx, inits[0]), start)
        assert torch.equal(new.params, ref.params)
        assert new.last_loss == ref.last_loss == metrics["train_loss"]


def test_lambda_zero_is_local_training_and_a_large_lambda_pulls_v_to_w():
    (ctx, *_), inits = make_contexts(n=6)
    w_t = inits[0]
    v0 = w_t + 0.3 * torch.randn_like(w_t, generator=torch.Generator().manual_seed(0))
    x, y = ctx.data.x_train, ctx.data.y_train
    seed = ctx.round_seed(0, PERSONAL_SALT)

    def personal(lam: float, anchor: torch.Tensor) -> torch.Tensor:
        algo = Ditto(DittoConfig(lam=lam, personal_lr=0.01, personal_epochs=3))
        state = algo.init_state(ctx, w_t).evolve(extras={PERSONAL: v0})
        return algo.local_update(ctx, state, anchor)[0].extras[PERSONAL]

    local, _ = sgd_epochs(ctx.model, v0, x, y, lr=0.01, epochs=3, batch_size=32, seed=seed)
    assert torch.equal(personal(0.0, w_t), local)
    assert torch.equal(personal(0.0, w_t + 1.0), local)  # w^t does not matter
    dist = {lam: float((personal(lam, w_t) - w_t).norm()) for lam in (0.0, 0.1, 1.0, 10.0, 100.0)}
    values = list(dist.values())
    assert all(a > b for a, b in itertools.pairwise(values)), dist
    # η_v λ = 1: each step lands at w^t − η_v ∇f(v), so v stays within a gradient step of w^t
    assert dist[100.0] < 0.1 * float((v0 - w_t).norm())


def test_pers_k_fine_tunes_v_and_evaluation_scores_v():
    (ctx, *_), inits = make_contexts(n=6)
    algo = Ditto(DittoConfig(local_epochs=1))
    state, _ = algo.local_update(ctx, algo.init_state(ctx, inits[0]), inits[0])
    v = state.extras[PERSONAL]
    assert not torch.equal(v, state.params)
    x, y = ctx.data.x_test, ctx.data.y_test
    assert algo.evaluate_client(ctx, state)["accuracy"] == evaluate(ctx.model, v, x, y)[1]
    assert (
        algo.evaluate_client(ctx, state, state.params)["accuracy"]
        == evaluate(ctx.model, state.params, x, y)[1]
    )
    base = ServerOrGossip(FederatedSGDConfig(local_epochs=1))
    assert algo.adapt(ctx, state, state.params, 0, 7) is v
    torch.testing.assert_close(
        algo.adapt(ctx, state, state.params, 3, 7), base.adapt(ctx, state, v, 3, 7)
    )
    other = inits[0].clone()  # not the client's own vector: fine-tuned as given
    torch.testing.assert_close(
        algo.adapt(ctx, state, other, 3, 7), base.adapt(ctx, state, other, 3, 7)
    )
    out = personalization_metrics(algo, ctx, state, state.params.numpy(), (0, 2), local_epochs=0)
    assert out["pers0_accuracy"] == evaluate(ctx.model, v, x, y)[1]
    assert out["global_accuracy"] == evaluate(ctx.model, state.params, x, y)[1]


def run_in_process(algorithm, rounds: int = 3, topology: str = "complete"):
    """``rounds`` rounds on 4 digits clients; returns (records, final states)."""
    cfg = ExperimentConfig(
        run=RunConfig(clients=4, rounds=rounds, seed=2),
        partition=PartitionConfig(partition="dirichlet", alpha=0.5),
        model=ModelConfig(hidden=16),
        topology=TopologyConfig(topology=topology, mixing="data-size"),
    )
    prep = prepare(cfg)
    fed = InProcessFederation(cfg.data, cfg.model, prep.splits, cfg.run.seed, ResourceConfig())
    try:
        records = run(algorithm, fed, rounds, topology=prep.topology)
        return records, fed.get_states()
    finally:
        fed.shutdown()


@pytest.mark.parametrize("aggregation, topology", [("server", "complete"), ("gossip", "ring")])
def test_in_process_run_keeps_w_as_fedavg_and_a_distinct_personal_model(aggregation, topology):
    cfg = dict(aggregation=aggregation, local_epochs=1)
    records, states = run_in_process(Ditto(DittoConfig(lam=0.1, **cfg)), topology=topology)
    assert len(records) == 3
    for rec in records:
        for m in rec.metrics.values():
            assert math.isfinite(m["train_loss"]) and math.isfinite(m["personal_loss"])
            assert 0.0 <= m["accuracy"] <= 1.0
    for st in states.values():
        assert st.round == 3
        assert not torch.allclose(st.extras[PERSONAL], st.params)
    # w is FedAvg's (FedProx with μ = 0) round by round, bit for bit against the
    # same per-client code (the vectorised cohort step agrees only to float rounding)
    fed_records, fed_states = run_in_process(
        FedProx(FedProxConfig(mu=0.0, **cfg), vectorize=False), topology=topology
    )
    for cid, st in states.items():
        assert torch.equal(st.params, fed_states[cid].params)
    for rec, ref in zip(records, fed_records, strict=True):
        for cid, m in rec.metrics.items():
            assert m["train_loss"] == ref.metrics[cid]["train_loss"]


def test_registered_and_built_from_options():
    assert ALGORITHMS["ditto"] is Ditto
    experiment, _ = build_config(
        {"algorithm": "ditto", "lam": "0.5", "personal_lr": "none", "personal_epochs": "2"}
    )
    assert experiment.algorithm == DittoConfig(lam=0.5, personal_lr=None, personal_epochs=2)
    assert DittoConfig().aggregation == "server" and DittoConfig().lam == 0.1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lam": -0.1}, "lam must be"),
        ({"lam": float("nan")}, "lam must be"),
        ({"lam": float("inf")}, "lam must be"),
        ({"personal_lr": 0.0}, "personal_lr must be"),
        ({"personal_lr": float("nan")}, "personal_lr must be"),
        ({"personal_epochs": 0}, "personal_epochs"),
        ({"lam": 10.0, "personal_lr": 0.2}, "personal_lr x lam"),
        ({"lam": 20.0, "lr": 0.1}, "personal_lr x lam"),  # personal_lr None → lr
        ({"aggregation": "star"}, "aggregation"),
        ({"lr": 0.0}, "lr"),
    ],
)
def test_config_errors_are_one_line(kwargs, match):
    with pytest.raises(ConfigError, match=match) as err:
        DittoConfig(**kwargs)
    assert "\n" not in str(err.value)
