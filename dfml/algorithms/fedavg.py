"""FedAvg (McMahan et al., 2017) with a stateless server.

Each round every client trains E epochs from the global model x; the server
step x ← Σ_k (n_k / n) x_k runs as a Ray task next to the data (the driver
only passes refs), and every client adopts x. This is DFedAvg on a star
whose hub holds no data: the same client code, a different message. The
server mechanics live in :class:`~dfml.algorithms.server.ServerOrGossip`
(always in ``server`` mode here; η_g = 1).
"""

from __future__ import annotations

from dfml.algorithms.base import LocalSGDConfig
from dfml.algorithms.server import ServerOrGossip, server_average

__all__ = ["FedAvg", "server_average"]


class FedAvg(ServerOrGossip):
    """Local SGD from the global model, then a data-size weighted average."""

    name = "fedavg"
    Config = LocalSGDConfig
    centralized = True
