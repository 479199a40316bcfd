from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import vector_to_parameters

from dfml.errors import ConfigError
from dfml.models.flat import FlatModel
from dfml.models.zoo import ModelConfig, build_model


@pytest.mark.parametrize(
    ("name", "shape"), [("mlp", (1, 8, 8)), ("cnn", (1, 28, 28)), ("resnet-lite", (3, 32, 32))]
)
def test_functional_call_equals_module_with_loaded_vector(name, shape):
    model = build_model(ModelConfig(model=name, hidden=8), shape, 10)
    flat = torch.randn(model.size) * 0.05
    x = torch.randn(3, *shape)
    vector_to_parameters(flat, model.module.parameters())
    model.module.eval()
    torch.testing.assert_close(model(flat, x), model.module(x))


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
