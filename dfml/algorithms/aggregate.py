"""Aggregation math: pure functions over flat parameter vectors."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from dfml.channels import row_runs


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


#: Bytes of one vector block the fused mixing (:func:`stacked_weighted_averages`)
#: works on at a time: its own rows, each neighbour slot's rows and one product
#: buffer stay in the core's cache between the products and the sums.
MIX_BLOCK_BYTES = 256 * 2**10


def stacked_weighted_averages(
    own: torch.Tensor | Sequence[torch.Tensor],
    self_weights: Sequence[float],
    neighbors: Sequence[Sequence[np.ndarray]],
    weights: Sequence[Sequence[float]],
) -> torch.Tensor:
    """:func:`weighted_average` of every row of a cohort: ``own`` [C, P] mixed
    in place, or ``own`` as C vectors mixed into a new [C, P] matrix.

    Row c becomes w_cc·own_c + Σ_k w_ck·x_ck with the arithmetic of
    ``weighted_average([own_c, *neighbors[c]], [self_weights[c], *weights[c]])``:
    float32 products, each rounded, added in the neighbours' order — so every
    row has the bits of the per-client call, whichever rows share the matrix.

    On CPU, when every client has the same number of neighbours and the
    vectors of each slot (own, first neighbour, …) lie in a few runs of
    consecutive rows (:func:`row_runs`: a ring over packed objects), the
    products and sums run block by block of :data:`MIX_BLOCK_BYTES` where
    the vectors lie: one read of each vector and one write of the result,
    where stacking and whole-matrix passes read and wrote the cohort's
    vectors eight times (most of the mixing's cost at 10,000 clients).
    Otherwise one product and one sum per neighbour slot over the rows that
    have a k-th neighbour.
    """
    if not (len(own) == len(self_weights) == len(neighbors) == len(weights)):
        raise ValueError(
            f"{len(own)} rows, {len(self_weights)} self weights, {len(neighbors)} neighbour "
            f"lists and {len(weights)} weight lists"
        )
    for c, (vectors, ws) in enumerate(zip(neighbors, weights, strict=True)):
        if len(vectors) != len(ws):
            raise ValueError(f"row {c}: {len(vectors)} vectors but {len(ws)} weights")
    fused = _fused_mix(own, self_weights, neighbors, weights)
    if fused is not None:
        return fused
    if not isinstance(own, torch.Tensor):
        own = torch.stack([v.detach() for v in own])
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


def _fused_mix(
    own: torch.Tensor | Sequence[torch.Tensor],
    self_weights: Sequence[float],
    neighbors: Sequence[Sequence[np.ndarray]],
    weights: Sequence[Sequence[float]],
) -> torch.Tensor | None:
    """:func:`stacked_weighted_averages` block by block where the vectors lie,
    or ``None`` where that does not apply (see there)."""
    if isinstance(own, torch.Tensor):
        if own.device.type != "cpu" or own.dtype != torch.float32 or not own.is_contiguous():
            return None
        out = own
        sources: list[tuple[int, int, np.ndarray]] | None = [(0, len(own), own.numpy())]
    else:
        if any(v.device.type != "cpu" or v.dtype != torch.float32 for v in own):
            return None
        sources = row_runs([v.detach().numpy() for v in own])
        if sources is None:
            return None
        out = torch.empty((len(own), *own[0].shape), dtype=torch.float32)
    degree = len(neighbors[0]) if neighbors else 0
    if not neighbors or any(len(v) != degree for v in neighbors):
        return None
    slots = [sources]
    for k in range(degree):
        runs = row_runs([v[k] for v in neighbors])
        if runs is None or runs[0][2].shape[1:] != out.shape[1:]:
            return None
        slots.append(runs)
    columns = np.asarray([self_weights, *zip(*weights, strict=True)], dtype=np.float32)
    columns = columns.reshape(degree + 1, len(out))[:, :, None]
    target = out.numpy()
    rows = max(1, MIX_BLOCK_BYTES // max(1, target[0].nbytes))
    product = np.empty((rows, *target.shape[1:]), dtype=np.float32)
    cuts = sorted({start for runs in slots for start, _, _ in runs} | {len(out)})
    where = [0] * len(slots)  # each slot's run holding the current segment
    for begin, end in itertools.pairwise(cuts):
        for i, runs in enumerate(slots):
            while runs[where[i]][1] <= begin:
                where[i] += 1
        for a in range(begin, end, rows):
            b = min(a + rows, end)
            dst = target[a:b]
            for i, runs in enumerate(slots):
                start, _, block = runs[where[i]]
                src = block[a - start : b - start]
                if i == 0:
                    np.multiply(src, columns[0, a:b], out=dst)
                else:
                    tmp = product[: b - a]
                    np.multiply(src, columns[i, a:b], out=tmp)
                    np.add(dst, tmp, out=dst)
    return out
