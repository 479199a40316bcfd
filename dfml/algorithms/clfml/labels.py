"""Phase 1 of CL-FML: ring label dissemination, label vectors P_i, Hellinger.

Every client n_i starts with its own label set ℒ_i ⊂ ℒ and does not know ℒ.
On a ring each client sends its set to its successor n_j and merges what it
receives from its predecessor n_l: ℒ_i ← ℒ_i ∪ ℒ_l. When no set grows any
more every client holds ℒ, the universe over which the label vectors
P_i ∈ [0, 1]^M and the task distributions q are written.

Dissemination rules (the pure reference the actors must reproduce):

* **Synchronous hops.** In a hop every client sends the set it held *before*
  the hop, so after h hops ℒ_i is the union of n_i and its h predecessors:
  everyone holds ℒ after at most N − 1 hops.
* **Stop at the first quiet hop.** The protocol runs hops until one changes
  no set. That quiet hop is never premature: if no set grew, every
  predecessor's set is contained in its successor's all around the ring, so
  all sets are equal (to ℒ). ``hops`` counts the hops that changed something
  (≤ N − 1, 0 when every client already holds ℒ); ``rounds`` = hops + 1
  counts the hops run, the quiet one included, because its messages are sent.
  A single client has no one to talk to: 0 hops, 0 rounds, 0 messages.
* **Cost.** Every client sends one message per round run (N·rounds messages);
  a message carries its sender's whole set, :data:`LABEL_BYTES` = 8 bytes per
  label (int64 ids), so bytes = 8 · Σ over messages of the set size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from dfml.errors import ConfigError

LABEL_BYTES = 8
"""Bytes per label in a dissemination message (labels travel as int64 ids)."""

TIE_TOL = 1e-12
"""Distances within this of the minimum count as ties (then the lower index wins).

Equal distances computed along different float paths can differ in the last
bit; the tolerance keeps "ties → lower k" stable between the leader's
incremental clustering and a centralized recomputation.
"""


@dataclass(frozen=True)
class DisseminationResult:
    """Final sets ℒ_i, changing hops, hops run (incl. the quiet one), messages, bytes."""

    label_sets: dict[int, frozenset[int]]
    hops: int
    rounds: int
    messages: int
    bytes: int


def merge_labels(own: Iterable[int], received: Iterable[int]) -> tuple[frozenset[int], bool]:
    """One client's receive step: ℒ_i ∪ ℒ_l and whether ℒ_i grew."""
    own_set = frozenset(own)
    merged = own_set.union(received)
    return merged, len(merged) > len(own_set)


def ring_dissemination(
    label_sets: Mapping[int, Iterable[int]], ring: Sequence[int]
) -> DisseminationResult:
    """Run ring dissemination to quiescence (see the module docstring for the rules).

    ``ring`` lists every client of ``label_sets`` once; client ``ring[p]``
    sends to ``ring[(p + 1) % N]``.
    """
    if sorted(ring) != sorted(label_sets) or len(set(ring)) != len(ring):
        raise ConfigError(
            f"ring must list each of the {len(label_sets)} clients once, got {list(ring)}"
        )
    sets = {c: frozenset(label_sets[c]) for c in ring}
    n = len(ring)
    if n <= 1:
        return DisseminationResult(sets, hops=0, rounds=0, messages=0, bytes=0)
    hops = rounds = messages = nbytes = 0
    while True:
        rounds += 1
        sent = dict(sets)  # synchronous: every send of this hop uses the sets from before it
        changed = False
        for pos, receiver in enumerate(ring):
            sender = ring[pos - 1]
            messages += 1
            nbytes += LABEL_BYTES * len(sent[sender])
            sets[receiver], grew = merge_labels(sets[receiver], sent[sender])
            changed = changed or grew
        if not changed:
            return DisseminationResult(sets, hops, rounds, messages, nbytes)
        hops += 1


def universe_of(label_sets: Iterable[Iterable[int]]) -> tuple[int, ...]:
    """ℒ = ∪ ℒ_i, sorted: the label order (ℓ_1, ..., ℓ_M) of every vector here."""
    return tuple(sorted(set().union(*label_sets)))


def _check_universe(universe: Sequence[int]) -> dict[int, int]:
    index = {}
    for m, label in enumerate(universe):
        if label in index:
            raise ConfigError(f"label universe lists label {label} twice")
        index[label] = m
    if not index:
        raise ConfigError("label universe is empty")
    return index


