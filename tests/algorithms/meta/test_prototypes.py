"""The prototype-initialised head (Proto-MAML) and meta-updates that start from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from dfml.algorithms.gfml import GFMLConfig, meta_update
from dfml.algorithms.meta.episodes import EPISODE_LABELS, label_episode
from dfml.algorithms.meta.prototypes import prototype_head
from dfml.models.flat import FlatModel
from dfml.models.head import head_layout
from dfml.models.zoo import ModelConfig, build_model


def test_hand_example():
    # The body is the identity on 2-D inputs, so f(x) = x; the head has 3 rows.
    model = FlatModel(nn.Sequential(nn.Identity(), nn.Linear(2, 3)))
    layout = head_layout(model)
    flat = torch.arange(9, dtype=torch.float32)  # W = [[0, 1], [2, 3], [4, 5]], b = [6, 7, 8]
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    y = torch.tensor([0, 0, 2])
    out = prototype_head(layout, flat, x, y, [0, 1, 2])
    # μ_0 = (1, 0): W_0 = (2, 0), b_0 = −1; μ_2 = (0, 3): W_2 = (0, 6), b_2 = −9;
    # label 1 has no support sample and keeps its row (2, 3 | 7).
    assert out.tolist() == [2.0, 0.0, 2.0, 3.0, 0.0, 6.0, -1.0, 7.0, -9.0]
    # A label outside the requested ones is left alone even with samples.
    assert prototype_head(layout, flat, x, y, [2]).tolist()[:2] == [0.0, 1.0]


def test_logits_are_negative_squared_distances_up_to_a_per_sample_constant():
    model = build_model(ModelConfig(hidden=(16, 8)), (64,), 10)
    layout = head_layout(model)
    flat = model.init_flat(1)
    gen = torch.Generator().manual_seed(0)
    support, labels = torch.rand(12, 64, generator=gen), torch.tensor([1, 4, 7] * 4)
    out = prototype_head(layout, flat, support, labels, [1, 4, 7])
    x = torch.rand(9, 64, generator=gen)
    with torch.no_grad():
        f_s, f_x = layout.embed(flat, support), layout.embed(flat, x)
        mu = torch.stack([f_s[labels == c].mean(0) for c in (1, 4, 7)])
        distances = torch.cdist(f_x, mu) ** 2
        logits = model(out, x)[:, [1, 4, 7]]
    # logit_c + ‖f(x)‖² = −‖f(x) − μ_c‖², so the argmax is the nearest prototype.
    constant = (f_x * f_x).sum(1, keepdim=True)
    torch.testing.assert_close(logits - constant, -distances, rtol=1e-4, atol=1e-4)
    assert torch.equal(logits.argmax(1), distances.argmin(1))


def _plain_fomaml_with_prototypes(module, theta, labels, support, query, alpha, lr):
    """One first-order Proto-MAML update with nn.Module and torch.autograd only.

    φ_0: θ with the head rows of S's labels set to 2μ_c, −‖μ_c‖² (μ_c from the
    body's embeddings, kept in the graph); one inner step of α whose
    gradient is a constant; θ ← θ − lr ∇_θ L_Q(φ_1), over L's logits only.
    """
    names = [n for n, _ in module.named_parameters()]
    sizes = [p.numel() for p in module.parameters()]
    shapes = [p.shape for p in module.parameters()]
    leaves = [
        p.view(s).clone().requires_grad_(True)
        for p, s in zip(torch.split(theta, sizes), shapes, strict=True)
    ]
    params = dict(zip(names, leaves, strict=True))
    head = str(len(module) - 1)
    body = module[:-1]
    allowed = torch.tensor(sorted(labels))

    def forward(p, x):
        f = functional_call(body, {k: v for k, v in p.items() if not k.startswith(head)}, (x,))
        return f @ p[f"{head}.weight"].T + p[f"{head}.bias"]

    def loss(p, batch):
        x, y = batch
        return nn.functional.cross_entropy(
            forward(p, x)[:, allowed], torch.searchsorted(allowed, y)
        )

    xs, ys = support
    f = functional_call(body, {k: v for k, v in params.items() if not k.startswith(head)}, (xs,))
    weight, bias = params[f"{head}.weight"], params[f"{head}.bias"]
    new_w, new_b = list(weight), list(bias)
    for c in sorted(set(ys.tolist())):
        mu = f[ys == c].mean(0)
        new_w[c], new_b[c] = 2 * mu, -(mu * mu).sum()
    phi = {**params, f"{head}.weight": torch.stack(new_w), f"{head}.bias": torch.stack(new_b)}
    # The inner gradient is w.r.t. φ_0's own entries (head rows independent of the body).
    start = {k: v.detach().requires_grad_(True) for k, v in phi.items()}
    grads = torch.autograd.grad(loss(start, support), list(start.values()))
    phi = {k: v - alpha * g.detach() for (k, v), g in zip(phi.items(), grads, strict=True)}
    meta = torch.autograd.grad(loss(phi, query), leaves)
    return torch.cat([(p - lr * g).reshape(-1) for p, g in zip(leaves, meta, strict=True)])


def test_fomaml_episode_with_a_prototype_head_equals_a_plain_pytorch_loop():
    model = build_model(ModelConfig(hidden=(16,)), (64,), 10)
    theta = model.init_flat(2)
    gen = torch.Generator().manual_seed(5)
    x, y = torch.rand(60, 64, generator=gen), torch.arange(60) % 6
    cfg = GFMLConfig(
        episodes="labels", episode_head="prototype", inner_lr=0.3, lr=0.1, batch_size=20
    )
    out, _ = meta_update(cfg, model, theta, x, y, np.random.default_rng(4))
    # The same episode, drawn as meta_update draws it.
    query = max(cfg.episode_shots, cfg.batch_size // EPISODE_LABELS[1])
    episode = label_episode(x, y, cfg.episode_shots, query, np.random.default_rng(4))
    assert episode is not None
    labels, support, query_batch = episode
    expected = _plain_fomaml_with_prototypes(
        model.module, theta, labels, support, query_batch, 0.3, 0.1
    )
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-6)
    # The prototypes matter: the linear head takes another step.
    linear, _ = meta_update(
        GFMLConfig(episodes="labels", inner_lr=0.3, lr=0.1, batch_size=20),
        model,
        theta,
        x,
        y,
        np.random.default_rng(4),
    )
    assert not torch.allclose(out, linear)


@pytest.mark.parametrize("learner", ["maml", "reptile"])
@pytest.mark.parametrize("episodes", ["batch", "labels"])
def test_every_learner_takes_a_prototype_step(learner, episodes):
    model = build_model(ModelConfig(hidden=(8,)), (64,), 10)
    theta = model.init_flat(0)
    x, y = torch.rand(40, 64), torch.arange(40) % 10
    steps = {}
    for head in ("linear", "prototype"):
        cfg = GFMLConfig(meta_learner=learner, episodes=episodes, episode_head=head, lr=0.5)
        steps[head], loss = meta_update(cfg, model, theta, x, y, np.random.default_rng(1))
        assert np.isfinite(loss) and torch.isfinite(steps[head]).all()
    assert not torch.allclose(steps["linear"], steps["prototype"])


def test_unknown_episode_head_is_one_line():
    from dfml.errors import ConfigError

    with pytest.raises(ConfigError, match="episode_head must be one of linear, prototype"):
        GFMLConfig(episode_head="cosine")
