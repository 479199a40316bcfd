"""MEFL's Equilibrated Optimizing Aggregation (EOA; Tang et al., MEFL, Alg. 2).

An aggregator (the server, or in gossip mode a client over its closed
neighbourhood N(i) ∪ {i}) holds a reference model x^t and receives models
x_k, k ∈ P, trained from it. With the state of the previous rounds
(m: EMA of the global update direction; μ_k, v_k: EMA mean and EMA
variance of client k's update) one EOA step is, in this order::

    Δ_k   = x_k − x^t                                   update of client k
    Δ̄     = (1/|P|) Σ_k Δ_k                             mean update this round
    m̂     = m^{t−1}   (Δ̄ in the first round: no history yet)
    s_k   = max(cos(Δ_k, m̂), s_min)                     cos := 0 if a vector is 0
    σ²_k  = (1/d) ‖Δ_k − μ_k^{t−1}‖²                    deviation from k's own history
    μ_k^t = β μ_k^{t−1} + (1 − β) Δ_k
    v_k^t = β v_k^{t−1} + (1 − β) σ²_k                  EMA of the variance
    r_k   = s_k / (v_k^t + ε v̄^t),   v̄^t = (1/|P|) Σ_k v_k^t   (r_k = s_k if v̄^t = 0)
    w_k   = r_k / Σ_j r_j                               Σ_k w_k = 1, w_k > 0
    x^{t+1} = x^t + η_g Σ_k w_k Δ_k = (1 − η_g) x^t + η_g Σ_k w_k x_k
    m^t   = γ m^{t−1} + (1 − γ) Δ̄                       (m = Δ̄ in the first round)

Symbols and knobs: γ ``direction_decay``, β ``variance_decay``, ε ``variance_eps``,
s_min ``min_similarity``, η_g ``global_lr``.

Choices where the paper's text is ambiguous (each is tested):

* **Variance over rounds.** The paper estimates "the variance of [client i's]
  gradients over recent training rounds ... incrementally using an online
  update formula", then smooths it by an EMA: σ²_k is the mean squared
  deviation of this round's update from k's own EMA mean, per coordinate.
  A client seen for the first time has no history: its σ²_k is its deviation
  from this round's mean update Δ̄, μ_k = Δ_k and v_k = σ²_k (not shrunk by
  1 − β, so a newcomer is neither favoured nor punished).
* **The clip acts on the similarity** ("similarity score ... computed with a
  minimum value"); with s_min > 0 every weight is positive, so anti-aligned
  clients keep a small say and the normalisation is always defined.
* **ε is relative** to the mean variance: the weights then do not depend on
  the scale of the parameters (multiplying every update by c leaves w
  unchanged), and ε keeps its meaning of "a small constant for numerical
  stability" whatever the model.
* **The direction benchmark m** is the EMA of the *unweighted* mean update
  ("the average of the gradients obtained from previous rounds"), so the
  weights do not reinforce themselves; it enters the similarity of the next
  round, not this one (except in the first round).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dfml.algorithms.aggregate import weighted_average


@dataclass(frozen=True)
class EOAParams:
    """γ, β, ε, s_min and η_g (see the module docstring)."""

    direction_decay: float = 0.9
    variance_decay: float = 0.9
    variance_eps: float = 1e-3
    min_similarity: float = 0.05
    global_lr: float = 1.0

    def __post_init__(self) -> None:
        for name in ("direction_decay", "variance_decay"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if not (self.variance_eps > 0 and math.isfinite(self.variance_eps)):
            raise ValueError(f"variance_eps must be a positive number, got {self.variance_eps}")
        if not 0.0 < self.min_similarity <= 1.0:
            raise ValueError(f"min_similarity must be in (0, 1], got {self.min_similarity}")
        if not (self.global_lr > 0 and math.isfinite(self.global_lr)):
            raise ValueError(f"global_lr must be a positive number, got {self.global_lr}")


@dataclass(frozen=True)
class EOAState:
    """What an aggregator remembers between rounds: m, μ_k and v_k."""

    direction: np.ndarray | None = None
    means: Mapping[int, np.ndarray] = field(default_factory=dict)
    variances: Mapping[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EOAResult:
    """One step's new reference model x^{t+1}, the weights and the next state."""

    aggregate: np.ndarray
    weights: np.ndarray
    similarities: np.ndarray
    variances: np.ndarray
    state: EOAState


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """a·b / (‖a‖‖b‖) in float64; 0 when either vector is zero."""
    a64, b64 = a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)
    na, nb = float(np.linalg.norm(a64)), float(np.linalg.norm(b64))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(a64 @ b64) / (na * nb)


def eoa_weights(
    updates: Sequence[np.ndarray], ids: Sequence[int], state: EOAState, params: EOAParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray, EOAState]:
    """(w, s, v, next state) for the updates Δ_k of clients ``ids``."""
    if len(updates) != len(ids) or not updates:
        raise ValueError(f"need one update per client id, got {len(updates)} and {len(ids)}")
    deltas = [np.asarray(u, dtype=np.float64) for u in updates]
    d = deltas[0].size
    mean_update = np.mean(deltas, axis=0)
    direction = mean_update if state.direction is None else state.direction
    sims = np.array([max(cosine(u, direction), params.min_similarity) for u in deltas])
    beta = params.variance_decay
    means, variances = dict(state.means), dict(state.variances)
    for k, u in zip(ids, deltas, strict=True):
        if k in means:
            raw = float(np.sum((u - means[k]) ** 2)) / d
            means[k] = beta * means[k] + (1.0 - beta) * u
            variances[k] = beta * variances[k] + (1.0 - beta) * raw
        else:
            means[k] = u
            variances[k] = float(np.sum((u - mean_update) ** 2)) / d
    v = np.array([variances[k] for k in ids])
    v_bar = float(v.mean())
    raw_w = sims / (v + params.variance_eps * v_bar) if v_bar > 0 else sims.copy()
    weights = raw_w / raw_w.sum()
    gamma = params.direction_decay
    new_direction = (
        mean_update
        if state.direction is None
        else gamma * state.direction + (1 - gamma) * mean_update
    )
    return weights, sims, v, EOAState(new_direction, means, variances)


def eoa_step(
    reference: np.ndarray,
    vectors: Sequence[np.ndarray],
    ids: Sequence[int],
    state: EOAState,
    params: EOAParams,
) -> EOAResult:
    """x^{t+1} = (1 − η_g) x^t + η_g Σ_k w_k x_k with the EOA weights w."""
    updates = [np.asarray(x, dtype=np.float32) - reference for x in vectors]
    weights, sims, v, new_state = eoa_weights(updates, ids, state, params)
    eta = params.global_lr
    aggregate = weighted_average(
        [np.asarray(reference, dtype=np.float32), *vectors], [1.0 - eta, *(eta * weights)]
    )
    return EOAResult(aggregate, weights, sims, v, new_state)
