"""CL-FML and C-DFedAvg: label clustering composed with a learner.

CL-FML (cluster-based label-aware federated meta-learning) is the label
clustering of :mod:`~dfml.algorithms.clfml.label_clustering` (ring label
dissemination, clustering along a minimum spanning tree, cluster ids
broadcast back) in front of G-FML's meta-learner: each round, within each
cluster C_k over the cluster's sub-graph of the topology, client i
aggregates θ̃_i = Σ_{j ∈ N_k(i) ∪ {i}} w_ij θ_j with w_ij = |D^M_j| / Σ |D^M|
over its cluster neighbourhood, then takes E_M epochs of meta-updates on
D^M with ``--meta-learner`` (:func:`~dfml.algorithms.gfml.meta_update`):
FOMAML by default, MAML, Reptile, or the slides' plain step
θ_i ← θ̃_i − η ∇ℛ_i(θ̃_i) (``sgd``, G-FML's client code).

The cluster meta-model θ̃_k stays on every client of cluster k (its
``params``). A meta-learned θ̃_k is an initialisation: it is scored as the
meta-learning family scores (``accuracy`` after K = ``inner_steps`` steps
of α on D^M, ``init_accuracy`` its own) and Pers.k adapts it the same way;
with ``sgd`` it is scored as it is and Pers.k fine-tunes it on D^Q as G-FML
does.

C-DFedAvg is the same clustering in front of DFedAvg (plain local SGD on
all local data, no meta-learning). Any other gossip algorithm clusters the
same way with ``--cluster-by labels``
(:func:`~dfml.algorithms.clfml.label_clustering.clustered`). The on-demand
task service (Case I/II, augmentation, fine-tuning) runs after training:
:mod:`~dfml.algorithms.clfml.service`.
"""

from __future__ import annotations

from dataclasses import dataclass

from dfml.algorithms.clfml.label_clustering import ClusteringConfig, LabelClustering
from dfml.algorithms.dfedavg import DFedAvg, DFedAvgConfig
from dfml.algorithms.gfml import GFML, GFMLConfig


@dataclass(frozen=True)
class CLFMLConfig(ClusteringConfig, GFMLConfig):
    """CL-FML's knobs: the label clustering's plus G-FML's meta-learner inside
    each cluster (``meta_learner``, ``inner_lr``, ``inner_steps``; see
    :class:`~dfml.algorithms.gfml.GFMLConfig`)."""


class CLFML(LabelClustering, GFML):
    """Label clustering, then G-FML's meta-training within each cluster."""

    name = "clfml"
    Config = CLFMLConfig


@dataclass(frozen=True)
class CDFedAvgConfig(ClusteringConfig, DFedAvgConfig):
    """C-DFedAvg's knobs: the label clustering's plus DFedAvg's local SGD
    (``train_split`` ``all`` by default, ``meta`` with ``--tasks``)."""


class CDFedAvg(LabelClustering, DFedAvg):
    """C-DFedAvg: CL-FML's clusters, DFedAvg inside each (all local data, no meta-learning)."""

    name = "cdfedavg"
    Config = CDFedAvgConfig
