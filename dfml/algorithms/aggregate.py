"""Aggregation math: pure functions over flat parameter vectors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def weighted_average(vectors: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Σ_j w_j x_j in float32, accumulated in the given order.

    The weights are used as given (a row of a mixing matrix sums to 1); the
    order is fixed so that every process computes the same bits.
    """
    if len(vectors) != len(weights) or not vectors:
        raise ValueError(f"{len(vectors)} vectors but {len(weights)} weights")
    out = np.multiply(vectors[0], np.float32(weights[0]), dtype=np.float32)
    for v, w in zip(vectors[1:], weights[1:], strict=True):
        out += np.float32(w) * v
    return out


def data_size_weights(sizes: Sequence[int]) -> np.ndarray:
    """FedAvg's n_k / Σ n weights."""
    s = np.asarray(sizes, dtype=np.float64)
    if s.ndim != 1 or len(s) == 0 or (s <= 0).any():
        raise ValueError(f"sizes must be positive, got {list(sizes)}")
    return s / s.sum()
