"""CL-FML's ``--meta-learner``: one client's round against plain-autograd loops.

The references below use ``torch.autograd.grad`` on the model's forward
(``create_graph`` for MAML's second-order term), not ``torch.func``, so they
check the meta-updates independently of dfml's meta-gradient code. Batches
are drawn with the same NumPy calls as :func:`~dfml.algorithms.meta.maml.sample_batch`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers.contexts import make_contexts

from dfml.algorithms.base import LocalSGDConfig
from dfml.algorithms.clfml.algorithm import CLFML, CDFedAvg, CDFedAvgConfig, CLFMLConfig
from dfml.algorithms.dfedavg import DFedAvg
from dfml.algorithms.fedmeta import FedMetaMAML
from dfml.algorithms.fml import MetaConfig
from dfml.algorithms.gfml import GFML, GFMLConfig
from dfml.errors import ConfigError
from dfml.launch.options import build_config


@pytest.fixture(scope="module")
def client():
    ctxs, inits = make_contexts(3)
    return ctxs[0], inits[0]


def draw(x: torch.Tensor, y: torch.Tensor, size: int, rng: np.random.Generator):
    idx = torch.from_numpy(np.sort(rng.choice(len(y), min(size, len(y)), replace=False)))
    return x[idx], y[idx]


def loss_at(ctx, theta: torch.Tensor, batch) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.cross_entropy(ctx.model(theta, x), y)


def gradient(ctx, theta: torch.Tensor, batch, create_graph: bool = False) -> torch.Tensor:
    return torch.autograd.grad(loss_at(ctx, theta, batch), theta, create_graph=create_graph)[0]


def reference(ctx, init: torch.Tensor, cfg: CLFMLConfig, round_index: int) -> torch.Tensor:
    """E_M ⌈|D^M|/B⌉ meta-updates written out with plain autograd."""
    x, y = ctx.data.x_meta, ctx.data.y_meta
    rng = np.random.default_rng(ctx.round_seed(round_index))
    theta = init.detach().clone()
    for _ in range(cfg.local_epochs * math.ceil(len(y) / cfg.batch_size)):
        if cfg.meta_learner == "reptile":
            phi = theta.clone()
            for _ in range(cfg.inner_steps):
                batch = draw(x, y, cfg.batch_size, rng)
                leaf = phi.detach().requires_grad_(True)
                phi = (leaf - cfg.inner_lr * gradient(ctx, leaf, batch)).detach()
            theta = theta + cfg.lr * (phi - theta)
            continue
        support, query = draw(x, y, cfg.batch_size, rng), draw(x, y, cfg.batch_size, rng)
        second = cfg.meta_learner == "maml"
        leaf = theta.detach().requires_grad_(True)
        phi = leaf
        for _ in range(cfg.inner_steps):
            g = gradient(ctx, phi, support, create_graph=second)
            phi = phi - cfg.inner_lr * (g if second else g.detach())
        outer = torch.autograd.grad(loss_at(ctx, phi, query), leaf)[0]
        theta = (theta - cfg.lr * outer).detach()
    return theta


@pytest.mark.parametrize("learner", ["fomaml", "maml", "reptile"])
def test_meta_learner_round_matches_plain_autograd(client, learner):
    ctx, init = client
    cfg = CLFMLConfig(
        meta_learner=learner, lr=0.3, inner_lr=0.05, inner_steps=2, batch_size=16, local_epochs=1
    )
    algo = CLFML(cfg)
    state = algo.init_state(ctx, init).evolve(round=3)
    new, metrics = algo.local_update(ctx, state, init)
    expected = reference(ctx, init, cfg, 3)
    assert not torch.allclose(expected, init)
    torch.testing.assert_close(new.params, expected, rtol=1e-5, atol=1e-6)
    assert math.isfinite(metrics["train_loss"])


def test_maml_differs_from_fomaml_by_the_second_order_term(client):
    ctx, init = client
    runs = {
        m: CLFML(CLFMLConfig(meta_learner=m, inner_steps=2, lr=0.3))
        .local_update(ctx, CLFML(CLFMLConfig()).init_state(ctx, init), init)[0]
        .params
        for m in ("fomaml", "maml")
    }
    assert not torch.allclose(runs["fomaml"], runs["maml"])


def test_sgd_learner_is_gfmls_plain_step(client):
    """``sgd`` is G-FML's client update (itself checked against a plain loop)."""
    ctx, init = client
    cfg = CLFMLConfig(meta_learner="sgd", lr=0.1, batch_size=16, local_epochs=1)
    gfml = GFML(GFMLConfig(meta_learner="sgd", lr=0.1, batch_size=16, local_epochs=1))
    ours = CLFML(cfg).local_update(ctx, CLFML(cfg).init_state(ctx, init), init)[0]
    theirs = gfml.local_update(ctx, gfml.init_state(ctx, init), init)[0]
    assert torch.equal(ours.params, theirs.params)


