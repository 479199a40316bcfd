"""G-FML: one global federated meta-model over all clients — the "group-based
FML" baseline of CL-FML (cluster-based, label-aware federated meta-learning;
slides in ``papers/``), i.e. CL-FML's meta-model learning with a single
cluster that holds every client.

Each client splits its data into a meta-training set D^M (may be label
imbalanced) and a label-balanced query set D^Q. In round t client i

1. aggregates its neighbours' meta-models,
   θ̃_i = Σ_{j ∈ N(i) ∪ {i}} w_ij θ_j with the topology's mixing matrix W
   (CL-FML: w_ij ∝ |D_j|; ``mixing: data-size`` uses |D^M_j ∪ D^Q_j|, and
   D^Q is a fixed fraction of each client's data, so the ratios agree up
   to rounding),
2. trains on D^M for E_M = ``local_epochs`` epochs of SGD,
   θ_i ← θ̃_i − η ∇ℛ_i(θ̃_i)   (η = ``lr``).

The meta-model is then fine-tuned on the client's label-balanced query set
D^Q: :meth:`GFML.adapt` (Pers.k) takes k SGD steps with η on D^Q batches.
``accuracy`` each round is the meta-model's own (before fine-tuning).
With ``aggregation: server`` step 1 is the server's data-size average.

The learner on D^M is ``--meta-learner`` (default FOMAML, the same as
CL-FML's, so G-FML vs CL-FML differs by the clustering alone): FOMAML /
MAML / Reptile meta-updates (:func:`meta_update`), or ``sgd``, the slides'
plain step above. A meta-learned model is scored after its own K inner
steps on D^M, as the meta-learning family scores.

Knobs: ``local_epochs`` E_M, ``lr`` η, ``batch_size``, ``aggregation``
(default ``gossip``: CL-FML is decentralized), ``meta_learner``,
``inner_lr`` α, ``inner_steps`` K, ``train_split`` (default ``meta``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.base import Metrics, check_train_split
from dfml.algorithms.fml import EVAL_SALT, adapt_on_meta
from dfml.algorithms.meta.episodes import EPISODE_LABELS, label_episode, restricted_loss
from dfml.algorithms.meta.maml import (
    Batch,
    InitFn,
    LossFn,
    first_order_gradient,
    inner_loop,
    maml_gradient,
    model_loss,
    sample_batch,
)
from dfml.algorithms.meta.prototypes import prototype_head
from dfml.algorithms.meta.reptile import reptile_step
from dfml.algorithms.privacy.accounting import DataSizes, Usage, meta_usage, sgd_usage
from dfml.algorithms.privacy.dpsgd import GradientFn, Privatizer
from dfml.algorithms.server import FederatedSGDConfig, ServerOrGossip
from dfml.algorithms.sgd import evaluate
from dfml.errors import ConfigError
from dfml.models.flat import FlatModel
from dfml.models.head import head_layout

META_LEARNERS = ("fomaml", "maml", "reptile", "sgd")
EPISODES = ("batch", "labels")
#: How a meta-update's inner loop starts its head: as it is, or from the support prototypes.
EPISODE_HEADS = ("linear", "prototype")


@dataclass(frozen=True)
class GFMLConfig(FederatedSGDConfig):
    """G-FML's knobs: where clients meet, what they train on, and the learner.

    Attributes:
        train_split: ``meta`` (D^M only: D^Q is the fine-tuning data) or
            ``all`` (D^M ∪ D^Q).
        meta_learner: how a client meta-trains on D^M each round:
            ``fomaml`` (first-order MAML), ``maml`` (second order),
            ``reptile``, or ``sgd`` (the slides' plain step
            θ ← θ̃ − η ∇ℛ(θ̃)). The outer step size is ``lr``.
        inner_lr: α, the inner (adaptation) step size of fomaml, maml and
            reptile.
        inner_steps: K, inner steps per meta-update (fomaml, maml, reptile).
        episodes: what one meta-update's support and query are: ``batch``
            (two independent batches of D^M) or ``labels`` (a label subset of
            2–5 labels, ``episode_shots`` support samples per label, query
            samples of the same labels, losses over those labels' logits:
            the shape of a task; :mod:`~dfml.algorithms.meta.episodes`).
        episode_shots: support samples per label of a ``labels`` episode.
        episode_head: the head a meta-update's inner loop starts from:
            ``linear`` (θ's own head rows) or ``prototype`` (the rows of the
            support set's labels set to W_c = 2μ_c, b_c = −‖μ_c‖², μ_c the
            mean embedding of label c's support samples, as a task with
            ``--task-head prototype`` starts; the meta-gradient flows
            through the prototypes, so θ learns embeddings whose prototypes
            adapt well: Proto-MAML). Defaults to the task service's
            ``task_head``. No effect with ``meta_learner`` ``sgd``.
    """

    train_split: str = "meta"
    meta_learner: str = "fomaml"
    inner_lr: float = 0.1
    inner_steps: int = 1
    episodes: str = "batch"
    episode_shots: int = 2
    episode_head: str = "linear"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_train_split(self.train_split)
        if self.meta_learner not in META_LEARNERS:
            raise ConfigError(
                f"meta_learner must be one of {', '.join(META_LEARNERS)}, got {self.meta_learner!r}"
            )
        if not (self.inner_lr > 0 and math.isfinite(self.inner_lr)):
            raise ConfigError(f"inner_lr must be a positive number, got {self.inner_lr}")
        if self.inner_steps < 1:
            raise ConfigError(f"inner_steps must be >= 1, got {self.inner_steps}")
        if self.episodes not in EPISODES:
            raise ConfigError(
                f"episodes must be one of {', '.join(EPISODES)}, got {self.episodes!r}"
            )
        if self.episode_head not in EPISODE_HEADS:
            raise ConfigError(
                f"episode_head must be one of {', '.join(EPISODE_HEADS)}, got {self.episode_head!r}"
            )
        if self.episode_shots < 1:
            raise ConfigError(f"episode_shots must be >= 1, got {self.episode_shots}")
        if self.meta_learner == "reptile" and self.lr > 1:
            raise ConfigError(
                f"meta_learner reptile interpolates θ + lr (φ − θ): lr must be <= 1, got {self.lr}"
            )


def meta_update(
    cfg: GFMLConfig,
    model: FlatModel,
    theta: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    rng: np.random.Generator,
    privacy: Privatizer | None = None,
) -> tuple[torch.Tensor, float]:
    """One meta-update of ``cfg.meta_learner`` on an episode of (x, y); also its loss.

    fomaml / maml: φ = θ − α ∇L_S (K steps);  θ ← θ − η ∇_θ L_Q(φ) (first
    order: ∇L_Q(φ)).  reptile: K SGD steps of α, θ ← θ + η (φ_K − θ).
    η = ``lr``, α = ``inner_lr``, K = ``inner_steps``. The episode (S, Q)
    is two independent batches of D^M (``episodes: batch``), or a label
    subset with its losses over those labels' logits (``episodes: labels``,
    :func:`~dfml.algorithms.meta.episodes.label_episode`); reptile's inner
    steps then run on S ∪ Q. With ``episode_head: prototype`` the inner
    loop starts from θ with the head rows of S's labels set to their
    prototypes (:func:`~dfml.algorithms.meta.prototypes.prototype_head`).
    With ``privacy`` (``batch`` episodes, fomaml or reptile, linear head)
    every gradient is DP-SGD's, clipped and noised.
    """
    b = cfg.batch_size
    loss_fn = model_loss(model)
    episode = None
    if cfg.episodes == "labels":
        query = max(cfg.episode_shots, b // EPISODE_LABELS[1])
        episode = label_episode(x, y, cfg.episode_shots, query, rng)
    if episode is None:  # the draws of the plain rule, in its order
        gradient = None if privacy is None else privacy.gradient_fn(model)
        if cfg.meta_learner == "reptile":
            batches = [sample_batch(x, y, b, rng) for _ in range(cfg.inner_steps)]
            return _reptile(cfg, model, loss_fn, theta, batches, batches[0], gradient)
        support, query_batch = sample_batch(x, y, b, rng), sample_batch(x, y, b, rng)
        if gradient is not None:  # fomaml (maml is refused by private_usage)
            g, value = first_order_gradient(
                gradient, theta, support, query_batch, cfg.inner_lr, cfg.inner_steps
            )
            return theta - cfg.lr * g, float(value)
    else:
        labels, support, query_batch = episode
        loss_fn = restricted_loss(model, labels)
        if cfg.meta_learner == "reptile":
            both = (
                torch.cat([support[0], query_batch[0]]),
                torch.cat([support[1], query_batch[1]]),
            )
            return _reptile(cfg, model, loss_fn, theta, [both] * cfg.inner_steps, support)
    g, loss = maml_gradient(
        loss_fn,
        theta,
        support,
        query_batch,
        cfg.inner_lr,
        cfg.inner_steps,
        first_order=cfg.meta_learner == "fomaml",
        init=_head_init(cfg, model, support),
    )
    return theta - cfg.lr * g, float(loss)


def _head_init(cfg: GFMLConfig, model: FlatModel, support: Batch) -> InitFn | None:
    """θ → θ with S's labels' head rows at their prototypes (``episode_head: prototype``)."""
    if cfg.episode_head != "prototype":
        return None
    layout = head_layout(model)
    x, y = support
    labels = sorted(set(y.tolist()))
    return lambda t: prototype_head(layout, t, x, y, labels)


def _reptile(
    cfg: GFMLConfig,
    model: FlatModel,
    loss_fn: LossFn,
    theta: torch.Tensor,
    batches: list[Batch],
    support: Batch,
    gradient: GradientFn | None = None,
) -> tuple[torch.Tensor, float]:
    """Reptile's step; with a prototype head the inner steps start from the
    prototype-initialised θ and θ moves towards where they end."""
    init = _head_init(cfg, model, support)
    if init is None:
        return reptile_step(loss_fn, theta, batches, cfg.inner_lr, cfg.lr, gradient)
    start = init(theta.detach()).detach()
    phi, loss = reptile_step(loss_fn, start, batches, cfg.inner_lr, 1.0, gradient)
    return theta + cfg.lr * (phi - theta), loss


class GFML(ServerOrGossip):
    """Decentralized meta-training on D^M (the global meta-model); fine-tuning on D^Q."""

    name = "gfml"
    Config = GFMLConfig

    @property
    def learner(self) -> str:
        """The meta-learner (``sgd`` for configs without one: C-DFedAvg)."""
        return getattr(self.config, "meta_learner", "sgd")

    def private_usage(self, sizes: DataSizes) -> Usage:
        """sgd: plain DP-SGD epochs; fomaml: K + 1 noised gradients per meta-update;
        reptile: K; E_M·⌈n/B⌉ meta-updates on the local data. Not maml (second
        order), nor ``labels`` episodes (label-stratified batches have no single
        sampling rate), nor a prototype episode head (un-noised embeddings)."""
        cfg = self.config
        n = sizes.meta if cfg.train_split == "meta" else sizes.train
        if self.learner == "sgd":
            return sgd_usage(n, cfg.batch_size, cfg.local_epochs)
        if self.learner == "maml":
            raise ConfigError(
                "gfml's second-order MAML meta-gradient is not a sum of per-sample gradients: "
                "DP-SGD needs --meta-learner fomaml, reptile or sgd"
            )
        if cfg.episode_head != "linear":
            raise ConfigError(
                "a prototype head is built from un-noised support embeddings: DP-SGD needs "
                "--episode-head linear"
            )
        if cfg.episodes != "batch":
            raise ConfigError(
                "DP-SGD accounts uniformly sampled batches: it needs --episodes batch, "
                f"not {cfg.episodes}"
            )
        updates = cfg.local_epochs * math.ceil(n / cfg.batch_size)
        per_update = cfg.inner_steps + (1 if self.learner == "fomaml" else 0)
        return meta_usage([n], cfg.batch_size, updates * per_update)

    def local_update(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor
    ) -> tuple[ClientState, Metrics]:
        """E_M epochs of ``meta_learner`` meta-updates on D^M from the mix θ̃_i.

        An epoch is ⌈|D^M| / B⌉ meta-updates, so every learner sees as many
        batches as plain SGD would. Support S and query Q are independent
        batches of D^M: D^Q stays untouched for fine-tuning.
        """
        cfg = self.config
        if self.learner == "sgd":
            return super().local_update(ctx, state, params)
        x, y = self.local_data(ctx)
        if len(y) == 0:
            return state.evolve(params=params.detach()), {}
        rng = np.random.default_rng(ctx.round_seed(state.round))
        privacy = self.privatizer(ctx, state)
        updates = cfg.local_epochs * math.ceil(len(y) / cfg.batch_size)
        theta, total = params.detach(), 0.0
        for _ in range(updates):
            theta, loss = meta_update(cfg, ctx.model, theta, x, y, rng, privacy)
            total += loss
        loss = total / updates
        return state.evolve(params=theta.detach(), last_loss=loss), {"train_loss": loss}

    def adapt(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor, steps: int, seed: int
    ) -> torch.Tensor:
        """A meta-learned model adapts as the family does (α steps on D^M); ``sgd``:
        k fine-tuning steps θ ← θ − η ∇ℛ(θ; B), B ~ D^Q (D^M if D^Q is empty)."""
        if self.learner != "sgd":
            cfg = self.config
            return adapt_on_meta(ctx, params, steps, seed, cfg.inner_lr, cfg.batch_size)
        d = ctx.data
        x, y = (d.x_query, d.y_query) if len(d.y_query) else (d.x_meta, d.y_meta)
        if steps == 0 or len(y) == 0:
            return params
        rng = np.random.default_rng(seed)
        theta = params.detach()
        loss = model_loss(ctx.model)
        for _ in range(steps):
            batch = sample_batch(x, y, self.config.batch_size, rng)
            theta = inner_loop(loss, theta, batch, self.config.lr, 1).detach()
        return theta

    def evaluate_client(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor | None = None
    ) -> Metrics:
        """A meta-learned model is scored as the family scores: after K adaptation steps.

        ``accuracy`` is then the adapted model's, ``init_accuracy`` the
        meta-model's own (a MAML-style initialisation is not meant to be
        used unadapted).
        """
        if params is not None or self.learner == "sgd":
            return super().evaluate_client(ctx, state, params)
        seed = ctx.round_seed(state.round, EVAL_SALT)
        adapted = self.adapt(ctx, state, state.params, self.config.inner_steps, seed)
        d = ctx.data
        loss, acc = evaluate(ctx.model, adapted, d.x_test, d.y_test)
        _, init_acc = evaluate(ctx.model, state.params, d.x_test, d.y_test)
        return {"test_loss": loss, "accuracy": acc, "init_accuracy": init_acc}
