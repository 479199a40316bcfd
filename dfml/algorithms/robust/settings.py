"""The Byzantine settings a run's algorithm carries: who attacks, how, and the robust rule.

:class:`Robustness` is to robust mixing what
:class:`~dfml.algorithms.privacy.dpsgd.DPSGD` is to DP-SGD: the launch layer
builds it from the ``robustness`` section and the experiment (the attacker
ids drawn from the seed, ALIE's z for the run's counts, the number of
classes), and the algorithm ships it to every actor with its config.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dfml.algorithms.aggregate import weighted_average
from dfml.algorithms.robust.aggregators import (
    adaptive_radius,
    clipped_gossip,
    coordinate_median,
    krum,
    trimmed_mean,
)
from dfml.algorithms.robust.attacks import alie, gaussian, sign_flip


@dataclass(frozen=True)
class Robustness:
    """Attackers and robust aggregation of one run (see :class:`RobustConfig` for each knob).

    Attributes:
        rule: ``none``, ``median``, ``trimmed-mean``, ``krum`` or ``clipped-gossip``.
        attackers: the ids of the Byzantine clients.
        attack: what they publish (``sign-flip``, ``gaussian``, ``label-flip``, ``alie``).
        attack_scale: s of sign-flip and Gaussian.
        byzantine: the attacker fraction f: Krum's default f per set, and the
            weight budget δ of the adaptive clipping radius.
        trim_fraction: b of the trimmed mean.
        krum_byzantine: Krum's f per set, or ``None`` for ⌈f·n⌉.
        krum_select: multi-Krum's m.
        clip_radius: a fixed τ, or ``None`` for the adaptive one.
        alie_z: ALIE's z (from the run's client and attacker counts).
        num_classes: C, for label flipping.
    """

    rule: str = "none"
    attackers: frozenset[int] = frozenset()
    attack: str = "sign-flip"
    attack_scale: float = 1.0
    byzantine: float = 0.0
    trim_fraction: float = 0.2
    krum_byzantine: int | None = None
    krum_select: int = 1
    clip_radius: float | None = None
    alie_z: float = 0.0
    num_classes: int = 0

    def is_attacker(self, client: int) -> bool:
        return client in self.attackers

    def flips_labels(self, client: int) -> bool:
        """Whether ``client`` trains on flipped labels."""
        return self.attack == "label-flip" and client in self.attackers

    def krum_f(self, n: int) -> int:
        """The attackers Krum assumes among a set of n inputs."""
        if self.krum_byzantine is not None:
            return self.krum_byzantine
        return math.ceil(self.byzantine * n - 1e-9)

    def radius(
        self, center: np.ndarray, vectors: Sequence[np.ndarray], weights: Sequence[float]
    ) -> float:
        """τ: the fixed ``clip_radius``, else :func:`adaptive_radius` with budget f."""
        if self.clip_radius is not None:
            return self.clip_radius
        distances = [
            float(np.linalg.norm(np.asarray(v, dtype=np.float32) - center)) for v in vectors
        ]
        return adaptive_radius(distances, weights, self.byzantine)

    def aggregate(
        self,
        own: np.ndarray,
        neighbors: Sequence[np.ndarray],
        self_weight: float,
        weights: Sequence[float],
    ) -> np.ndarray:
        """What a gossiping client starts its round from: the rule over itself and its
        neighbours (median, trimmed mean and Krum treat the n = 1 + |N(i)| inputs alike;
        ClippedGossip keeps the mixing weights and centres on the client's own vector)."""
        if self.rule == "clipped-gossip":
            own32 = np.asarray(own, dtype=np.float32)
            return clipped_gossip(own32, neighbors, weights, self.radius(own32, neighbors, weights))
        if self.rule == "none":
            return weighted_average([own, *neighbors], [self_weight, *weights])
        return self.unweighted([own, *neighbors])

    def unweighted(self, vectors: Sequence[np.ndarray]) -> np.ndarray:
        """Median, trimmed mean or Krum over ``vectors``, each input counted once."""
        if self.rule == "median":
            return coordinate_median(vectors)
        if self.rule == "trimmed-mean":
            return trimmed_mean(vectors, self.trim_fraction)
        if self.rule == "krum":
            return krum(vectors, self.krum_f(len(vectors)), self.krum_select)
        raise ValueError(f"rule {self.rule!r} weighs its inputs")

    def server_aggregate(
        self, vectors: Sequence[np.ndarray], weights: Sequence[float], center: np.ndarray
    ) -> np.ndarray:
        """The server's rule over the trained clients' vectors (weights p_k); ClippedGossip
        becomes centred clipping around ``center``, the last global model."""
        if self.rule == "clipped-gossip":
            center32 = np.asarray(center, dtype=np.float32)
            return clipped_gossip(
                center32, vectors, weights, self.radius(center32, vectors, weights)
            )
        if self.rule == "none":
            return weighted_average(vectors, weights)
        return self.unweighted(vectors)

    def attacked(
        self, vector: np.ndarray, received: Sequence[np.ndarray], seed: int
    ) -> np.ndarray | None:
        """What an attacker publishes instead of its ``vector``, or ``None`` (label
        flipping publishes the honest update of poisoned data). ALIE uses the
        vectors it ``received`` this round (its neighbours' published ones)."""
        if self.attack == "sign-flip":
            return sign_flip(vector, self.attack_scale)
        if self.attack == "gaussian":
            return gaussian(len(vector), self.attack_scale, seed)
        if self.attack == "alie":
            return alie(list(received) or [vector], self.alie_z)
        return None
