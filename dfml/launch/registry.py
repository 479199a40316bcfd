"""The one name → class table through which the CLI finds algorithms, and
the clusterings (``--cluster-by``) and compressors (``--compressor``) that
compose with them."""

from __future__ import annotations

from dataclasses import fields

from dfml.algorithms.afml import AFML
from dfml.algorithms.base import Algorithm, gossips
from dfml.algorithms.choco import ChocoSGD
from dfml.algorithms.clfml.algorithm import CLFML, CDFedAvg
from dfml.algorithms.clfml.label_clustering import LabelClustering, clustered
from dfml.algorithms.compressed import compressed
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
from dfml.algorithms.robust.mixing import robust
from dfml.algorithms.secure.aggregation import secure
from dfml.compression import check_compressor
from dfml.errors import ConfigError

#: The federated meta-learning family (issue 3, part A).
META_LEARNING = (FedMetaMAML, FedMetaSGD, Reptile, PerFedAvg, GFML, MEFL, AFML)

ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls
    for cls in (
        DFedAvg,
        FedAvg,
        FedAvgFT,
        FedProx,
        PFedMe,
        Ditto,
        *META_LEARNING,
        CLFML,
        CDFedAvg,
        ChocoSGD,
    )
}

#: ``--cluster-by`` values: ``none`` runs the algorithm as it is; ``labels``
#: puts the label clustering in front of it (:func:`clustered`).
CLUSTER_BY = ("none", "labels")


def clusters(name: str) -> bool:
    """Whether algorithm ``name`` clusters by labels by itself (clfml, cdfedavg)."""
    return issubclass(algorithm_class(name), LabelClustering)


def algorithm_class(
    name: str,
    cluster_by: str = "none",
    compressor: str = "none",
    robust_mixing: bool = False,
    secure_aggregation: bool = False,
) -> type[Algorithm]:
    """The class that runs algorithm ``name``, clustered by ``cluster_by``, its
    gossip compressed by ``compressor``, with Byzantine clients and robust
    mixing in front where ``robust_mixing`` (:func:`robust`, which refuses a
    learner that does not send its vector), or secure aggregation where
    ``secure_aggregation`` (:func:`secure`, which refuses a learner whose
    aggregation is not a weighted sum of vectors).

    One :class:`ConfigError` line for an unknown name, clustering or
    compressor, and for ``labels`` or a compressor with an algorithm that
    aggregates at a server (naming the algorithms that can). An algorithm
    that compresses by itself (choco-sgd) reads ``compressor`` from its own
    config and is returned as it is.
    """
    try:
        cls = ALGORITHMS[name]
    except KeyError:
        raise ConfigError(
            f"unknown algorithm {name!r}; allowed: {', '.join(sorted(ALGORITHMS))}"
        ) from None
    if cluster_by not in CLUSTER_BY:
        raise ConfigError(f"unknown cluster_by {cluster_by!r}; allowed: {', '.join(CLUSTER_BY)}")
    check_compressor(compressor)
    if cluster_by == "labels":
        if not gossips(cls):
            raise ConfigError(
                f"--cluster-by labels trains within clusters by gossip, but algorithm {name!r} "
                f"aggregates at a server; allowed: {_gossiping()}"
            )
        cls = clustered(cls)
    if compressor != "none" and "compressor" not in {f.name for f in fields(cls.Config)}:
        if not gossips(cls):
            raise ConfigError(
                f"--compressor compresses the vectors clients gossip, but algorithm {name!r} "
                f"aggregates at a server; allowed: {_gossiping()}"
            )
        cls = compressed(cls)
    if secure_aggregation:
        if robust_mixing:
            raise ConfigError(
                "--secure-aggregation hides each vector, but --byzantine and "
                "--robust-aggregation need the plain vectors; allowed: one of them"
            )
        return secure(cls)
    return robust(cls) if robust_mixing else cls


def _gossiping() -> str:
    """The algorithms whose clients can gossip, for an error line."""
    return ", ".join(sorted(n for n, c in ALGORITHMS.items() if gossips(c)))
