"""FedProx (Li et al., MLSys 2020): FedAvg with a proximal term.

Round t, client k starts from w^t — the server model (``aggregation:
server``) or its gossip neighbourhood average (``gossip``) — and
approximately minimises the proximal local objective

    h_k(w; w^t) = F_k(w) + (μ/2) ‖w − w^t‖²

with E epochs of mini-batch SGD, w ← w − η (∇F_k(w; b) + μ (w − w^t)).
The server (or the next gossip step) then averages the w_k as in FedAvg.
μ = 0 is exactly FedAvg / DFedAvg. The reported ``train_loss`` is h_k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dfml.algorithms.server import FederatedSGDConfig, ServerOrGossip
from dfml.algorithms.sgd import Regularizer
from dfml.errors import ConfigError


@dataclass(frozen=True)
class FedProxConfig(FederatedSGDConfig):
    """FedAvg's knobs plus FedProx's proximal weight.

    Attributes:
        mu: μ, weight of the proximal term (μ/2)‖w − w^t‖².
    """

    aggregation: str = "server"
    mu: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.mu >= 0 and math.isfinite(self.mu)):
            raise ConfigError(f"mu must be a finite number >= 0, got {self.mu}")


def proximal_term(anchor: torch.Tensor, mu: float) -> Regularizer:
    """w ↦ (μ/2) ‖w − w^t‖² with w^t = ``anchor`` held fixed (no gradient)."""
    fixed = anchor.detach()

    def term(w: torch.Tensor) -> torch.Tensor:
        return 0.5 * mu * torch.sum((w - fixed) ** 2)

    return term


class FedProx(ServerOrGossip):
    """Local SGD on F_k + (μ/2)‖w − w^t‖², then FedAvg aggregation."""

    name = "fedprox"
    Config = FedProxConfig

    def regularizer(self, params: torch.Tensor) -> Regularizer | None:
        """(μ/2)‖w − w^t‖², anchored at the round's start point w^t."""
        return proximal_term(params, self.config.mu) if self.config.mu > 0 else None
