"""What the federated meta-learning algorithms share: config, loop, scoring.

A meta-learning client runs τ = ``local_steps`` meta-updates per round from
the vector it starts the round with (the server's model, or its gossip
mix)::

    for s = 1..τ:  S ~ D^M, Q ~ D^Q (batches of ``batch_size``)
                   v ← meta_update(v; S, Q)          (the method's own rule)

and publishes v. The published vector may hold more than the base model's
parameters (Meta-SGD's θ‖α, AFML's encoder mean and log σ):
:meth:`MetaAlgorithm.model_vector` maps it to the base model, and the bytes
counted per message are the published vector's.

**Scoring.** ``accuracy`` / ``test_loss`` are those of the model a client
would use: the meta-model after the method's own fast adaptation,
:meth:`adapt` with K = ``inner_steps`` steps on D^M (MAML: α steps,
Meta-SGD: α ⊙ steps, AFML: head steps). ``init_accuracy`` is the meta-model
itself, before adaptation. With ``params`` given, :meth:`evaluate_client`
scores exactly that vector (the Pers.k protocol of
:mod:`dfml.algorithms.evaluation`).

Knobs shared by the family (one flag each): ``inner_lr`` α, ``inner_steps``
K, ``first_order``, ``meta_lr`` β, ``local_steps`` τ, ``batch_size`` and
``aggregation`` (``server`` or ``gossip``, see :mod:`dfml.algorithms.server`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.base import Metrics
from dfml.algorithms.meta.maml import inner_loop, model_loss, sample_batch
from dfml.algorithms.privacy.accounting import DataSizes, Usage, meta_usage
from dfml.algorithms.privacy.dpsgd import Privatizer
from dfml.algorithms.server import ServerOrGossip, check_aggregation
from dfml.algorithms.sgd import evaluate
from dfml.errors import ConfigError

EVAL_SALT = 0xE7A1


def check_positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{name} must be a positive number, got {value}")


@dataclass(frozen=True)
class MetaConfig:
    """Knobs of the federated meta-learning family.

    Attributes:
        inner_lr: α, the inner (fast-adaptation) step size; Meta-SGD's initial α.
        inner_steps: K, inner steps on a support batch (and the adaptation
            steps behind the reported ``accuracy``).
        first_order: drop the second-order terms of the meta-gradient.
        meta_lr: β, the outer (meta-update) step size.
        local_steps: τ, meta-updates per client per round.
        batch_size: support and query batch size.
        aggregation: ``server`` (FedAvg-style star) or ``gossip`` (neighbours).
    """

    inner_lr: float = 0.1
    inner_steps: int = 1
    first_order: bool = False
    meta_lr: float = 0.2
    local_steps: int = 5
    batch_size: int = 32
    aggregation: str = "server"

    def __post_init__(self) -> None:
        check_positive("inner_lr", self.inner_lr)
        check_positive("meta_lr", self.meta_lr)
        if self.inner_steps < 0:
            raise ConfigError(f"inner_steps must be >= 0, got {self.inner_steps}")
        if self.local_steps < 1:
            raise ConfigError(f"local_steps must be >= 1, got {self.local_steps}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        check_aggregation(self.aggregation)


def adapt_on_meta(
    ctx: ClientContext, params: torch.Tensor, steps: int, seed: int, lr: float, batch_size: int
) -> torch.Tensor:
    """A meta-model's fast adaptation: ``steps`` steps φ ← φ − α ∇L(φ; B), B ~ D^M."""
    if steps == 0 or len(ctx.data.y_meta) == 0:
        return params
    rng = np.random.default_rng(seed)
    loss = model_loss(ctx.model)
    phi = params.detach()
    for _ in range(steps):
        batch = sample_batch(ctx.data.x_meta, ctx.data.y_meta, batch_size, rng)
        phi = inner_loop(loss, phi, batch, lr, 1).detach()
    return phi


