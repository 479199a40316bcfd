"""What Byzantine clients publish instead of their vector, and who they are.

Pure functions of vectors and seeds:

* :func:`attacker_ids` — the attackers, drawn from the experiment seed.
* :func:`sign_flip` — −s·x: the client's own vector, reversed and scaled.
* :func:`gaussian` — a vector of N(0, s²) noise, no information at all.
* :func:`alie` — "A Little Is Enough" (Baruch, Baruch & Goldberg, 2019):
  μ − z·σ coordinate by coordinate, from the mean and standard deviation
  of the vectors the attacker can see, with :func:`alie_z` small enough
  that the vector hides among honest ones (it passes median, trimmed mean
  and Krum) yet pulls every coordinate the same way.
* :func:`flip_labels` — label flipping: class c is trained as C − 1 − c.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import TypeVar

import numpy as np
import torch

#: The attacks ``--attack`` names.
ATTACKS = ("sign-flip", "gaussian", "label-flip", "alie")
#: Salt of the seed that draws the attackers (``attacker_ids``).
ATTACKER_SALT = 0xB12
#: Salt of a client's round seed for the Gaussian attack's draw.
GAUSSIAN_SALT = 0xB13

Labels = TypeVar("Labels", np.ndarray, torch.Tensor)


def attacker_count(fraction: float, clients: int) -> int:
    """⌊f·N⌋ attackers among N clients (never more than the fraction asked)."""
    return math.floor(fraction * clients + 1e-9)


def attacker_ids(seed: int, clients: Sequence[int], fraction: float) -> tuple[int, ...]:
    """⌊f·N⌋ of ``clients`` drawn without replacement from the experiment seed, sorted."""
    ids = sorted(clients)
    rng = np.random.default_rng(np.random.SeedSequence([seed, ATTACKER_SALT]))
    count = attacker_count(fraction, len(ids))
    return tuple(sorted(int(c) for c in rng.choice(ids, size=count, replace=False)))


def sign_flip(vector: np.ndarray, scale: float) -> np.ndarray:
    """−s · x."""
    return (np.asarray(vector, dtype=np.float32) * np.float32(-scale)).astype(np.float32)


def gaussian(size: int, scale: float, seed: int) -> np.ndarray:
    """s · z, z ~ N(0, I_size), from ``seed`` (a restored client publishes the same)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(size) * scale).astype(np.float32)


def alie_z(n: int, f: int) -> float:
    """ALIE's z_max for n workers of which f attack (Baruch et al. 2019, Algorithm 3).

    s = ⌊n/2 + 1⌋ − f workers must be "won over" (seen as further from the
    mean than the attackers' vector) for a majority; z_max = Φ⁻¹((n − s)/n).
    """
    if not 0 < f < n:
        raise ValueError(f"ALIE needs 0 < f < n, got n = {n}, f = {f}")
    s = math.floor(n / 2 + 1) - f
    return NormalDist().inv_cdf((n - s) / n)


def alie(vectors: Sequence[np.ndarray], z: float) -> np.ndarray:
    """μ − z·σ per coordinate over ``vectors`` (σ: the population standard deviation)."""
    stacked = np.stack([np.asarray(v, dtype=np.float64) for v in vectors])
    return (stacked.mean(axis=0) - z * stacked.std(axis=0)).astype(np.float32)


def flip_labels(labels: Labels, num_classes: int) -> Labels:
    """c ↦ C − 1 − c: every class trained as another one (numpy or torch labels)."""
    return num_classes - 1 - labels
