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

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.base import Metrics
from dfml.algorithms.server import FederatedSGDConfig, ServerOrGossip
from dfml.algorithms.sgd import Regularizer, sgd_epochs
from dfml.errors import ConfigError


@dataclass(frozen=True)
class FedProxConfig(FederatedSGDConfig):
    """μ: weight of the proximal term (μ/2)‖w − w^t‖²."""

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

    def local_update(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor
    ) -> tuple[ClientState, Metrics]:
        cfg = self.config
        new, loss = sgd_epochs(
            ctx.model,
            params,
            ctx.data.x_train,
            ctx.data.y_train,
            lr=cfg.lr,
            epochs=cfg.local_epochs,
            batch_size=cfg.batch_size,
            seed=ctx.round_seed(state.round),
            regularizer=proximal_term(params, cfg.mu) if cfg.mu > 0 else None,
        )
        return state.evolve(params=new, last_loss=loss), {"train_loss": loss}
