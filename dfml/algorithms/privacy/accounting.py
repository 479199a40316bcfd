"""Privacy accounting: which noised steps a client takes, and what they cost in ε.

Every noised gradient is a subsampled Gaussian mechanism: a batch drawn
from a data set of n samples at rate q = B / n, its clipped sum with noise
σC. An algorithm declares, per round and client, how many such steps its
local training takes and the rate to account them at (:class:`Usage`, from
:meth:`~dfml.algorithms.base.Algorithm.private_usage`); ε after T steps is
what Opacus's RDP accountant (Mironov 2017; Mironov, Talwar & Zhang 2019)
says for (σ, q, T) at δ, and σ for a target ε is Opacus's
``get_noise_multiplier`` — the library's own functions, nothing
hand-written.

The RDP analysis is for Poisson sampling at rate q. dfml's local SGD
shuffles each epoch into batches of B (so a run with C = ∞, σ = 0 is the
non-private run); accounting shuffled batches at q = B / n is the common
practice of DP-SGD implementations, not a proof for shuffling
(docs/privacy.md).

Opacus is imported inside the functions: importing it costs ~6 s (SciPy's
statistics, torch's function transforms), which only a private run's
driver should pay, never an actor or a non-private run.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DataSizes:
    """A client's training data: |D^M| and |D^Q| (what local training samples from)."""

    meta: int
    query: int

    @property
    def train(self) -> int:
        """|D^M ∪ D^Q|."""
        return self.meta + self.query


@dataclass(frozen=True)
class Usage:
    """One client's noised steps in one round of local training.

    Attributes:
        sample_rate: q, the rate the steps are accounted at: batch size over
            the size of the set sampled (the largest such rate where steps
            sample from several sets, an upper bound).
        steps: the number of noised gradients taken.
    """

    sample_rate: float
    steps: int


def sampling_rate(batch_size: int, n: int) -> float:
    """q = B / n, at most 1 (a batch holds the whole set)."""
    return min(1.0, batch_size / n) if n > 0 else 0.0


def sgd_usage(n: int, batch_size: int, epochs: int) -> Usage:
    """``epochs`` shuffled passes over n samples in batches of B: E·⌈n/B⌉ steps at q = B/n."""
    return Usage(sampling_rate(batch_size, n), epochs * math.ceil(n / batch_size))


def meta_usage(sizes: Iterable[int], batch_size: int, steps: int) -> Usage:
    """``steps`` noised gradients, each on a batch of B drawn from one of the sets of ``sizes``."""
    rate = max((sampling_rate(batch_size, n) for n in sizes), default=0.0)
    return Usage(rate, steps)


def epsilon(noise: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε of ``steps`` subsampled Gaussian steps (σ = ``noise``, q) at δ: Opacus's RDP accountant.

    0 when no step was taken; ∞ without noise. The value is
    ``RDPAccountant.get_epsilon`` for the history [(σ, q, steps)], bit for
    bit: RDP composes by summing, and Opacus computes T steps as T times
    one step (``compute_rdp``), so one step's RDP curve is computed once per
    (σ, q) (:func:`_step_rdp`, the slow part: ~0.1–0.8 s) and multiplied
    here, before Opacus's ``get_privacy_spent`` turns it into ε.
    """
    if steps == 0 or sample_rate == 0.0:
        return 0.0
    if noise == 0.0:
        return math.inf
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import get_privacy_spent

    eps, _ = get_privacy_spent(
        orders=RDPAccountant.DEFAULT_ALPHAS, rdp=_step_rdp(noise, sample_rate) * steps, delta=delta
    )
    return float(eps)


@functools.lru_cache(maxsize=4096)
def _step_rdp(noise: float, sample_rate: float) -> np.ndarray:
    """One step's RDP at Opacus's default orders (``compute_rdp`` with one step)."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp

    rdp = compute_rdp(
        q=sample_rate, noise_multiplier=noise, steps=1, orders=RDPAccountant.DEFAULT_ALPHAS
    )
    rdp.setflags(write=False)  # cached: shared by every caller
    return rdp


@functools.lru_cache(maxsize=4096)
def noise_for(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """σ that brings ``steps`` steps at rate q to ε ≤ ``target_epsilon``: Opacus's
    ``get_noise_multiplier`` with the RDP accountant (0 when there is no step)."""
    if steps == 0 or sample_rate == 0.0:
        return 0.0
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant="rdp",
        )
    )


def run_noise(target_epsilon: float, delta: float, usages: Iterable[Usage], rounds: int) -> float:
    """One σ for the run: the largest any client needs to stay within ``target_epsilon``
    after ``rounds`` rounds of its ``Usage`` (clients that train fewer rounds stay below).

    Only clients on the frontier are asked (each Opacus search takes
    seconds): ε grows with the rate and with the steps, so a client whose
    rate and steps are both at most another's needs no more noise.
    """
    needs = {(u.sample_rate, u.steps * rounds) for u in usages}
    frontier = [
        (q, t)
        for q, t in needs
        if not any(q2 >= q and t2 >= t and (q2, t2) != (q, t) for q2, t2 in needs)
    ]
    return max((noise_for(target_epsilon, delta, q, t) for q, t in frontier), default=0.0)
