"""The model zoo: multinomial logistic regression, MLP, the 2-conv CNN of the
FL literature, a ResNet-lite.

All are plain buffer-free ``nn.Module`` skeletons; :func:`build_model` wraps
one in a :class:`~dfml.models.flat.FlatModel`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dfml.errors import ConfigError
from dfml.models.flat import FlatModel


@dataclass(frozen=True)
class ModelConfig:
    """Which architecture, and its width knobs.

    Attributes:
        model: a name in :data:`MODELS`, or ``auto`` (:func:`default_model_name`):
            ``linear`` (multinomial logistic regression), ``mlp``, ``cnn``,
            ``resnet-lite``.
        hidden: the MLP's hidden layer widths, one layer per entry: ``(128,)``
            is one hidden layer, ``(64, 64)`` (the default, the MLP this
            project always had) two. A plain int ``n`` means ``(n,)``, as
            ``--hidden n`` does on the command line. The CNN has one fully
            connected hidden layer of ``4 * hidden[0]`` units (256 by default).
        dropout: CNN dropout before each fully connected layer.
    """

    model: str = "auto"
    hidden: tuple[int, ...] = (64, 64)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.model != "auto" and self.model not in MODELS:
            raise ConfigError(
                f"unknown model {self.model!r}; allowed: auto, {', '.join(sorted(MODELS))}"
            )
        object.__setattr__(self, "hidden", _widths(self.hidden))
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


def _widths(hidden: object) -> tuple[int, ...]:
    """``hidden`` as a non-empty tuple of positive ints (a bare int is one layer)."""
    items = [hidden] if isinstance(hidden, int) else hidden
    if not isinstance(items, list | tuple) or not items:
        raise ConfigError(f"model hidden widths must be one or more ints >= 1, got {hidden!r}")
    if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in items):
        raise ConfigError(f"model hidden widths must be ints >= 1, got {hidden!r}")
    return tuple(items)


def linear(input_shape: tuple[int, ...], num_classes: int, cfg: ModelConfig) -> nn.Module:
    """Multinomial logistic regression: one affine map of the flattened input to
    the class logits (softmax cross-entropy is the loss). The smallest model
    that learns a separable task — (d + 1)·K parameters, 650 on 64-dim data
    with 10 classes against the MLP's 8,970 — for runs where the number of
    clients, not the model, is what is being scaled."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def mlp(input_shape: tuple[int, ...], num_classes: int, cfg: ModelConfig) -> nn.Module:
    """ReLU hidden layers of widths ``cfg.hidden`` on the flattened input."""
    widths = [math.prod(input_shape), *cfg.hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for d_in, d_out in itertools.pairwise(widths):
        layers += [nn.Linear(d_in, d_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], num_classes))


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
        nn.Linear(64 * h * w, 4 * cfg.hidden[0]),
        nn.ReLU(),
        nn.Dropout(cfg.dropout),
        nn.Linear(4 * cfg.hidden[0], num_classes),
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
    "linear": linear,
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


def model_size(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> int:
    """The number of parameters ``build_model`` would give, without allocating them.

    The model is built on PyTorch's ``meta`` device (shapes, no storage), so
    a width too large for any machine is measured, not allocated. A size
    PyTorch cannot even describe is one ``ConfigError`` line.
    """
    try:
        with torch.device("meta"):
            return build_model(cfg, input_shape, num_classes).size
    except (RuntimeError, OverflowError, ValueError) as err:
        reason = " ".join(str(err).split())[:160]
        raise ConfigError(
            f"the model with --hidden {cfg.hidden} cannot be built ({reason})"
        ) from None
