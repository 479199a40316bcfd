"""Placement of clients on Ray actors: cohorts, CPU and GPU fractions."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dfml.errors import ConfigError


@dataclass(frozen=True)
class ResourceConfig:
    """How clients map onto actors and what each actor asks Ray for.

    Attributes:
        clients_per_actor: logical clients hosted by one actor; ``None`` means
            one actor per client while the cluster has room (CPU/GPU slots),
            then cohorts of equal size.
        num_cpus_per_actor: fractional CPUs Ray reserves for each actor.
        num_gpus_per_actor: fractional GPUs (0.25 → four actors per GPU).
        max_actors: an upper bound on the number of actors (``None``: no bound).
    """

    clients_per_actor: int | None = None
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0
    max_actors: int | None = None

    def __post_init__(self) -> None:
        if self.clients_per_actor is not None and self.clients_per_actor < 1:
            raise ConfigError(f"clients_per_actor must be >= 1, got {self.clients_per_actor}")
        cpus, gpus = self.num_cpus_per_actor, self.num_gpus_per_actor
        if not (math.isfinite(cpus) and cpus > 0):
            raise ConfigError(f"num_cpus_per_actor must be a positive finite number, got {cpus}")
        if not (math.isfinite(gpus) and gpus >= 0 and (gpus <= 1 or float(gpus).is_integer())):
            raise ConfigError(
                f"num_gpus_per_actor must be a fraction in [0, 1] or a whole number of GPUs, "
                f"got {gpus}"
            )
        if self.max_actors is not None and self.max_actors < 1:
            raise ConfigError(f"max_actors must be >= 1, got {self.max_actors}")