class MetaAlgorithm(ServerOrGossip):
    """τ meta-updates per round; subclasses write :meth:`meta_update`."""

    Config = MetaConfig

    # ----- client half -------------------------------------------------
    def init_state(self, ctx: ClientContext, init_params: torch.Tensor) -> ClientState:
        state = super().init_state(ctx, init_params)
        return state.evolve(params=self.init_vector(ctx, init_params))

    def init_vector(self, ctx: ClientContext, base: torch.Tensor) -> torch.Tensor:
        """The published vector at round 0 built from the base model's init."""
        return base

    def model_vector(self, ctx: ClientContext, vector: torch.Tensor) -> torch.Tensor:
        """The base model's parameters inside a published vector."""
        return vector

    def meta_update(
        self,
        ctx: ClientContext,
        vector: torch.Tensor,
        rng: np.random.Generator,
        privacy: Privatizer | None = None,
    ) -> tuple[torch.Tensor, Metrics]:
        """One meta-update v ← rule(v; batches drawn with ``rng``); metrics need ``train_loss``.

        ``privacy``: the round's DP-SGD, given only to a method whose
        :meth:`private_usage` accepts the config (its gradients then come
        from ``privacy.gradient_fn``).
        """
        raise NotImplementedError

    def private_usage(self, sizes: DataSizes) -> Usage:
        """A meta-learner trains privately only through a first-order path it declares."""
        raise ConfigError(
            f"algorithm {self.name!r} meta-learns through a gradient that is not a sum of "
            "per-sample gradients, which DP-SGD does not privatise"
        )

    def first_order_usage(self, sizes: DataSizes, gradients_per_update: int) -> Usage:
        """``local_steps`` meta-updates of ``gradients_per_update`` noised gradients each,
        on batches of :meth:`support_query`'s sets (D^M, and D^Q unless it is empty)."""
        sets = [sizes.meta, sizes.query] if sizes.query else [sizes.meta]
        steps = self.config.local_steps * gradients_per_update
        return meta_usage(sets, self.config.batch_size, steps)

    def local_update(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor
    ) -> tuple[ClientState, Metrics]:
        rng = np.random.default_rng(ctx.round_seed(state.round))
        privacy = self.privatizer(ctx, state)
        vector = params.detach()
        sums: dict[str, float] = {}
        for _ in range(self.config.local_steps):
            vector, m = self.meta_update(ctx, vector, rng, privacy)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        metrics = {k: v / self.config.local_steps for k, v in sums.items()}
        return state.evolve(params=vector.detach(), last_loss=metrics["train_loss"]), metrics

    def support_query(
        self, ctx: ClientContext, rng: np.random.Generator
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """A support batch S ⊂ D^M and a query batch Q ⊂ D^Q (D^M when D^Q is empty)."""
        d = ctx.data
        b = self.config.batch_size
        support = sample_batch(d.x_meta, d.y_meta, b, rng)
        if len(d.y_query) == 0:
            return support, sample_batch(d.x_meta, d.y_meta, b, rng)
        return support, sample_batch(d.x_query, d.y_query, b, rng)

    def adapt(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor, steps: int, seed: int
    ) -> torch.Tensor:
        """``steps`` inner-loop steps φ ← φ − α ∇L(φ) on fresh D^M batches."""
        return adapt_on_meta(ctx, params, steps, seed, self.config.inner_lr, self.config.batch_size)

    def score(self, ctx: ClientContext, vector: torch.Tensor) -> tuple[float, float]:
        return evaluate(ctx.model, self.model_vector(ctx, vector), ctx.data.x_test, ctx.data.y_test)

    def evaluate_client(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor | None = None
    ) -> Metrics:
        if params is not None:
            loss, acc = self.score(ctx, params)
            return {"test_loss": loss, "accuracy": acc}
        seed = ctx.round_seed(state.round, EVAL_SALT)
        adapted = self.adapt(ctx, state, state.params, self.config.inner_steps, seed)
        loss, acc = self.score(ctx, adapted)
        _, init_acc = self.score(ctx, state.params)
        return {"test_loss": loss, "accuracy": acc, "init_accuracy": init_acc}
