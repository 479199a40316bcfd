from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import vector_to_parameters

from dfml.errors import ConfigError
from dfml.models.flat import FlatModel
from dfml.models.zoo import ModelConfig, build_model


@pytest.mark.parametrize(
    ("name", "shape"),
    [("linear", (1, 8, 8)), ("mlp", (1, 8, 8)), ("cnn", (1, 28, 28)), ("resnet-lite", (3, 32, 32))],
)
def test_functional_call_equals_module_with_loaded_vector(name, shape):
    model = build_model(ModelConfig(model=name, hidden=8), shape, 10)
    flat = torch.randn(model.size) * 0.05
    x = torch.randn(3, *shape)
    vector_to_parameters(flat, model.module.parameters())
    model.module.eval()
    torch.testing.assert_close(model(flat, x), model.module(x))


def test_linear_is_multinomial_logistic_regression():
    """``--model linear``: logits x·W^T + b of the flattened input, (d + 1)·K
    parameters laid out W then b in the flat vector; its softmax cross-entropy
    gradient is (softmax − onehot)ᵀ x / n, computed here by hand."""
    model = build_model(ModelConfig(model="linear"), (1, 8, 8), 10)
    assert model.size == 65 * 10
    flat = torch.randn(model.size, dtype=torch.float32) * 0.1
    w, b = flat[:640].view(10, 64), flat[640:]
    x, y = torch.randn(5, 1, 8, 8), torch.tensor([0, 3, 9, 3, 1])
    torch.testing.assert_close(model(flat, x), x.flatten(1) @ w.T + b)
    leaf = flat.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(leaf, x), y).backward()
    err = torch.softmax(x.flatten(1) @ w.T + b, 1) - torch.nn.functional.one_hot(y, 10)
    torch.testing.assert_close(
        leaf.grad, torch.cat([(err.T @ x.flatten(1)).flatten(), err.sum(0)]) / 5
    )


def test_gradient_reaches_the_flat_vector():
    model = build_model(ModelConfig(model="mlp", hidden=4), (5,), 3)
    flat = model.init_flat(0).requires_grad_(True)
    model(flat, torch.randn(2, 5)).sum().backward()
    assert flat.grad is not None and flat.grad.shape == flat.shape and flat.grad.abs().sum() > 0


def test_init_is_seeded_and_does_not_touch_global_rng():
    model = build_model(ModelConfig(model="cnn", hidden=8), (1, 28, 28), 10)
    state = torch.random.get_rng_state()
    a, b, c = model.init_flat(1), model.init_flat(1), model.init_flat(2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cnn_shape_is_the_two_conv_architecture():
    convs = [
        m
        for m in build_model(ModelConfig(model="cnn"), (1, 28, 28), 10).module.modules()
        if isinstance(m, nn.Conv2d)
    ]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(32, (5, 5)), (64, (5, 5))]


def test_buffers_are_rejected_and_bad_config_is_a_user_error():
    with pytest.raises(ValueError, match="buffers"):
        FlatModel(nn.BatchNorm1d(3))
    with pytest.raises(ConfigError, match="unknown model 'vgg'"):
        ModelConfig(model="vgg")
    with pytest.raises(ConfigError, match="image input"):
        build_model(ModelConfig(model="cnn"), (64,), 10)


def _old_default_mlp(d: int, num_classes: int) -> nn.Module:
    """The MLP exactly as it was built before ``hidden`` became a tuple."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(d, 64),
        nn.ReLU(),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def test_default_mlp_is_bit_identical_to_the_old_one():
    assert ModelConfig().hidden == (64, 64)
    new = build_model(ModelConfig(model="mlp"), (1, 8, 8), 10)
    old = FlatModel(_old_default_mlp(64, 10))
    assert new.size == old.size == 64 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10
    assert new.names == old.names and new.shapes == old.shapes
    for seed in (0, 7):
        assert torch.equal(new.init_flat(seed), old.init_flat(seed))


@pytest.mark.parametrize(
    ("hidden", "expected"),
    [
        ((128,), 64 * 128 + 128 + 128 * 10 + 10),
        (128, 64 * 128 + 128 + 128 * 10 + 10),  # a bare int is one layer, as --hidden 128
        ((64, 32), 64 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10),
        ([16, 16, 16], 64 * 16 + 16 + 2 * (16 * 16 + 16) + 16 * 10 + 10),
    ],
)
def test_mlp_has_one_hidden_layer_per_width(hidden, expected):
    cfg = ModelConfig(model="mlp", hidden=hidden)
    assert isinstance(cfg.hidden, tuple)
    model = build_model(cfg, (64,), 10)
    assert model.size == expected
    linears = [m for m in model.module.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [*cfg.hidden, 10]
    assert model(model.init_flat(0), torch.randn(2, 64)).shape == (2, 10)


def test_cnn_keeps_its_default_width():
    fc = [
        m
        for m in build_model(ModelConfig(model="cnn"), (1, 28, 28), 10).module.modules()
        if isinstance(m, nn.Linear)
    ]
    assert [m.out_features for m in fc] == [256, 10]


@pytest.mark.parametrize("hidden", [(), (0,), (64, -1), (64, 1.5), True, "64", None])
def test_bad_hidden_widths_are_a_user_error(hidden):
    with pytest.raises(ConfigError, match="hidden widths"):
        ModelConfig(hidden=hidden)