def test_cdfedavg_trains_dfedavgs_plain_sgd_on_all_local_data(client):
    ctx, init = client
    algo = CDFedAvg(CDFedAvgConfig(lr=0.1, batch_size=16, local_epochs=1))
    dfedavg = DFedAvg(LocalSGDConfig(lr=0.1, batch_size=16, local_epochs=1))
    ours = algo.local_update(ctx, algo.init_state(ctx, init), init)[0]
    theirs = dfedavg.local_update(ctx, dfedavg.init_state(ctx, init), init)[0]
    assert torch.equal(ours.params, theirs.params)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"meta_learner": "adam"}, "meta_learner must be one of fomaml, maml, reptile, sgd"),
        ({"meta_learner": "reptile", "lr": 2.0}, "lr must be <= 1"),
        ({"inner_steps": 0}, "inner_steps must be >= 1"),
        ({"inner_lr": -1.0}, "inner_lr must be a positive number"),
    ],
)
def test_bad_meta_learner_options_are_one_line(options, message):
    with pytest.raises(ConfigError, match=message):
        CLFMLConfig(**options)


def test_meta_learner_flag_belongs_to_clfml_only():
    base = {"algorithm": "clfml", "dataset": "digits", "meta_learner": "maml"}
    assert build_config(base)[0].algorithm.meta_learner == "maml"
    with pytest.raises(ConfigError, match="meta-learner"):
        build_config({**base, "algorithm": "cdfedavg"})


def test_a_meta_learned_cluster_model_is_scored_like_the_family(client):
    """accuracy after K α-steps on D^M, init_accuracy the meta-model's own (FedMeta's rule)."""
    ctx, init = client
    cfg = CLFMLConfig(inner_lr=0.2, inner_steps=3, batch_size=16)
    ours = CLFML(cfg)
    family = FedMetaMAML(MetaConfig(inner_lr=0.2, inner_steps=3, batch_size=16))
    trained = ours.local_update(ctx, ours.init_state(ctx, init), init)[0].params
    state = ours.init_state(ctx, init).evolve(params=trained, round=4)
    got = ours.evaluate_client(ctx, state)
    theirs = family.init_state(ctx, init).evolve(params=trained, round=4)
    assert got == family.evaluate_client(ctx, theirs)
    assert got["accuracy"] != got["init_accuracy"]
    plain = CLFML(CLFMLConfig(meta_learner="sgd")).evaluate_client(ctx, state)
    assert "init_accuracy" not in plain and plain["accuracy"] == got["init_accuracy"]


def test_train_split_meta_trains_dfedavg_on_dm_alone(client):
    """``train_split: meta``: the same SGD as on D^M by hand; ``all`` reads D^M ∪ D^Q."""
    from dfml.algorithms.dfedavg import DFedAvgConfig
    from dfml.algorithms.sgd import sgd_epochs

    ctx, init = client
    algo = DFedAvg(DFedAvgConfig(lr=0.1, batch_size=16, local_epochs=1, train_split="meta"))
    state = algo.init_state(ctx, init).evolve(round=2)
    ours = algo.local_update(ctx, state, init)[0].params
    expected, _ = sgd_epochs(
        ctx.model, init, ctx.data.x_meta, ctx.data.y_meta, lr=0.1, epochs=1, batch_size=16,
        seed=ctx.round_seed(2),
    )  # fmt: skip
    torch.testing.assert_close(ours, expected)
    everything = DFedAvg(DFedAvgConfig(lr=0.1, batch_size=16, local_epochs=1))
    assert not torch.equal(everything.local_update(ctx, state, init)[0].params, ours)


def test_gfml_and_clfml_share_the_learner(client):
    """G-FML runs CL-FML's meta-learner: only the clustering differs between them."""
    ctx, init = client
    knobs = {"meta_learner": "fomaml", "lr": 0.3, "inner_lr": 0.05, "inner_steps": 2}
    gfml = GFML(GFMLConfig(**knobs))
    clfml = CLFML(CLFMLConfig(**knobs))
    ours = gfml.local_update(ctx, gfml.init_state(ctx, init), init)[0].params
    theirs = clfml.local_update(ctx, clfml.init_state(ctx, init), init)[0].params
    assert torch.equal(ours, theirs)
    assert GFMLConfig().meta_learner == CLFMLConfig().meta_learner == "fomaml"


@pytest.mark.parametrize("algorithm", ["dfedavg", "cdfedavg", "gfml", "clfml"])
def test_with_tasks_every_method_pretrains_on_dm(algorithm):
    base = {"algorithm": algorithm, "dataset": "digits"}
    default = {"dfedavg": "all", "cdfedavg": "all", "gfml": "meta", "clfml": "meta"}[algorithm]
    assert build_config(base)[0].algorithm.train_split == default
    assert build_config({**base, "tasks": 5})[0].algorithm.train_split == "meta"
    explicit = build_config({**base, "tasks": 5, "train_split": "all"})[0]
    assert explicit.algorithm.train_split == "all"
    with pytest.raises(ConfigError, match="train_split must be one of all, meta"):
        build_config({**base, "train_split": "query"})
