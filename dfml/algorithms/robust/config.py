"""The ``robustness`` config section: Byzantine clients and robust mixing."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dfml.algorithms.robust.attacks import ATTACKS
from dfml.errors import ConfigError

#: The rules ``--robust-aggregation`` names (``none``: the learner's own weighted mean).
RULES = ("none", "median", "trimmed-mean", "krum", "clipped-gossip")


@dataclass(frozen=True)
class RobustConfig:
    """Byzantine clients and the robust aggregation that resists them (docs/robustness.md).

    Attributes:
        byzantine: f, the fraction of the initial clients that attack, in
            [0, 1): ⌊f·N⌋ of them, drawn from the seed and listed in
            summary.json (``byzantine_clients``); clients that join later
            are honest. An attacker trains like the others but publishes
            what --attack says.
        attack: what an attacker publishes: ``sign-flip`` (−s·x, its own
            vector reversed), ``gaussian`` (N(0, s²) noise), ``label-flip``
            (its honest update, trained on labels c ↦ C − 1 − c) or ``alie``
            ("A Little Is Enough": μ − z·σ of the vectors it receives,
            gossip only).
        attack_scale: s of ``sign-flip`` and ``gaussian`` (> 0).
        robust_aggregation: how a client combines its neighbourhood and
            itself (gossip), or the server the trained clients (server mode):
            ``none`` (the weighted mean), ``median`` (coordinate-wise),
            ``trimmed-mean``, ``krum`` (multi-Krum with --krum-select) or
            ``clipped-gossip`` (x_i + Σ_j w_ij clip(x_j − x_i, τ); in server
            mode centred clipping around the last global model).
        trim_fraction: b of ``trimmed-mean``: the ⌈b·n⌉ largest and smallest
            values of each coordinate are dropped, in [0, 0.5).
        krum_byzantine: f that Krum assumes among each set it aggregates;
            by default ⌈byzantine · n⌉ of a set of n. Each set needs n > 2f + 2.
        krum_select: m, the inputs multi-Krum averages (1: Krum); at most n − f.
        clip_radius: τ of ``clipped-gossip``, a fixed radius (> 0); by default
            each client chooses τ_i every round: the farthest neighbours that
            carry --byzantine of its mixing weight are clipped to the
            distance of the next.
    """

    byzantine: float = 0.0
    attack: str = "sign-flip"
    attack_scale: float = 1.0
    robust_aggregation: str = "none"
    trim_fraction: float = 0.2
    krum_byzantine: int | None = None
    krum_select: int = 1
    clip_radius: float | None = None

    def __post_init__(self) -> None:
        if not (0 <= self.byzantine < 1 and math.isfinite(self.byzantine)):
            raise ConfigError(f"--byzantine must be a fraction in [0, 1), got {self.byzantine}")
        if self.attack not in ATTACKS:
            raise ConfigError(f"--attack must be one of {', '.join(ATTACKS)}, got {self.attack!r}")
        if self.robust_aggregation not in RULES:
            raise ConfigError(
                f"--robust-aggregation must be one of {', '.join(RULES)}, "
                f"got {self.robust_aggregation!r}"
            )
        if not self.attack_scale > 0:
            raise ConfigError(f"--attack-scale must be a number > 0, got {self.attack_scale}")
        if not 0 <= self.trim_fraction < 0.5:
            raise ConfigError(f"--trim-fraction must be in [0, 0.5), got {self.trim_fraction}")
        if self.krum_byzantine is not None and self.krum_byzantine < 0:
            raise ConfigError(f"--krum-byzantine must be >= 0, got {self.krum_byzantine}")
        if self.krum_select < 1:
            raise ConfigError(f"--krum-select must be >= 1, got {self.krum_select}")
        if self.clip_radius is not None and not self.clip_radius > 0:
            raise ConfigError(f"--clip-radius must be a number > 0, got {self.clip_radius}")
        self.check_breakdown()

    def check_breakdown(self) -> None:
        """Refuse an attacker fraction at or past the rule's breakdown point (one line)."""
        f, rule = self.byzantine, self.robust_aggregation
        if rule == "median" and f >= 0.5:
            raise ConfigError(
                f"--byzantine {f} with --robust-aggregation median: the median breaks down "
                "at half the inputs arbitrary; allowed: --byzantine < 0.5"
            )
        if rule == "trimmed-mean" and f > self.trim_fraction:
            raise ConfigError(
                f"--byzantine {f} with --robust-aggregation trimmed-mean "
                f"--trim-fraction {self.trim_fraction}: trimming b tolerates at most a b "
                f"fraction of attackers; allowed: --byzantine <= {self.trim_fraction}"
            )
        if rule in ("krum", "clipped-gossip") and f >= 0.5:
            raise ConfigError(
                f"--byzantine {f} with --robust-aggregation {rule}: it needs an honest "
                "majority; allowed: --byzantine < 0.5"
            )

    @property
    def active(self) -> bool:
        """Whether the run has attackers or mixes robustly."""
        return self.byzantine > 0 or self.robust_aggregation != "none"
