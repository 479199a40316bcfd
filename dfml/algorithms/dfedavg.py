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

from dfml.algorithms.base import Algorithm, LocalSGDConfig


class DFedAvg(Algorithm):
    """Gossip mixing with W, then E local SGD epochs."""

    name = "dfedavg"
    Config = LocalSGDConfig
