"""FedAvg-FT: FedAvg, then local fine-tuning (the PFL baseline of AFML/PFLlib).

Training is FedAvg (``aggregation: server``; DFedAvg with ``gossip``): E
local epochs of SGD from the global model x, x ← Σ_k (n_k / n) x_k. The
model client i *uses* is the fine-tuned one,

    φ_i = x − η Σ_{s < S} ∇ℓ(φ_i^{(s)}; b_s),   b_s ⊂ D^M_i,

S = ``finetune_steps`` mini-batch SGD steps on its support set D^M
(:meth:`Algorithm.adapt`); ``accuracy`` in every round is φ_i's. The Pers.k
protocol still fine-tunes from the published x, so ``pers0_accuracy`` is the
plain FedAvg model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.base import Metrics
from dfml.algorithms.server import FederatedSGDConfig, ServerOrGossip
from dfml.errors import ConfigError

FINETUNE_SALT = 0xF7


@dataclass(frozen=True)
class FedAvgFTConfig(FederatedSGDConfig):
    """FedAvg's knobs plus the fine-tuning that makes the model a client uses.

    Attributes:
        finetune_steps: S, the local fine-tune SGD steps on D^M before use.
    """

    aggregation: str = "server"
    finetune_steps: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.finetune_steps < 0:
            raise ConfigError(f"finetune_steps must be >= 0, got {self.finetune_steps}")


class FedAvgFT(ServerOrGossip):
    """FedAvg whose clients evaluate (use) the model fine-tuned on D^M."""

    name = "fedavg-ft"
    Config = FedAvgFTConfig

    def personalize(self, ctx: ClientContext, state: ClientState) -> torch.Tensor:
        """φ_i: ``finetune_steps`` SGD steps on D^M from the client's vector."""
        seed = ctx.round_seed(state.round, FINETUNE_SALT)
        return self.adapt(ctx, state, state.params, self.config.finetune_steps, seed)

    def evaluate_client(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor | None = None
    ) -> Metrics:
        """The fine-tuned φ_i's test metrics (``params`` given: exactly that vector)."""
        return super().evaluate_client(
            ctx, state, self.personalize(ctx, state) if params is None else params
        )
