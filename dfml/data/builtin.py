"""Datasets that need no files: scikit-learn's digits and synthetic Gaussians."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits as _sk_load_digits

from dfml.data.dataset import ArrayDataset


def load_digits() -> ArrayDataset:
    """1,797 real 8×8 handwritten digits bundled with scikit-learn (no download).

    Pixel values are 0..16; they are kept as ``(n, 1, 8, 8)`` images so that
    both the MLP and the CNN can consume them.
    """
    bunch = _sk_load_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :]
    return ArrayDataset("digits", x, bunch.target.astype(np.int64), 10, scale=16.0)


def make_synthetic(
    num_samples: int = 2000,
    num_classes: int = 10,
    shape: tuple[int, ...] = (1, 28, 28),
    separation: float = 1.0,
    seed: int = 0,
) -> ArrayDataset:
    """Class-conditional Gaussians: sample of class c is ``N(mu_c, I)``.

    The class means are drawn once from ``N(0, separation² / dim)·√dim`` so
    that the task difficulty does not depend on the input size.
    """
    rng = np.random.default_rng(seed)
    dim = int(np.prod(shape))
    means = rng.normal(0.0, separation, size=(num_classes, dim)).astype(np.float32)
    y = np.arange(num_samples) % num_classes
    rng.shuffle(y)
    x = means[y] + rng.normal(0.0, 1.0, size=(num_samples, dim)).astype(np.float32)
    return ArrayDataset(
        "synthetic", x.reshape(num_samples, *shape), y.astype(np.int64), num_classes
    )
