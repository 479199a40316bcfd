"""Aggregation math: pure functions over flat parameter vectors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


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


def stacked_weighted_averages(
    own: torch.Tensor,
    self_weights: Sequence[float],
    neighbors: Sequence[Sequence[np.ndarray]],
    weights: Sequence[Sequence[float]],
) -> torch.Tensor:
    """:func:`weighted_average` of every row of a cohort, in place in ``own`` [C, P].

    Row c becomes w_cc·own_c + Σ_k w_ck·x_ck with the arithmetic of
    ``weighted_average([own_c, *neighbors[c]], [self_weights[c], *weights[c]])``:
    float32 products, each rounded, added in the neighbours' order — so every
    row has the bits of the per-client call, whichever rows share the matrix.
    One product and one sum per neighbour *slot* k over the rows that have a
    k-th neighbour, instead of two numpy calls and a new array per client (a
    third of a round's Python time at 10,000 clients).
    """
    if not (len(own) == len(self_weights) == len(neighbors) == len(weights)):
        raise ValueError(
            f"{len(own)} rows, {len(self_weights)} self weights, {len(neighbors)} neighbour "
            f"lists and {len(weights)} weight lists"
        )
    for c, (vectors, ws) in enumerate(zip(neighbors, weights, strict=True)):
        if len(vectors) != len(ws):
            raise ValueError(f"row {c}: {len(vectors)} vectors but {len(ws)} weights")
    dtype = own.dtype
    own.mul_(torch.tensor(self_weights, dtype=dtype, device=own.device)[:, None])
    for k in range(max((len(v) for v in neighbors), default=0)):
        rows = [c for c, v in enumerate(neighbors) if len(v) > k]
        # A float16 vector is widened exactly, as numpy's float32 product widens it.
        x = torch.from_numpy(np.stack([neighbors[c][k] for c in rows]))
        x = x.to(device=own.device, dtype=dtype)
        w = torch.tensor([weights[c][k] for c in rows], dtype=dtype, device=own.device)[:, None]
        if len(rows) == len(own):
            own.add_(x.mul_(w))
        else:
            index = torch.tensor(rows, device=own.device)
            own.index_copy_(0, index, own.index_select(0, index).add_(x.mul_(w)))
    return own
