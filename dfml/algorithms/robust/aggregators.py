"""Robust aggregation rules: pure functions of flat parameter vectors.

Each takes the vectors a client (or the server) combines and returns one
vector; none knows which inputs come from attackers. Their *breakdown
point* is the fraction of arbitrary inputs they survive:

* :func:`coordinate_median` — each coordinate's median: fewer than half of
  the inputs arbitrary leave it inside the honest inputs' range.
* :func:`trimmed_mean` — drop the ⌈b·n⌉ largest and smallest values of each
  coordinate, average the rest: with at most b·n arbitrary inputs the result
  lies within the honest inputs' min and max.
* :func:`krum` — Krum / multi-Krum (Blanchard et al., 2017): score each
  input by the summed squared distances to its n − f − 2 nearest others,
  average the m best; with n > 2f + 2 the best-scored input is close to the
  honest ones.
* :func:`clipped_gossip` — ClippedGossip (He, Karimireddy & Jaggi, 2022):
  x_i + Σ_j w_ij · clip(x_j − x_i, τ_i), every neighbour's pull bounded by
  τ_i, so an attacker moves x_i by at most w_ij τ_i per round whatever it
  sends; :func:`adaptive_radius` chooses τ_i.

The mean of the aggregated set is weighted where the rule allows (the
client's mixing row); median, trimmed mean and Krum treat their inputs
alike, as their breakdown guarantees are stated for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _stack(vectors: Sequence[np.ndarray]) -> np.ndarray:
    if not len(vectors):
        raise ValueError("no vector to aggregate")
    return np.stack([np.asarray(v, dtype=np.float32) for v in vectors])


def coordinate_median(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """The coordinate-wise median (the mean of the two middle values for an even count)."""
    return np.median(_stack(vectors), axis=0).astype(np.float32)


def trim_count(n: int, fraction: float) -> int:
    """How many values :func:`trimmed_mean` drops at each end: ⌈b·n⌉, at most (n − 1) // 2."""
    if not 0 <= fraction < 0.5:
        raise ValueError(f"the trimmed fraction must be in [0, 0.5), got {fraction}")
    return min(math.ceil(fraction * n - 1e-9), (n - 1) // 2)


def trimmed_mean(vectors: Sequence[np.ndarray], fraction: float) -> np.ndarray:
    """Each coordinate's mean after dropping its ⌈b·n⌉ largest and smallest values."""
    stacked = np.sort(_stack(vectors), axis=0)
    k = trim_count(len(stacked), fraction)
    return stacked[k : len(stacked) - k].mean(axis=0, dtype=np.float64).astype(np.float32)


def krum_scores(vectors: Sequence[np.ndarray], f: int) -> np.ndarray:
    """Krum's score of each input: Σ of its n − f − 2 smallest squared distances to the others."""
    stacked = _stack(vectors).astype(np.float64)
    n = len(stacked)
    if n <= 2 * f + 2:
        raise ValueError(f"Krum needs n > 2f + 2 inputs, got n = {n}, f = {f}")
    sq = (stacked**2).sum(axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * stacked @ stacked.T, 0.0)
    np.fill_diagonal(dist, np.inf)
    return np.sort(dist, axis=1)[:, : n - f - 2].sum(axis=1)


def krum_selection(vectors: Sequence[np.ndarray], f: int, m: int = 1) -> list[int]:
    """The indices of the m best-scored inputs (ties to the lower index)."""
    n = len(vectors)
    if not 1 <= m <= n - f:
        raise ValueError(f"multi-Krum selects 1 <= m <= n - f = {n - f} inputs, got m = {m}")
    scores = krum_scores(vectors, f)
    return sorted(np.argsort(scores, kind="stable")[:m].tolist())


def krum(vectors: Sequence[np.ndarray], f: int, m: int = 1) -> np.ndarray:
    """Krum (m = 1) or multi-Krum: the mean of the m inputs with the lowest scores."""
    chosen = krum_selection(vectors, f, m)
    return _stack([vectors[i] for i in chosen]).mean(axis=0, dtype=np.float64).astype(np.float32)


def clip(vector: np.ndarray, radius: float) -> np.ndarray:
    """``vector`` scaled to norm at most ``radius``: min(1, τ / ‖z‖) · z."""
    norm = float(np.linalg.norm(vector))
    if norm <= radius:
        return vector
    return vector * np.float32(radius / norm)


def adaptive_radius(distances: Sequence[float], weights: Sequence[float], budget: float) -> float:
    """τ_i that clips the farthest neighbours carrying at least ``budget`` of the weight.

    The neighbours are taken from the farthest inwards until their mixing
    weights sum to ``budget`` (δ_i, the weight attackers may hold); τ_i is the
    distance of the next one, so those are pulled in to it and every nearer
    neighbour is untouched. With ``budget`` 0 nothing is clipped. This is
    the practical rule of the ClippedGossip paper, which clips what an
    attacker's share of the weight could hold (the authors' code uses the
    second-largest distance: one neighbour's worth).
    """
    if len(distances) != len(weights):
        raise ValueError(f"{len(distances)} distances but {len(weights)} weights")
    if not distances:
        return 0.0
    order = np.argsort(-np.asarray(distances, dtype=np.float64), kind="stable")
    held = 0.0
    for j in order:
        if held >= budget - 1e-12:
            return float(distances[j])
        held += float(weights[j])
    return 0.0  # the budget covers every neighbour: all pulled in to x_i


def clipped_gossip(
    own: np.ndarray,
    neighbors: Sequence[np.ndarray],
    weights: Sequence[float],
    radius: float,
) -> np.ndarray:
    """x_i + Σ_j w_ij · clip(x_j − x_i, τ_i): the neighbours' pulls, each at most τ_i long.

    ``weights`` are the neighbours' mixing weights (w_ii is implied: the
    own vector's term x_i − x_i is 0). With τ_i = ∞ it is plain gossip.
    """
    if len(neighbors) != len(weights):
        raise ValueError(f"{len(neighbors)} neighbours but {len(weights)} weights")
    own32 = np.asarray(own, dtype=np.float32)
    out = own32.copy()
    for x, w in zip(neighbors, weights, strict=True):
        out += np.float32(w) * clip(np.asarray(x, dtype=np.float32) - own32, radius)
    return out
