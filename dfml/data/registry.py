"""The dataset registry: one name → loader table.

Heavy libraries (torchvision, medmnist) are imported only when their
datasets are asked for, so actors running ``digits`` start fast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from dfml.data.builtin import load_digits, load_mnist_5k, make_synthetic
from dfml.data.config import DataConfig
from dfml.data.dataset import ArrayDataset
from dfml.data.files import check_root
from dfml.errors import ConfigError

TORCHVISION_NAMES = ("mnist", "fashion-mnist", "emnist", "cifar10", "cifar100")
MEDMNIST_PREFIX = "medmnist:"
DATASETS: tuple[str, ...] = (
    "digits",
    "mnist-5k",
    "synthetic",
    *TORCHVISION_NAMES,
    f"{MEDMNIST_PREFIX}<name>",
)


def _root(cfg: DataConfig) -> Path:
    if cfg.data_root is None:
        raise ConfigError(f"dataset {cfg.dataset!r} reads files: give --data-root DIR")
    root = Path(cfg.data_root).expanduser()
    check_root(root)
    return root


def _torchvision(cfg: DataConfig) -> ArrayDataset:
    from dfml.data.torchvision_sets import load_torchvision

    return load_torchvision(cfg.dataset, _root(cfg), cfg.download)


def _medmnist(cfg: DataConfig) -> ArrayDataset:
    from dfml.data.medmnist_sets import load_medmnist

    return load_medmnist(cfg.dataset.removeprefix(MEDMNIST_PREFIX), _root(cfg), cfg.download)


def _synthetic(cfg: DataConfig) -> ArrayDataset:
    return make_synthetic(cfg.synthetic_samples, cfg.synthetic_classes, cfg.synthetic_shape)


_LOADERS: dict[str, Callable[[DataConfig], ArrayDataset]] = {
    "digits": lambda cfg: load_digits(),
    "mnist-5k": lambda cfg: load_mnist_5k(),
    "synthetic": _synthetic,
    **dict.fromkeys(TORCHVISION_NAMES, _torchvision),
}


@functools.lru_cache(maxsize=2)
def load_dataset(cfg: DataConfig) -> ArrayDataset:
    """Load the dataset ``cfg`` names (cached per process: actors share it)."""
    if cfg.dataset.startswith(MEDMNIST_PREFIX):
        return _medmnist(cfg)
    loader = _LOADERS.get(cfg.dataset)
    if loader is None:
        raise ConfigError(f"unknown dataset {cfg.dataset!r}; allowed: {', '.join(DATASETS)}")
    return loader(cfg)
