"""An algorithm: its driver half plans steps, its client half runs them.

An :class:`Algorithm` holds both halves of itself (after pfl-research):

* **driver half** — :meth:`next_step` says what runs next in the current
  round (a typed :class:`~dfml.steps.Step`), or ``None`` when the
  round is over; :meth:`absorb` folds a step's results into the explicit
  :class:`~dfml.steps.DriverState`. The driver half keeps no
  state of its own: everything it remembers is in the ``DriverState``, which
  the loop checkpoints. It reads the topology, data sizes and sampled
  clients from the :class:`RunEnv`.
* **client half** — :meth:`init_state` and the methods behind the client
  programs (:meth:`client_step`, ...) run inside the actors, on one client's
  state. They are pure functions of (context, state, neighbour vectors,
  message), so a single-process loop gives the same bits. This module
  registers the base programs (:data:`CLIENT_STEP`, :data:`EVALUATE`) with
  :mod:`dfml.programs`; each calls the algorithm's method, so a subclass
  changes a program by overriding the method.

The algorithm object itself holds only its config, the ``vectorize``
switch and the run's DP-SGD settings (``privacy``), so shipping it to an
actor (also a replacement made mid-run) ships no driver refs. The loop
that drives steps is written once, in :mod:`dfml.runtime.loop`
(:func:`dfml.runtime.loop.run` runs an algorithm on a federation).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.aggregate import stacked_weighted_averages, weighted_average
from dfml.algorithms.batched import batched_evaluate, batched_sgd_epochs, vectorizable
from dfml.algorithms.privacy.accounting import DataSizes, Usage, sgd_usage
from dfml.algorithms.privacy.dpsgd import DPSGD, NOISE_SALT, Privatizer
from dfml.algorithms.seeds import round_seeds
from dfml.algorithms.sgd import Regularizer, evaluate, sgd_epochs
from dfml.errors import ConfigError
from dfml.models.flat import FlatModel
from dfml.programs import Metrics, Program, register
from dfml.steps import (
    PARAMS,
    DriverState,
    Message,
    MessageTable,
    Phase,
    Step,
    StepResult,
    StepSource,
)

if TYPE_CHECKING:
    from dfml.topology.service import FixedTopology, TopologyService

log = logging.getLogger(__name__)

__all__ = [
    "Algorithm",
    "LocalSGDConfig",
    "Message",
    "Metrics",
    "RunEnv",
    "StepResult",
]

#: The program of a training step: mix, local update, score (:meth:`Algorithm.client_step`).
CLIENT_STEP = "client_step"
#: The program of a read-only evaluation step (:meth:`Algorithm.evaluate_only`).
EVALUATE = "evaluate_only"

#: A client method over a cohort at once: (contexts, states, each client's
#: neighbour vectors, messages) → one (state, metrics) per client, in order.
BatchedStepFn = Callable[
    [
        Sequence[ClientContext],
        Sequence[ClientState],
        Sequence[Sequence[np.ndarray]],
        Sequence[Any],
    ],
    list[tuple[ClientState, Metrics]],
]

#: What local training reads: D^M ∪ D^Q, or D^M only (D^Q kept unseen for tasks).
TRAIN_SPLITS = ("all", "meta")

#: The hooks of plain local SGD that the batched client step stands in for:
#: an algorithm overriding one of them trains its clients one by one.
PLAIN_SGD_HOOKS = ("local_update", "local_data")


@dataclass(frozen=True)
class LocalSGDConfig:
    """Knobs shared by every algorithm that trains locally with SGD.

    Attributes:
        local_epochs: E, passes over the local training data per round.
        lr: η, the SGD step size.
        batch_size: mini-batch size of local SGD.
    """

    local_epochs: int = 2
    lr: float = 0.1
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.local_epochs < 1:
            raise ConfigError(f"local_epochs must be >= 1, got {self.local_epochs}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive finite number, got {self.lr}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


def check_train_split(value: str) -> None:
    """One ConfigError line unless ``value`` is one of :data:`TRAIN_SPLITS`."""
    if value not in TRAIN_SPLITS:
        raise ConfigError(f"train_split must be one of {', '.join(TRAIN_SPLITS)}, got {value!r}")


@dataclass
class RunEnv:
    """What the driver half reads (and does not own) while planning a step.

    Attributes:
        topology: neighbours and sparse mixing rows of the live clients (a
            source that makes clients gossip in groups, such as the label
            clustering, hands its learner a fixed sub-graph instead).
        sizes: client id → |D_i| (training samples) of every live client.
        rounds: the number of rounds of the run.
        sampled: the clients that train in the current round.
        seed: the experiment seed.
        evaluate: whether the current round scores the clients (``--eval-every``).
    """

    topology: TopologyService | FixedTopology
    sizes: dict[int, int]
    rounds: int
    sampled: list[int] = field(default_factory=list)
    seed: int = 0
    evaluate: bool = True

    def live(self) -> list[int]:
        return sorted(self.sizes)


class Algorithm(StepSource):
    """Base class: DFedAvg-style gossip mixing followed by a local update.

    Its driver half is the run's first step source (:class:`~dfml.steps.StepSource`).
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = LocalSGDConfig
    #: Whether clients may join and leave while it runs (``--schedule``).
    elastic: ClassVar[bool] = True
    #: Whether a client keeps state about each neighbour's messages (CHOCO-SGD's
    #: sum of public copies): then every client takes part in every round, over
    #: the same weighted graph, so sampling (``--clients-per-round``,
    #: ``--participation``) and a graph drawn afresh each round (a dynamic
    #: topology) are refused.
    fixed_neighbours: ClassVar[bool] = False
    #: Whether its rounds may run event-driven (``--schedule-mode async``,
    #: :mod:`dfml.algorithms.asynchronous`): a round is one gossip training
    #: step (:meth:`round_messages`, then the client step) whose client step
    #: is :meth:`mix` followed by the local update, so a client can mix when
    #: it starts an update and train when it ends, on its own.
    event_driven: ClassVar[bool] = True
    #: The channel a client's neighbours read to mix (:meth:`round_messages`):
    #: its vector, or a compressed form of it.
    gossip_channel: ClassVar[str] = PARAMS
    #: Constructor keywords a composed mixin adds (the robust mixing's
    #: ``robustness``): its instances pickle with them (:func:`composed`).
    composed_settings: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, config: Any, *, vectorize: bool = True, privacy: DPSGD | None = None
    ) -> None:
        """``vectorize``: let an actor run a cohort's plain local SGD as one
        vectorised computation (:meth:`vectorized_client_step`; ``--vectorize``).
        ``privacy``: train with DP-SGD (clipping bound and noise multiplier;
        ``--dp-clip``); a config whose training DP-SGD cannot privatise
        refuses it here (:meth:`private_usage`'s one line), also from Python."""
        self.config = config
        self.vectorize = vectorize
        self.privacy = privacy
        if privacy is not None:
            self.private_usage(DataSizes(meta=1, query=1))

    # ----- driver half -------------------------------------------------
    def next_step(self, state: DriverState, env: RunEnv) -> Step | None:
        """The next step of the current round, or ``None`` when it is over.

        Default: one training step of the sampled clients.
        """
        if Phase.TRAIN in state.phases:
            return None
        return self.train_step(state, env)

    def train_step(self, state: DriverState, env: RunEnv) -> Step:
        messages = self.round_messages(state, env)
        return Step(
            Phase.TRAIN,
            CLIENT_STEP,
            state.round,
            messages,
            bytes_sent=self.gossip_bytes(state, env, messages),
        )

    def round_messages(self, state: DriverState, env: RunEnv) -> Mapping[int, Message]:
        """Gossip: client i mixes its neighbours' last vectors (their
        :attr:`gossip_channel`) with its mixing row."""
        refs = state.channels[self.gossip_channel]
        rows = []
        for i in env.sampled:
            self_weight, row = env.topology.mixing_row(i)
            nbrs = sorted(row)
            rows.append((i, self_weight, [refs[j] for j in nbrs], [row[j] for j in nbrs]))
        return MessageTable.build(state.round, rows)

    def gossip_bytes(self, state: DriverState, env: RunEnv, messages: Mapping[int, Any]) -> int:
        """Bytes of the neighbour values ``messages`` make clients fetch (the
        sizes of their :attr:`gossip_channel`: compressed where it is)."""
        sizes = state.sizes.get(self.gossip_channel, {})
        return sum(sizes.get(j, 0) for i in messages for j in env.topology.neighbors(i))

    def absorb(
        self, state: DriverState, step: Step, results: Mapping[int, StepResult], env: RunEnv
    ) -> None:
        """Fold ``results`` into ``state``: published refs, metrics, who trained."""
        if step.publish:
            state.publish(results)
        state.merge_metrics(results)
        if step.phase == Phase.TRAIN:
            state.trained |= set(results)

    def check_setup(self, client_labels: Mapping[int, Sequence[int]]) -> None:
        """Refuse, before any actor starts, a config this partition cannot serve.

        ``client_labels``: client id → the labels of its training data (ℒ_i).
        """
        return None

    def summary(self, state: DriverState) -> dict[str, Any]:
        """Keys this algorithm adds to summary.json (from its driver state)."""
        return {}

    def private_usage(self, sizes: DataSizes) -> Usage:
        """The DP-SGD steps one round of local training takes on a client with
        ``sizes``, and the rate to account them at (privacy accounting and the
        σ of ``--dp-epsilon`` read it before any actor starts).

        Default: E local epochs of SGD on :meth:`local_data`, E·⌈n/B⌉ steps at
        q = B/n, where the local update is the base's. An algorithm that
        trains otherwise overrides this, or cannot train privately: one
        :class:`ConfigError` line saying why.
        """
        cls = type(self)
        if any(getattr(cls, hook) is not getattr(Algorithm, hook) for hook in PLAIN_SGD_HOOKS):
            raise ConfigError(
                f"algorithm {self.name!r} trains with its own local update, which DP-SGD "
                "does not privatise"
            )
        cfg = self.config
        meta_only = getattr(cfg, "train_split", "all") == "meta"
        return sgd_usage(sizes.meta if meta_only else sizes.train, cfg.batch_size, cfg.local_epochs)

    def privatizer(self, ctx: ClientContext, state: ClientState) -> Privatizer | None:
        """The client's DP-SGD for this round (its own noise seed), or ``None`` without DP."""
        if self.privacy is None:
            return None
        return self.privacy.start(ctx.round_seed(state.round, NOISE_SALT))

    # ----- client half (runs in actors) --------------------------------
    def vectorized_client_step(self, model: FlatModel) -> BatchedStepFn | None:
        """The vectorised :meth:`client_step` for a cohort sharing ``model``, or
        ``None``: then the actor runs the clients one by one.

        Offered when the client step is this class's own around plain SGD
        (:meth:`batchable`): at 10,000 clients the per-call cost of ~2 tiny
        SGD steps per client is most of a round. The batched step equals the
        per-client one up to float rounding.
        """
        if self.batchable(model, "client_step", Algorithm, trains=True, evaluates=True):
            return self.batched_client_step
        return None

    def batchable(
        self, model: FlatModel, method: str, owner: type, *, trains: bool, evaluates: bool
    ) -> bool:
        """Whether the batched form of client method ``method`` computes what it does.

        True when ``vectorize`` is on; the model is one the batched functions
        run bit-stably (:func:`~dfml.algorithms.batched.vectorizable`: the
        MLPs; no dropout, no convolutions); ``method`` is ``owner``'s (the
        class that wrote its batched form, not an override); if the step
        ``trains``, the local update is the base :meth:`local_update` on the
        base :meth:`local_data` and :meth:`regularizer` gives none (FedProx
        with μ = 0 qualifies); and if it ``evaluates``, the score is the base
        :meth:`evaluate_client`. Mixing always runs per client, so an
        overridden :meth:`mix` is fine.
        """
        cls = type(self)
        hooks = [*(PLAIN_SGD_HOOKS if trains else ()), *(("evaluate_client",) if evaluates else ())]
        return (
            self.vectorize
            and vectorizable(model)
            and getattr(cls, method) is getattr(owner, method)
            and all(getattr(cls, name) is getattr(Algorithm, name) for name in hooks)
            and not (trains and self.regularizer(torch.zeros(model.size)) is not None)
        )

    def init_state(self, ctx: ClientContext, init_params: torch.Tensor) -> ClientState:
        labels = tuple(int(v) for v in torch.unique(ctx.data.y_train).tolist())
        return ClientState(ctx.client_id, init_params, labels=labels)

    def publish(self, ctx: ClientContext, state: ClientState) -> dict[str, Any]:
        """The named channels of this algorithm a client publishes after a step.

        Its vector (``params``); an algorithm may add its own, each a numpy
        array or an :class:`~dfml.channels.Encoded` value (a compressed
        vector). (The actor adds the extras a program declares as channels,
        :attr:`Program.channels`.) Channels are functions of the state, so a
        restored client re-publishes every one of them.
        """
        return {PARAMS: state.params.detach().cpu().numpy()}

    def model_vector(self, ctx: ClientContext, vector: torch.Tensor) -> torch.Tensor:
        """The model parameters inside a published vector (Meta-SGD's θ of θ‖α)."""
        return vector

    def mix(
        self, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> torch.Tensor:
        """x_i ← w_ii x_i + Σ_j w_ij x_j (returns the mixed vector on the state's device)."""
        if not neighbors:
            return state.params if msg.self_weight == 1.0 else state.params * msg.self_weight
        own = state.params.detach().cpu().numpy()
        mixed = weighted_average([own, *neighbors], [msg.self_weight, *msg.weights])
        return torch.from_numpy(mixed).to(state.params.device)

    def local_data(self, ctx: ClientContext) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples local SGD trains on: D^M ∪ D^Q, or D^M alone where the
        config says ``train_split: meta`` (so a task's support data D^Q stays
        unseen until the task fine-tunes on it)."""
        if getattr(self.config, "train_split", "all") == "meta":
            return ctx.data.x_meta, ctx.data.y_meta
        return ctx.data.x_train, ctx.data.y_train

    def regularizer(self, params: torch.Tensor) -> Regularizer | None:
        """An extra loss term anchored at the round's start point (default: none)."""
        return None

    def local_update(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor
    ) -> tuple[ClientState, Metrics]:
        """E local epochs of SGD on :meth:`local_data` (+ :meth:`regularizer`)."""
        cfg = self.config
        x, y = self.local_data(ctx)
        new, loss = sgd_epochs(
            ctx.model,
            params,
            x,
            y,
            lr=cfg.lr,
            epochs=cfg.local_epochs,
            batch_size=cfg.batch_size,
            seed=ctx.round_seed(state.round),
            regularizer=self.regularizer(params),
            privacy=self.privatizer(ctx, state),
        )
        return state.evolve(params=new, last_loss=loss), {"train_loss": loss}

    def batched_local_update(
        self,
        ctxs: Sequence[ClientContext],
        states: Sequence[ClientState],
        params: torch.Tensor | Sequence[torch.Tensor],
        *,
        advance: bool = False,
    ) -> tuple[list[ClientState], list[Metrics]]:
        """:meth:`local_update` of a cohort as one vectorised computation
        (:func:`~dfml.algorithms.batched.batched_sgd_epochs`); only valid
        where :meth:`batchable` holds.

        ``params``: the start vectors, one per client, or already stacked
        [C, P] (then trained in place). Each new state's vector is a row of
        one [C, P] matrix, not a copy: the actor copies the rows out when
        only part of its clients stepped (:meth:`ClientActor.step`), since a
        row kept by a client that sits out would keep the whole matrix alive.
        ``advance``: the states also move to the next round (one ``evolve``
        per client, not two).
        """
        cfg = self.config
        data = [self.local_data(ctx) for ctx in ctxs]
        stacked = params if isinstance(params, torch.Tensor) else torch.stack(list(params))
        new, losses = batched_sgd_epochs(
            ctxs[0].model,
            stacked,
            [x for x, _ in data],
            [y for _, y in data],
            lr=cfg.lr,
            epochs=cfg.local_epochs,
            batch_size=cfg.batch_size,
            seeds=cohort_round_seeds(ctxs, states),
            privacy=self.privacy,
            # Drawn only for DP-SGD: two SeedSequences per client cost ~40 s a
            # round at a million clients.
            noise_seeds=cohort_round_seeds(ctxs, states, NOISE_SALT)
            if self.privacy is not None and self.privacy.clipped
            else [],
            in_place=isinstance(params, torch.Tensor),
        )
        step = 1 if advance else 0
        out = [
            state.evolve(params=row, last_loss=loss, round=state.round + step)
            for state, row, loss in zip(states, new, losses.tolist(), strict=True)
        ]
        return out, [{"train_loss": s.last_loss} for s in out]

    def mix_cohort(
        self,
        states: Sequence[ClientState],
        neighbors: Sequence[Sequence[np.ndarray]],
        msgs: Sequence[Message],
    ) -> torch.Tensor:
        """:meth:`mix` of every client of a cohort, stacked [C, P].

        With the base :meth:`mix`, one :func:`stacked_weighted_averages` over
        the cohort (the same bits per client); an algorithm that overrides
        :meth:`mix` has it called per client.
        """
        if type(self).mix is not Algorithm.mix:
            return torch.stack(
                [self.mix(s, n, m) for s, n, m in zip(states, neighbors, msgs, strict=True)]
            )
        return stacked_weighted_averages(
            [s.params for s in states],
            [m.self_weight for m in msgs],
            neighbors,
            [m.weights for m in msgs],
        )

    def batched_scores(
        self,
        ctxs: Sequence[ClientContext],
        states: Sequence[ClientState],
        msgs: Sequence[Message],
        metrics: Sequence[Metrics],
        thetas: torch.Tensor | None = None,
    ) -> list[tuple[ClientState, Metrics]]:
        """Each client's ``metrics`` plus, where its message asks, its test
        metrics (:func:`scores`), from one vectorised evaluation.

        ``thetas``: the states' vectors already stacked [C, P] (saves a copy).
        """
        scored = [i for i, msg in enumerate(msgs) if msg.evaluate]
        extra: dict[int, Metrics] = {}
        if scored:
            test = [ctxs[i].data for i in scored]
            if thetas is None:
                thetas = torch.stack([states[i].params for i in scored])
            elif len(scored) < len(states):
                thetas = thetas[scored]
            loss, acc = batched_evaluate(
                ctxs[0].model,
                thetas,
                [d.x_test for d in test],
                [d.y_test for d in test],
            )
            for i, lo, ac in zip(scored, loss.tolist(), acc.tolist(), strict=True):
                extra[i] = {"test_loss": lo, "accuracy": ac}
        return [
            (s, {**m, **extra.get(i, {})})
            for i, (s, m) in enumerate(zip(states, metrics, strict=True))
        ]

    def adapt(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor, steps: int, seed: int
    ) -> torch.Tensor:
        """Personalize ``params`` with ``steps`` SGD mini-batch steps on D^M.

        The fine-tuning of the "Pers.k" evaluation protocol; meta-learning
        algorithms override it with their own inner loop (e.g. Meta-SGD's α).
        """
        cfg = self.config
        x, y = ctx.data.x_meta, ctx.data.y_meta
        if steps == 0 or len(y) == 0:
            return params
        rng = np.random.default_rng(seed)
        theta = params.detach()
        for _ in range(steps):
            idx = torch.from_numpy(rng.choice(len(y), min(cfg.batch_size, len(y)), replace=False))
            theta, _ = sgd_epochs(
                ctx.model, theta, x[idx], y[idx], lr=cfg.lr, epochs=1, batch_size=len(idx), seed=0
            )
        return theta

    def evaluate_client(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor | None = None
    ) -> Metrics:
        """Test loss/accuracy of the model this client would use now; with
        ``params`` given, of exactly that vector (the Pers.k protocol)."""
        loss, acc = evaluate(
            ctx.model, state.params if params is None else params, ctx.data.x_test, ctx.data.y_test
        )
        return {"test_loss": loss, "accuracy": acc}

    def evaluate_only(
        self, ctx: ClientContext, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> tuple[ClientState, Metrics]:
        """Program of a read-only evaluation step (clients that did not train)."""
        return state, self.evaluate_client(ctx, state)

    def client_step(
        self, ctx: ClientContext, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> tuple[ClientState, Metrics]:
        mixed = self.mix(state, neighbors, msg)
        state, metrics = self.local_update(ctx, state, mixed)
        state = state.evolve(round=state.round + 1)
        return state, {**metrics, **scores(self, ctx, state, msg)}

    def batched_client_step(
        self,
        ctxs: Sequence[ClientContext],
        states: Sequence[ClientState],
        neighbors: Sequence[Sequence[np.ndarray]],
        msgs: Sequence[Message],
    ) -> list[tuple[ClientState, Metrics]]:
        """:meth:`client_step` of a cohort: one stacked mix, one vectorised
        local SGD and one vectorised evaluation, all on one [C, P] matrix."""
        mixed = self.mix_cohort(states, neighbors, msgs)
        trained, metrics = self.batched_local_update(ctxs, states, mixed, advance=True)
        return self.batched_scores(ctxs, trained, msgs, metrics, thetas=mixed)


register(
    Program(
        CLIENT_STEP,
        lambda algorithm, ctx, state, neighbors, msg: algorithm.client_step(
            ctx, state, neighbors, msg
        ),
        batched=lambda algorithm, model: algorithm.vectorized_client_step(model),
        scored=True,
    )
)
register(
    Program(
        EVALUATE,
        lambda algorithm, ctx, state, neighbors, msg: algorithm.evaluate_only(
            ctx, state, neighbors, msg
        ),
    )
)


def gossips(cls: type[Algorithm]) -> bool:
    """Whether ``cls``'s clients can meet by gossip over a graph (and so train
    on a sub-graph, or send compressed messages): false for an algorithm that
    aggregates at a server even when its config, where it has the choice,
    says ``gossip``."""
    names = {f.name for f in fields(cls.Config)}
    config = cls.Config(**({"aggregation": "gossip"} if "aggregation" in names else {}))
    return not getattr(cls(config), "centralized", False)


def composed(
    mixin: type,
    learner: type[Algorithm],
    factory: Callable[[type[Algorithm]], type[Algorithm]],
    name: str,
    doc: str,
    config: type,
) -> type[Algorithm]:
    """``mixin`` (a step source that wraps a learner's rounds) in front of ``learner``.

    The class is built at run time, so it cannot be pickled by reference: its
    instances pickle as ``factory(learner)(config, ...)``, which is why the
    factory (a module-level, cached function such as ``clustered`` or
    ``compressed``) travels with the class. ``config`` is the composed config
    class (the learner's fields plus the mixin's section).
    """
    namespace: dict[str, Any] = {
        "__module__": factory.__module__,
        "__qualname__": name,
        "__doc__": doc,
        "__reduce__": _reduce_composed,
        "composer": staticmethod(factory),
        "learner_class": learner,
        "name": learner.name,
        "Config": config,
    }
    return type(name, (mixin, learner), namespace)


def _reduce_composed(algorithm: Any) -> tuple[Any, tuple[Any, ...]]:
    cls = type(algorithm)
    return _rebuild_composed, (
        cls.composer,
        cls.learner_class,
        algorithm.config,
        algorithm.vectorize,
        algorithm.privacy,
        {name: getattr(algorithm, name) for name in cls.composed_settings},
    )


def _rebuild_composed(
    factory: Callable[[type[Algorithm]], type[Algorithm]],
    learner: type[Algorithm],
    config: Any,
    vectorize: bool,
    privacy: DPSGD | None,
    settings: Mapping[str, Any],
) -> Algorithm:
    return factory(learner)(config, vectorize=vectorize, privacy=privacy, **settings)


def cohort_round_seeds(
    ctxs: Sequence[ClientContext], states: Sequence[ClientState], salt: int = 0
) -> list[int]:
    """Each client's ``ctx.round_seed(state.round, salt)``, hashed for the
    cohort at once (:func:`~dfml.algorithms.seeds.round_seeds`)."""
    return round_seeds(
        [
            (ctx.seed, ctx.client_id, state.round, salt)
            for ctx, state in zip(ctxs, states, strict=True)
        ]
    )


def scores(algorithm: Algorithm, ctx: ClientContext, state: ClientState, msg: Message) -> Metrics:
    """The client's evaluation metrics after a step, or none in a round not scored."""
    return algorithm.evaluate_client(ctx, state) if msg.evaluate else {}
