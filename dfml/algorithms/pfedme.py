"""pFedMe (Dinh, Tran & Nguyen, NeurIPS 2020): personalized FL with Moreau envelopes.

Bi-level problem: min_w (1/N) Σ_i F_i(w) with the Moreau envelope

    F_i(w) = min_θ { f_i(θ) + (λ/2) ‖θ − w‖² }.

Client i holds a local model w_i (the published vector) and a personal model
θ_i (``ClientState.extras["theta"]``). Round t: w_i ← w^t (the server model,
or with ``aggregation: gossip`` the β-relaxed neighbourhood average) and
θ ← w_i; then for each of the R mini-batches D_b of E local epochs:

1. θ̂ ≈ argmin_θ f_i(θ; D_b) + (λ/2)‖θ − w_i‖² by K gradient steps with the
   personal learning rate p: θ ← θ − p (∇f_i(θ; D_b) + λ (θ − w_i))
   (θ carries over from the previous batch, as in the authors' code);
2. w_i ← w_i − η λ (w_i − θ̂).

θ_i = θ̂ after the last batch is the model the client uses (``accuracy``).
Server: w ← (1 − β) w + β Σ_i p_i w_i (β is ``global_lr``). Stability
of both updates needs η λ < 2 and p λ < 2, which the config checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.base import Metrics
from dfml.algorithms.fedprox import proximal_term
from dfml.algorithms.server import FederatedSGDConfig, ServerOrGossip
from dfml.algorithms.sgd import minibatches, sgd_epochs
from dfml.errors import ConfigError
from dfml.models.flat import FlatModel


@dataclass(frozen=True)
class PFedMeConfig(FederatedSGDConfig):
    """pFedMe's knobs; η is ``lr``.

    Attributes:
        lam: λ, the Moreau-envelope weight tying θ_i to w_i (lr × λ and personal_lr × λ < 2).
        inner_steps: K, gradient steps that approximate the personal model θ̂ per batch.
        personal_lr: p, the step size of those K personal steps.
        global_lr: β, the server's (or gossip's) relaxation w ← (1 − β) w + β Σ p_i w_i.
    """

    aggregation: str = "server"
    lam: float = 15.0
    inner_steps: int = 5
    personal_lr: float = 0.05
    global_lr: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("lam", "personal_lr", "global_lr"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number, got {value}")
        if self.inner_steps < 1:
            raise ConfigError(f"inner_steps must be >= 1, got {self.inner_steps}")
        for name in ("lr", "personal_lr"):
            if getattr(self, name) * self.lam >= 2:
                raise ConfigError(
                    f"{name} x lam must be < 2 for a stable pFedMe update, "
                    f"got {getattr(self, name)} x {self.lam}"
                )


def moreau_inner(
    model: FlatModel,
    theta: torch.Tensor,
    w: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lam: float,
    steps: int,
    lr: float,
) -> tuple[torch.Tensor, float]:
    """K full-batch gradient steps on f(θ; x, y) + (λ/2)‖θ − w‖² from θ."""
    return sgd_epochs(
        model,
        theta,
        x,
        y,
        lr=lr,
        epochs=steps,
        batch_size=len(y),
        seed=0,
        regularizer=proximal_term(w, lam),
    )


def pfedme_local(
    model: FlatModel,
    w: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lam: float,
    inner_steps: int,
    personal_lr: float,
    lr: float,
    epochs: int,
    batch_size: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One round of pFedMe's client update; returns (w_i, θ_i, mean inner loss)."""
    rng = np.random.default_rng(seed)
    w = w.detach()
    theta = w
    losses = []
    for _ in range(epochs):
        for idx in minibatches(len(y), batch_size, rng):
            ib = torch.from_numpy(idx).to(x.device)
            theta, loss = moreau_inner(
                model, theta, w, x[ib], y[ib], lam=lam, steps=inner_steps, lr=personal_lr
            )
            w = w - lr * lam * (w - theta)
            losses.append(loss)
    return w, theta, float(np.mean(losses)) if losses else float("nan")


class PFedMe(ServerOrGossip):
    """Moreau-envelope personalization; w published, θ_i used."""

    name = "pfedme"
    Config = PFedMeConfig

    def init_state(self, ctx: ClientContext, init_params: torch.Tensor) -> ClientState:
        state = super().init_state(ctx, init_params)
        return state.evolve(extras={**state.extras, "theta": init_params.clone()})

    def local_update(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor
    ) -> tuple[ClientState, Metrics]:
        cfg = self.config
        w, theta, loss = pfedme_local(
            ctx.model,
            params,
            ctx.data.x_train,
            ctx.data.y_train,
            lam=cfg.lam,
            inner_steps=cfg.inner_steps,
            personal_lr=cfg.personal_lr,
            lr=cfg.lr,
            epochs=cfg.local_epochs,
            batch_size=cfg.batch_size,
            seed=ctx.round_seed(state.round),
        )
        state = state.evolve(params=w, extras={**state.extras, "theta": theta}, last_loss=loss)
        return state, {"train_loss": loss}

    def evaluate_client(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor | None = None
    ) -> Metrics:
        """The personal model θ_i's test metrics (``params`` given: that vector)."""
        return super().evaluate_client(
            ctx, state, state.extras["theta"] if params is None else params
        )
