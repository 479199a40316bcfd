"""model_size: the parameter count of a model, measured without allocating it (no Ray)."""

from __future__ import annotations

import pytest

from dfml.errors import ConfigError
from dfml.models.zoo import ModelConfig, build_model, model_size


@pytest.mark.parametrize(
    ("model", "shape"),
    [("mlp", (1, 8, 8)), ("cnn", (1, 28, 28)), ("resnet-lite", (3, 32, 32))],
)
def test_model_size_equals_the_built_models(model, shape):
    cfg = ModelConfig(model=model, hidden=(16, 8))
    assert model_size(cfg, shape, 10) == build_model(cfg, shape, 10).size


def test_a_huge_mlp_is_measured_not_allocated():
    # 64 inputs -> 10**9 -> 10 classes: 64e9 + 1e9 + 10e9 + 10 parameters, by hand
    assert model_size(ModelConfig(model="mlp", hidden=(10**9,)), (1, 8, 8), 10) == (
        64 * 10**9 + 10**9 + 10 * 10**9 + 10
    )
    with pytest.raises(ConfigError, match="cannot be built"):
        model_size(ModelConfig(model="mlp", hidden=(10**18,)), (1, 8, 8), 10)