def label_vector(
    labels_or_counts: Iterable[int] | Mapping[int, float],
    universe: Sequence[int],
    mode: Literal["multi-hot", "histogram"] = "multi-hot",
) -> np.ndarray:
    """A client's label vector P_i ∈ [0, 1]^M over ``universe`` (float64).

    ``multi-hot`` (the slides): z_m = 1 if ℓ_m ∈ ℒ_i else 0; from counts, the
    labels with a positive count. ``histogram``: the client's label
    frequencies count_m / Σ counts (a bare label set counts each label once,
    i.e. uniform over ℒ_i), which also sees class imbalance inside a client.
    """
    if mode not in ("multi-hot", "histogram"):
        raise ConfigError(f"label vector mode must be multi-hot or histogram, got {mode!r}")
    index = _check_universe(universe)
    if isinstance(labels_or_counts, Mapping):
        counts = {int(k): float(v) for k, v in labels_or_counts.items()}
    else:
        counts = {}
        for label in labels_or_counts:
            counts[int(label)] = counts.get(int(label), 0.0) + 1.0
    vec = np.zeros(len(index), dtype=np.float64)
    for label, count in counts.items():
        if label not in index:
            raise ConfigError(f"label {label} is not in the label universe")
        if not (count >= 0 and math.isfinite(count)):
            raise ConfigError(f"label {label} has count {count}; counts must be finite and >= 0")
        vec[index[label]] = count
    if vec.sum() <= 0:
        raise ConfigError("a label vector needs at least one label with a positive count")
    if mode == "multi-hot":
        return (vec > 0).astype(np.float64)
    return vec / vec.sum()


def as_distribution(v: np.ndarray | Sequence[float], name: str = "vector") -> np.ndarray:
    """``v`` normalised to sum 1; ConfigError naming ``name`` if it is not a valid weight vector."""
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ConfigError(f"{name} must be a non-empty 1-D vector, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ConfigError(f"{name} must be finite and non-negative")
    total = arr.sum()
    if total <= 0:
        raise ConfigError(f"{name} is the zero vector; it has no distribution")
    return arr / total


def hellinger(p: np.ndarray | Sequence[float], q: np.ndarray | Sequence[float]) -> float:
    """ℋ(p, q) = (1/√2) ‖√p − √q‖₂ ∈ [0, 1] after normalising p and q to sum 1.

    0 iff the normalised vectors are equal; 1 iff their supports are disjoint.
    Normalising lets multi-hot P_i and running means w_k be compared as the
    label distributions they stand for.
    """
    pn, qn = as_distribution(p, "p"), as_distribution(q, "q")
    if pn.shape != qn.shape:
        raise ConfigError(f"hellinger needs vectors of equal length, got {pn.size} and {qn.size}")
    return min(1.0, float(np.linalg.norm(np.sqrt(pn) - np.sqrt(qn))) / math.sqrt(2.0))


def pairwise_hellinger(
    rows: np.ndarray | Sequence[Sequence[float]], cols: np.ndarray | None = None
) -> np.ndarray:
    """Matrix D[a, b] = ℋ(rows[a], cols[b]) (cols defaults to rows), vectorised."""
    x = np.asarray(rows, dtype=np.float64)
    y = x if cols is None else np.asarray(cols, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ConfigError(f"pairwise Hellinger needs N×M and K×M arrays, got {x.shape}, {y.shape}")
    for name, arr in (("rows", x), ("cols", y)):
        if not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr.sum(axis=1) <= 0):
            raise ConfigError(f"pairwise Hellinger {name} must be non-negative, non-zero vectors")
    sx = np.sqrt(x / x.sum(axis=1, keepdims=True))
    sy = np.sqrt(y / y.sum(axis=1, keepdims=True))
    diff = sx[:, None, :] - sy[None, :, :]
    return np.minimum(1.0, np.sqrt(np.sum(diff * diff, axis=2)) / math.sqrt(2.0))


def nearest(p: np.ndarray, centres: Sequence[np.ndarray] | np.ndarray) -> int:
    """argmin_k ℋ(w_k, p), ties (within :data:`TIE_TOL`) → the lower k."""
    dists = [hellinger(w, p) for w in centres]
    if not dists:
        raise ConfigError("no centres to compare against")
    best = min(dists)
    return next(k for k, d in enumerate(dists) if d <= best + TIE_TOL)


def task_distribution(
    task_labels: Sequence[int],
    universe: Sequence[int],
    weights: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """The task's label distribution q over ``universe``: uniform over 𝒯 by default.

    ``weights`` (aligned with ``task_labels``, non-negative, not all zero) are
    normalised into q; labels outside 𝒯 get q_m = 0.
    """
    index = _check_universe(universe)
    if len(task_labels) == 0:
        raise ConfigError("task has no labels")
    if weights is None:
        w = np.ones(len(task_labels))
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(task_labels),):
            raise ConfigError(
                f"task weights q need one value per label ({len(task_labels)}), got {w.size}"
            )
        w = as_distribution(w, "task weights q")
    q = np.zeros(len(index), dtype=np.float64)
    seen: set[int] = set()
    for label, weight in zip(task_labels, w, strict=True):
        if label not in index:
            raise ConfigError(f"task label {label} is held by no client")
        if label in seen:
            raise ConfigError(f"task lists label {label} twice")
        seen.add(label)
        q[index[label]] = weight
    return q / q.sum()
