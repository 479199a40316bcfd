"""Ditto (Li, Hu, Beirami & Smith, "Ditto: Fair and Robust Federated Learning
Through Personalization", ICML 2021; arXiv:2012.04221), Algorithm 1.

Two models per client i: the global model w, trained exactly as FedAvg
(``aggregation: server``) or DFedAvg (``gossip``), and a personal model v_i
(``ClientState.extras["personal"]``, v_i^0 = w^0) that solves

    min_v h_i(v; w) = f_i(v) + (λ/2) ‖v − w‖².

Round t, client i receives w^t — the server model, or with ``gossip`` its
neighbourhood average — and runs two independent local solvers from it:

1. global update (FedAvg's, unchanged): E = ``local_epochs`` epochs of
   mini-batch SGD from w^t, w ← w − η ∇f_i(w; b), published as w_i^{t+1}
   and aggregated (server: w^{t+1} = Σ_k p_k w_k^{t+1}; gossip: mixing);
2. personal update: ``personal_epochs`` epochs of mini-batch SGD on h_i
   anchored at the *received* w^t (not at the client's new w_i^{t+1}),
   v_i ← v_i − η_v (∇f_i(v_i; b) + λ (v_i − w^t)),  η_v = ``personal_lr``
   (default η).

λ = 0 is purely local training of v_i; λ → ∞ ties v_i to w^t (FedAvg).
The two updates use different mini-batch orders (seed
``ctx.round_seed(round)`` for w, as FedAvg, and ``round_seed(round,
PERSONAL_SALT)`` for v_i), so the w trajectory is bit-for-bit FedAvg's.
Only the clients sampled in a round update v_i (the paper's selected devices).

Metrics: ``train_loss`` is w's mean mini-batch loss (FedAvg's; if v_i's
loss is not finite it is reported instead, so the divergence check stops the
run), ``personal_loss`` the mean h_i over v_i's mini-batches, and
``accuracy`` that of v_i, the model the client uses. In the end-of-run
protocol ``global_accuracy`` scores w̄ and Pers.k fine-tunes v_i
(:meth:`Ditto.adapt`), so ``pers0_accuracy`` is v_i's accuracy. A stable
proximal step needs η_v λ < 2, which the config checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.base import Metrics
from dfml.algorithms.fedprox import proximal_term
from dfml.algorithms.server import FederatedSGDConfig, ServerOrGossip
from dfml.algorithms.sgd import sgd_epochs
from dfml.errors import ConfigError

__all__ = ["PERSONAL", "PERSONAL_SALT", "Ditto", "DittoConfig", "ditto_personal"]

#: The ``ClientState.extras`` key of v_i.
PERSONAL = "personal"
#: Salt of v_i's mini-batch order (w keeps FedAvg's unsalted order).
PERSONAL_SALT = 0xD177


@dataclass(frozen=True)
class DittoConfig(FederatedSGDConfig):
    """FedAvg's knobs (η is ``lr``, for w) plus Ditto's personal model v_i.

    Attributes:
        lam: λ, weight of the term (λ/2)‖v − w^t‖² tying v_i to the received global
            model (0: purely local v_i; personal_lr × lam must be < 2).
        personal_lr: η_v, the SGD step size of v_i's update; ``None`` means ``lr``.
        personal_epochs: passes over the local training data of v_i's update per round.
    """

    aggregation: str = "server"
    lam: float = 0.1
    personal_lr: float | None = None
    personal_epochs: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.lam >= 0 and math.isfinite(self.lam)):
            raise ConfigError(f"lam must be a finite number >= 0, got {self.lam}")
        p = self.personal_lr
        if p is not None and not (p > 0 and math.isfinite(p)):
            raise ConfigError(f"personal_lr must be a positive number or None, got {p}")
        if self.personal_epochs < 1:
            raise ConfigError(f"personal_epochs must be >= 1, got {self.personal_epochs}")
        if self.personal_step * self.lam >= 2:
            raise ConfigError(
                f"personal_lr x lam must be < 2 for a stable Ditto update, "
                f"got {self.personal_step} x {self.lam}"
            )

    @property
    def personal_step(self) -> float:
        """η_v: ``personal_lr``, or ``lr`` when it is None."""
        return self.lr if self.personal_lr is None else self.personal_lr


def ditto_personal(
    ctx: ClientContext,
    v: torch.Tensor,
    anchor: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lam: float,
    lr: float,
    epochs: int,
    batch_size: int,
    seed: int,
) -> tuple[torch.Tensor, float]:
    """v_i's update: SGD on f_i(v) + (λ/2)‖v − w^t‖² from v, w^t = ``anchor``."""
    return sgd_epochs(
        ctx.model,
        v,
        x,
        y,
        lr=lr,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        regularizer=proximal_term(anchor, lam) if lam > 0 else None,
    )


class Ditto(ServerOrGossip):
    """FedAvg for w; each client also trains v_i on f_i + (λ/2)‖v − w^t‖² and uses it."""

    name = "ditto"
    Config = DittoConfig

    def init_state(self, ctx: ClientContext, init_params: torch.Tensor) -> ClientState:
        state = super().init_state(ctx, init_params)
        return state.evolve(extras={**state.extras, PERSONAL: init_params.detach().clone()})

    def local_update(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor
    ) -> tuple[ClientState, Metrics]:
        """w: FedAvg's local SGD from ``params`` = w^t; v_i: SGD on h_i anchored at w^t."""
        cfg = self.config
        new, metrics = super().local_update(ctx, state, params)
        x, y = self.local_data(ctx)
        v, personal_loss = ditto_personal(
            ctx,
            state.extras[PERSONAL],
            params,
            x,
            y,
            lam=cfg.lam,
            lr=cfg.personal_step,
            epochs=cfg.personal_epochs,
            batch_size=cfg.batch_size,
            seed=ctx.round_seed(state.round, PERSONAL_SALT),
        )
        loss = metrics["train_loss"] if math.isfinite(personal_loss) else personal_loss
        new = new.evolve(extras={**new.extras, PERSONAL: v}, last_loss=loss)
        return new, {"train_loss": loss, "personal_loss": personal_loss}

    def adapt(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor, steps: int, seed: int
    ) -> torch.Tensor:
        """Pers.k: fine-tune v_i, the model the client uses.

        Asked to adapt the client's own published vector (``params is
        state.params``, as the Pers.k protocol does) it starts from v_i
        instead; any other vector (e.g. a global model) is fine-tuned as given.
        """
        start = state.extras[PERSONAL] if params is state.params else params
        return super().adapt(ctx, state, start, steps, seed)

    def evaluate_client(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor | None = None
    ) -> Metrics:
        """v_i's test metrics (``params`` given: exactly that vector)."""
        return super().evaluate_client(
            ctx, state, state.extras[PERSONAL] if params is None else params
        )
