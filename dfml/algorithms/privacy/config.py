"""The ``privacy`` config section: DP-SGD local training (``--dp-clip`` and friends)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dfml.errors import ConfigError


@dataclass(frozen=True)
class PrivacyConfig:
    """Differentially private local training (DP-SGD) and its accounting.

    Every noised gradient clips each sample's gradient to norm C and adds
    Gaussian noise of standard deviation σ·C to their sum; each client's
    (ε, δ) after every round is Opacus's RDP accountant's (docs/privacy.md).

    Attributes:
        dp_clip: C, the bound on every per-sample gradient's L2 norm; giving
            it turns DP-SGD on (with --dp-noise or --dp-epsilon). Off by default.
        dp_noise: σ, the noise multiplier (>= 0; 0 clips without noise, so
            ε is infinite).
        dp_epsilon: a target ε instead of σ: σ is the smallest that keeps
            every client's ε at or below it after the run's rounds.
        dp_delta: δ of the (ε, δ) guarantee, in (0, 1).
    """

    dp_clip: float | None = None
    dp_noise: float | None = None
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5

    def __post_init__(self) -> None:
        if self.dp_clip is not None and not self.dp_clip > 0:
            raise ConfigError(f"--dp-clip must be a number > 0, got {self.dp_clip}")
        if self.dp_noise is not None and not self.dp_noise >= 0:
            raise ConfigError(f"--dp-noise must be a number >= 0, got {self.dp_noise}")
        if self.dp_epsilon is not None and not self.dp_epsilon > 0:
            raise ConfigError(f"--dp-epsilon must be a number > 0, got {self.dp_epsilon}")
        if not (0 < self.dp_delta < 1 and math.isfinite(self.dp_delta)):
            raise ConfigError(f"--dp-delta must be in (0, 1), got {self.dp_delta}")
        if self.dp_noise is not None and self.dp_epsilon is not None:
            raise ConfigError(
                f"--dp-noise {self.dp_noise} and --dp-epsilon {self.dp_epsilon} exclude each "
                "other: give σ, or a target ε to derive σ from"
            )
        given = self.dp_noise is not None or self.dp_epsilon is not None
        if given and self.dp_clip is None:
            raise ConfigError(
                "--dp-noise / --dp-epsilon need --dp-clip C, the per-sample gradient bound"
            )
        if self.dp_clip is not None and not given:
            raise ConfigError(
                f"--dp-clip {self.dp_clip} needs --dp-noise σ or --dp-epsilon ε (with --dp-delta)"
            )

    @property
    def active(self) -> bool:
        return self.dp_clip is not None
