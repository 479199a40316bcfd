"""The one name → class table through which the CLI finds algorithms."""

from __future__ import annotations

from dfml.algorithms.afml import AFML
from dfml.algorithms.base import Algorithm
from dfml.algorithms.clfml.algorithm import CLFML, CDFedAvg
from dfml.algorithms.dfedavg import DFedAvg
from dfml.algorithms.ditto import Ditto
from dfml.algorithms.fedavg import FedAvg
from dfml.algorithms.fedavg_ft import FedAvgFT
from dfml.algorithms.fedmeta import FedMetaMAML, FedMetaSGD
from dfml.algorithms.fedprox import FedProx
from dfml.algorithms.gfml import GFML
from dfml.algorithms.mefl import MEFL
from dfml.algorithms.perfedavg import PerFedAvg
from dfml.algorithms.pfedme import PFedMe
from dfml.algorithms.reptile import Reptile
from dfml.errors import ConfigError

#: The federated meta-learning family (issue 3, part A).
META_LEARNING = (FedMetaMAML, FedMetaSGD, Reptile, PerFedAvg, GFML, MEFL, AFML)

ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls
    for cls in (DFedAvg, FedAvg, FedAvgFT, FedProx, PFedMe, Ditto, *META_LEARNING, CLFML, CDFedAvg)
}


def algorithm_class(name: str) -> type[Algorithm]:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ConfigError(
            f"unknown algorithm {name!r}; allowed: {', '.join(sorted(ALGORITHMS))}"
        ) from None
