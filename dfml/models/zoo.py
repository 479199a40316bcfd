"""The model zoo: MLP, the 2-conv CNN of the FL literature, a ResNet-lite.

All are plain buffer-free ``nn.Module`` skeletons; :func:`build_model` wraps
one in a :class:`~dfml.models.flat.FlatModel`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from dfml.errors import ConfigError
from dfml.models.flat import FlatModel


@dataclass(frozen=True)
class ModelConfig:
    """Which architecture, and its width knobs."""

    model: str = "auto"
    hidden: int = 64
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.model != "auto" and self.model not in MODELS:
            raise ConfigError(
                f"unknown model {self.model!r}; allowed: auto, {', '.join(sorted(MODELS))}"
            )
        if self.hidden < 1:
            raise ConfigError(f"model hidden width must be >= 1, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


def mlp(input_shape: tuple[int, ...], num_classes: int, cfg: ModelConfig) -> nn.Module:
    """Two hidden ReLU layers on the flattened input."""
    d = math.prod(input_shape)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(d, cfg.hidden),
        nn.ReLU(),
        nn.Linear(cfg.hidden, cfg.hidden),
        nn.ReLU(),
        nn.Linear(cfg.hidden, num_classes),
    )


def cnn(input_shape: tuple[int, ...], num_classes: int, cfg: ModelConfig) -> nn.Module:
    """The 2-conv CNN: 5×5 convs (32, 64 ch), ReLU, 3×3 max-pool stride 2, 2 FC + dropout."""
    if len(input_shape) != 3:
        raise ConfigError(f"cnn needs image input (C, H, W), got shape {input_shape}")
    c, h, w = input_shape
    body = nn.Sequential(
        nn.Conv2d(c, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Flatten(),
    )
    for _ in range(2):
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return nn.Sequential(
        body,
        nn.Dropout(cfg.dropout),
        nn.Linear(64 * h * w, 4 * cfg.hidden),
        nn.ReLU(),
        nn.Dropout(cfg.dropout),
        nn.Linear(4 * cfg.hidden, num_classes),
    )


class _Block(nn.Module):
    """Residual block with GroupNorm (no running statistics to keep in sync)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(min(8, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(min(8, cout), cout)
        self.skip = (
            nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(min(8, cout), cout)
            )
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x):
        out = nn.functional.relu(self.norm1(self.conv1(x)))
        return nn.functional.relu(self.norm2(self.conv2(out)) + self.skip(x))


def resnet_lite(input_shape: tuple[int, ...], num_classes: int, cfg: ModelConfig) -> nn.Module:
    """A 3-stage ResNet (16/32/64 channels, one block each) for CIFAR-sized input."""
    if len(input_shape) != 3:
        raise ConfigError(f"resnet-lite needs image input (C, H, W), got shape {input_shape}")
    return nn.Sequential(
        nn.Conv2d(input_shape[0], 16, 3, 1, 1, bias=False),
        nn.GroupNorm(8, 16),
        nn.ReLU(),
        _Block(16, 16, 1),
        _Block(16, 32, 2),
        _Block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )


MODELS: dict[str, Callable[[tuple[int, ...], int, ModelConfig], nn.Module]] = {
    "mlp": mlp,
    "cnn": cnn,
    "resnet-lite": resnet_lite,
}


def default_model_name(input_shape: tuple[int, ...]) -> str:
    """MLP for small inputs (digits, feature vectors), CNN for larger images."""
    if len(input_shape) == 3 and input_shape[1] >= 16:
        return "resnet-lite" if input_shape[0] == 3 else "cnn"
    return "mlp"


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> FlatModel:
    name = default_model_name(input_shape) if cfg.model == "auto" else cfg.model
    return FlatModel(MODELS[name](tuple(input_shape), num_classes, cfg))
