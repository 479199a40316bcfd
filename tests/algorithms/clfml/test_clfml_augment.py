"""CL-FML phase 5: the label-conditional VAE and same-label MixUp."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfml.algorithms.clfml.augment import ConditionalVAE, generate_missing, mixup_same_label
from dfml.errors import ConfigError


def _data(n=64, d=16, classes=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(classes, d, generator=g) > 0.5).float()
    y = torch.arange(n) % classes
    noise = 0.1 * torch.rand(n, d, generator=g)
    return (prototypes[y] * 0.9 + noise).clamp(0, 1), y


def test_parameter_count_and_flat_view():
    vae = ConditionalVAE(16, 3, latent=4, hidden=10)
    expected = (16 + 3) * 10 + 10 + 10 * 8 + 8 + (4 + 3) * 10 + 10 + 10 * 16 + 16
    assert vae.num_parameters == expected == sum(p.numel() for p in vae.parameters())
    flat = vae.flat()
    assert flat.dtype == torch.float32 and flat.shape == (expected,)
    assert vae.flat_model().size == expected
    assert ConditionalVAE(784, 10).num_parameters < 120_000  # small enough for clients


def test_loss_decreases():
    torch.manual_seed(0)
    x, y = _data()
    vae = ConditionalVAE(16, 2, latent=4, hidden=32)

    def eval_loss():
        with torch.no_grad():
            return float(vae.loss(x, y, torch.Generator().manual_seed(123)))

    start = eval_loss()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(60):
        opt.zero_grad()
        vae.loss(x, y, g).backward()
        opt.step()
    assert eval_loss() < 0.7 * start


def test_flat_params_path_matches_module_and_gets_gradients():
    torch.manual_seed(0)
    x, y = _data(n=8)
    vae = ConditionalVAE(16, 2)
    params = vae.flat().requires_grad_(True)
    a = vae.loss(x, y, torch.Generator().manual_seed(5))
    b = vae.loss(x, y, torch.Generator().manual_seed(5), params=params)
    torch.testing.assert_close(a, b)
    b.backward()
    assert params.grad is not None and params.grad.abs().sum() > 0
    # A different vector gives a different loss: the module's own parameters are not used.
    c = vae.loss(x, y, torch.Generator().manual_seed(5), params=params.detach() * 0)
    assert not torch.isclose(a, c)
    labels = torch.tensor([0, 1, 1])
    torch.testing.assert_close(
        vae.sample(labels, torch.Generator().manual_seed(2)),
        vae.sample(labels, torch.Generator().manual_seed(2), params=params.detach()),
    )


def test_samples_shape_range_and_determinism():
    torch.manual_seed(0)
    vae = ConditionalVAE(12, 5)
    labels = torch.tensor([4, 0, 0, 3, 1])
    s = vae.sample(labels, torch.Generator().manual_seed(9))
    assert s.shape == (5, 12) and not s.requires_grad
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    torch.testing.assert_close(s, vae.sample(labels, torch.Generator().manual_seed(9)))


def test_image_shaped_inputs_are_flattened():
    vae = ConditionalVAE(16, 2)
    x = torch.rand(3, 1, 4, 4)
    assert vae.loss(x, torch.tensor([0, 1, 0])).ndim == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda v: v.sample(torch.tensor([0, 3])), r"^label index 3 outside 0..2$"),
        (lambda v: v.sample(torch.tensor([-1])), r"^label index -1 outside 0..2$"),
        (lambda v: v.sample(torch.tensor([0.5])), "1-D integer tensor"),
        (lambda v: v.loss(torch.rand(2, 5), torch.tensor([0, 1])), "5 features, expected 4"),
        (lambda v: v.loss(torch.rand(2, 4) + 1, torch.tensor([0, 1])), r"in \[0, 1\]"),
        (lambda v: v.loss(torch.rand(2, 4), torch.tensor([0])), "2 inputs but 1 labels"),
    ],
)
def test_vae_errors(call, message):
    with pytest.raises(ConfigError, match=message):
        call(ConditionalVAE(4, 3))


def test_vae_bad_sizes():
    with pytest.raises(ConfigError, match=r"^latent must be an integer >= 1, got 0$"):
        ConditionalVAE(4, 3, latent=0)
    with pytest.raises(ConfigError, match=r"^input_dim must be an integer >= 1, got 2.0$"):
        ConditionalVAE(2.0, 3)


def test_mixup_keeps_labels_and_stays_on_segments():
    rng_t = torch.Generator().manual_seed(0)
    x = torch.rand(9, 6, generator=rng_t, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 2, 1, 2, 3, 4, 4])  # label 3 has a single sample
    mixed, y_out = mixup_same_label(x, y, alpha=0.4, rng=np.random.default_rng(1))
    assert torch.equal(y_out, y)
    assert torch.equal(mixed[6], x[6])  # alone in its label: mixes with itself
    for label in (0, 1, 2, 4):
        a, b = torch.nonzero(y == label).flatten().tolist()
        for i in (a, b):
            # x̃_i = x_a + t (x_b − x_a) for one t ∈ [0, 1]: on the segment between the two.
            diff = x[b] - x[a]
            t = float((mixed[i] - x[a]) @ diff / (diff @ diff))
            assert -1e-12 <= t <= 1 + 1e-12
            torch.testing.assert_close(mixed[i], x[a] + t * diff)
    again, _ = mixup_same_label(x, y, alpha=0.4, rng=np.random.default_rng(1))
    assert torch.equal(mixed, again)


def test_mixup_stays_in_each_labels_box_for_larger_groups():
    x = torch.rand(40, 3, 2, 2)
    y = torch.arange(40) % 3
    mixed, _ = mixup_same_label(x, y, alpha=1.0, rng=np.random.default_rng(0))
    assert mixed.shape == x.shape
    for label in range(3):
        group, out = x[y == label], mixed[y == label]
        assert torch.all(out >= group.min(dim=0).values - 1e-6)
        assert torch.all(out <= group.max(dim=0).values + 1e-6)
    assert not torch.equal(mixed, x)


def test_mixup_errors():
    x, y = torch.rand(2, 3), torch.tensor([0, 0])
    with pytest.raises(ConfigError, match="alpha must be a positive number, got 0"):
        mixup_same_label(x, y, 0, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="2 samples but 1 labels"):
        mixup_same_label(x, y[:1], 1.0, np.random.default_rng(0))


def test_generate_missing():
    vae = ConditionalVAE(10, 4)
    x, y = generate_missing(
        vae,
        [3, 1],
        per_label=5,
        alpha=0.3,
        generator=torch.Generator().manual_seed(0),
        rng=np.random.default_rng(0),
    )
    assert x.shape == (10, 10) and torch.equal(y, torch.tensor([1] * 5 + [3] * 5))
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    x0, y0 = generate_missing(vae, [], 5, 0.3, torch.Generator(), np.random.default_rng(0))
    assert x0.shape == (0, 10) and y0.shape == (0,)
