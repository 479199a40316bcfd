"""DFedAvg: decentralized FedAvg by neighbour gossip.

Each round t, client i

1. mixes its neighbours' parameters, x_i ← Σ_{j ∈ N(i) ∪ {i}} w_ij x_j, with
   the mixing matrix W of the topology (CL-FML's data-size weights
   w_ij = |D_j| / Σ_{k ∈ N(i) ∪ {i}} |D_k| by default, or Metropolis–Hastings);
2. runs E local epochs of SGD on its data, x_i ← x_i − η ∇ℓ(x_i; batch);
3. publishes x_i to the object store for its neighbours' next round.

The gossip and SGD hooks are the base :class:`~dfml.algorithms.base.Algorithm`
defaults; this module names them.
"""

from __future__ import annotations

from dataclasses import dataclass

from dfml.algorithms.base import Algorithm, LocalSGDConfig, check_train_split


@dataclass(frozen=True)
class DFedAvgConfig(LocalSGDConfig):
    """Local SGD knobs plus what local SGD trains on.

    Attributes:
        train_split: ``all`` (D^M ∪ D^Q) or ``meta`` (D^M only); with
            ``--tasks`` it defaults to ``meta``, so every method pretrains
            on the same data and a task's support data stays unseen.
    """

    train_split: str = "all"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_train_split(self.train_split)


class DFedAvg(Algorithm):
    """Gossip mixing with W, then E local SGD epochs."""

    name = "dfedavg"
    Config = DFedAvgConfig
