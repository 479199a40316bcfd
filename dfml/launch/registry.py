"""The one name → class table through which the CLI finds algorithms."""

from __future__ import annotations

from dfml.algorithms.base import Algorithm
from dfml.algorithms.dfedavg import DFedAvg
from dfml.algorithms.fedavg import FedAvg
from dfml.errors import ConfigError

ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (DFedAvg, FedAvg)}


def algorithm_class(name: str) -> type[Algorithm]:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ConfigError(
            f"unknown algorithm {name!r}; allowed: {', '.join(sorted(ALGORITHMS))}"
        ) from None
