"""Label-subset episodes and the loss over a task's own logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.contexts import make_contexts

from dfml.algorithms.gfml import GFMLConfig, meta_update
from dfml.algorithms.meta.episodes import label_episode, restricted_loss


def test_restricted_loss_is_cross_entropy_over_the_labels_logits():
    torch.manual_seed(0)
    logits = torch.randn(4, 6)
    model = lambda params, x: logits * params  # noqa: E731  (a stand-in FlatModel)
    y = torch.tensor([5, 1, 5, 3])
    got = restricted_loss(model, [5, 1, 3])(torch.tensor(1.0), torch.zeros(4), y)
    # By hand: softmax over columns (1, 3, 5), target positions 2, 0, 2, 1.
    sub = logits[:, [1, 3, 5]]
    expected = -(sub.log_softmax(1)[torch.arange(4), torch.tensor([2, 0, 2, 1])]).mean()
    torch.testing.assert_close(got, expected)


def test_label_episode_shape():
    y = torch.tensor([0] * 6 + [1] * 6 + [2] * 6 + [3] * 6 + [4] * 1)
    x = torch.arange(len(y), dtype=torch.float32)[:, None]
    sizes, dropped = set(), 0
    for seed in range(60):
        labels, (sx, sy), (qx, qy) = label_episode(x, y, 2, 3, np.random.default_rng(seed))
        sizes.add(len(labels))
        assert set(labels) <= {0, 1, 2, 3}  # label 4 has one sample: never in an episode
        assert set(qy.tolist()) == set(labels)
        assert not set(sx[:, 0].tolist()) & set(qx[:, 0].tolist())  # disjoint
        per_label = {c: int((sy == c).sum()) for c in labels}
        assert all(v <= 2 for v in per_label.values())
        assert all(int((qy == c).sum()) <= 3 for c in labels)
        missing = [c for c, v in per_label.items() if v == 0]
        assert len(missing) <= 1 and (not missing or len(labels) > 2)
        dropped += len(missing)
    assert sizes == {2, 3, 4} and dropped > 0


def test_label_episode_needs_two_labels_with_two_samples():
    y = torch.tensor([0, 0, 1])
    assert label_episode(torch.zeros(3, 1), y, 1, 1, np.random.default_rng(0)) is None


def test_labels_episode_fomaml_matches_plain_autograd():
    """One FOMAML update on a label episode, written out with torch.autograd."""
    ctxs, inits = make_contexts(3)
    ctx, theta = ctxs[0], inits[0]
    x, y = ctx.data.x_meta, ctx.data.y_meta
    cfg = GFMLConfig(episodes="labels", episode_shots=2, inner_lr=0.05, inner_steps=2, lr=0.3)
    ours, _ = meta_update(cfg, ctx.model, theta, x, y, np.random.default_rng(7))
    labels, support, query = label_episode(
        x, y, 2, max(2, cfg.batch_size // 5), np.random.default_rng(7)
    )
    allowed = torch.tensor(labels)

    def loss(t, batch):
        bx, by = batch
        return torch.nn.functional.cross_entropy(
            ctx.model(t, bx)[:, allowed], torch.searchsorted(allowed, by)
        )

    phi = theta.detach()
    for _ in range(2):
        leaf = phi.requires_grad_(True)
        phi = (leaf - 0.05 * torch.autograd.grad(loss(leaf, support), leaf)[0]).detach()
    leaf = phi.requires_grad_(True)
    outer = torch.autograd.grad(loss(leaf, query), leaf)[0]
    torch.testing.assert_close(ours, theta - 0.3 * outer, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("value", ["tasks", ""])
def test_bad_episodes_value_is_one_line(value):
    from dfml.errors import ConfigError

    with pytest.raises(ConfigError, match="episodes must be one of batch, labels"):
        GFMLConfig(episodes=value)
