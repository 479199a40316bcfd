"""The head inside a flat vector: where its rows sit and what feeds it."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import vector_to_parameters

from dfml.errors import ConfigError
from dfml.models.flat import FlatModel
from dfml.models.head import head_layout
from dfml.models.zoo import ModelConfig, build_model


@pytest.mark.parametrize(
    ("shape", "name"), [((64,), "mlp"), ((1, 16, 16), "cnn"), ((3, 8, 8), "resnet-lite")]
)
def test_embedding_and_rows_match_the_module_itself(shape, name):
    model = build_model(ModelConfig(model=name, hidden=(8,)), shape, 10)
    layout = head_layout(model)
    flat = model.init_flat(3)
    vector_to_parameters(flat, model.module.parameters())  # the module holds the same numbers
    x = torch.rand(5, *shape)
    with torch.no_grad():
        expected = x
        for layer in list(model.module)[:-1]:
            expected = layer(expected)
        head = model.module[-1]
        torch.testing.assert_close(layout.embed(flat, x), expected)
        assert layout.dim == head.in_features and layout.classes == 10
        rows = layout.rows(flat, [7, 2])
        torch.testing.assert_close(rows[:, :-1], head.weight[[7, 2]])
        torch.testing.assert_close(rows[:, -1], head.bias[[7, 2]])
        # The logits are the embedding times the head: rows say where the head is.
        torch.testing.assert_close(model(flat, x), expected @ head.weight.T + head.bias)


def test_with_rows_replaces_exactly_those_rows():
    model = build_model(ModelConfig(hidden=(4,)), (6,), 5)
    layout = head_layout(model)
    flat = model.init_flat(0)
    new = torch.arange(2 * 5, dtype=torch.float32).view(2, 5)  # d = 4, plus the bias
    out = layout.with_rows(flat, [3, 1], new)
    torch.testing.assert_close(layout.rows(out, [3, 1]), new)
    torch.testing.assert_close(layout.rows(out, [0, 2, 4]), layout.rows(flat, [0, 2, 4]))
    torch.testing.assert_close(out[: layout.weight], flat[: layout.weight])  # the body is kept
    assert torch.equal(layout.with_rows(flat, [], new[:0]), flat)
    # Differentiable in the rows (a prototype is a function of the body).
    rows = new.clone().requires_grad_(True)
    layout.with_rows(flat, [3, 1], rows).sum().backward()
    assert torch.equal(rows.grad, torch.ones_like(rows))


def test_a_model_without_a_linear_head_is_one_line():
    with pytest.raises(ConfigError, match=r"nn\.Sequential ending with nn\.Linear, got Linear"):
        head_layout(FlatModel(nn.Linear(3, 2)))
    with pytest.raises(ConfigError, match="got Sequential ending with ReLU"):
        head_layout(FlatModel(nn.Sequential(nn.Linear(3, 2), nn.ReLU())))
    with pytest.raises(ConfigError, match="with a bias"):
        head_layout(FlatModel(nn.Sequential(nn.Linear(3, 2, bias=False))))
