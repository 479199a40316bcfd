"""The round loop, written once, and the hooks an algorithm overrides.

An :class:`Algorithm` holds both halves of itself (after pfl-research):

* **driver half** — :meth:`setup` sees the topology and client sizes;
  :meth:`round_messages` says what each client receives in a round (object
  refs of neighbours' parameters and mixing weights); :meth:`after_round` may
  add a server step (FedAvg) or a separate evaluation.
* **client half** — :meth:`init_state` and :meth:`client_step` run inside the
  actors, on one client's state. They are pure functions of (context, state,
  neighbour vectors, message), so a single-process loop gives the same bits.

The driver only moves object refs and small metric dicts: model parameters
travel actor → object store → actor.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import networkx as nx
import numpy as np
import torch

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.aggregate import weighted_average
from dfml.algorithms.sgd import Regularizer, evaluate, sgd_epochs
from dfml.errors import ConfigError, TrainingDivergedError

if TYPE_CHECKING:
    from dfml.actors.federation import Federation
    from dfml.algorithms.callbacks import Callback

log = logging.getLogger(__name__)

Metrics = dict[str, float]


@dataclass(frozen=True)
class Message:
    """What one client receives for one round.

    ``neighbors`` are object refs (or, in-process, arrays) of the vectors to mix
    with; the client's own vector enters with ``self_weight``:
    x_i ← self_weight·x_i + Σ_j weights[j]·neighbors[j].
    """

    round: int
    neighbors: tuple[Any, ...] = ()
    weights: tuple[float, ...] = ()
    self_weight: float = 1.0
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepResult:
    """A client's answer: the ref of its published vector and small metrics."""

    ref: Any
    metrics: Metrics


@dataclass(frozen=True)
class LocalSGDConfig:
    """Knobs shared by every algorithm that trains locally with SGD."""

    local_epochs: int = 2
    lr: float = 0.1
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.local_epochs < 1:
            raise ConfigError(f"local_epochs must be >= 1, got {self.local_epochs}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class SetupContext:
    """What the driver half learns before round 0."""

    graph: nx.Graph
    mixing: np.ndarray
    train_sizes: Sequence[int]
    param_bytes: int


@dataclass
class RoundRecord:
    """One finished round as the callbacks see it."""

    round: int
    metrics: dict[int, Metrics]
    bytes_sent: int
    seconds: float

    def mean(self, key: str) -> float:
        values = [m[key] for m in self.metrics.values() if key in m]
        return float(np.mean(values)) if values else float("nan")


class Algorithm:
    """Base class: DFedAvg-style gossip mixing followed by a local update."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = LocalSGDConfig

    def __init__(self, config: Any) -> None:
        self.config = config
        self.graph: nx.Graph | None = None
        self.mixing: np.ndarray | None = None
        self.param_bytes = 0
        #: The latest published vector ref per client (driver side, set by :meth:`run`).
        self.refs: dict[int, Any] = {}

    # ----- driver half -------------------------------------------------
    def setup(self, ctx: SetupContext) -> None:
        self.graph, self.mixing, self.param_bytes = ctx.graph, ctx.mixing, ctx.param_bytes

    def round_messages(self, round_index: int, refs: Mapping[int, Any]) -> dict[int, Message]:
        """Gossip: client i mixes its neighbours' last vectors with row i of W."""
        assert self.mixing is not None and self.graph is not None
        messages = {}
        for i in refs:
            nbrs = sorted(self.graph.neighbors(i))
            messages[i] = Message(
                round=round_index,
                neighbors=tuple(refs[j] for j in nbrs),
                weights=tuple(float(self.mixing[i, j]) for j in nbrs),
                self_weight=float(self.mixing[i, i]),
            )
        return messages

    def message_bytes(self, messages: Mapping[int, Message]) -> int:
        return sum(len(m.neighbors) for m in messages.values()) * self.param_bytes

    def after_round(
        self,
        round_index: int,
        federation: Federation,
        refs: dict[int, Any],
        metrics: dict[int, Metrics],
    ) -> tuple[dict[int, Any], dict[int, Metrics], int]:
        """Hook after the client steps: returns (refs, metrics, extra bytes)."""
        return refs, metrics, 0

    # ----- client half (runs in actors) --------------------------------
    def init_state(self, ctx: ClientContext, init_params: torch.Tensor) -> ClientState:
        labels = tuple(int(v) for v in torch.unique(ctx.data.y_train).tolist())
        return ClientState(ctx.client_id, init_params, labels=labels)

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
        """The samples local SGD trains on (default: D^M ∪ D^Q)."""
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
        )
        return state.evolve(params=new, last_loss=loss), {"train_loss": loss}

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

    def evaluate_personalized(
        self, ctx: ClientContext, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> tuple[ClientState, Metrics]:
        """Read-only end-of-run protocol (global, Pers.k, local-only, QoI); the
        global vector is ``neighbors[0]``. See :mod:`dfml.algorithms.evaluation`."""
        from dfml.algorithms.evaluation import personalization_metrics

        return state, personalization_metrics(self, ctx, state, neighbors[0], **msg.extra)

    def client_step(
        self, ctx: ClientContext, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> tuple[ClientState, Metrics]:
        mixed = self.mix(state, neighbors, msg)
        state, metrics = self.local_update(ctx, state, mixed)
        state = state.evolve(round=state.round + 1)
        return state, {**metrics, **self.evaluate_client(ctx, state)}

    # ----- the loop ----------------------------------------------------
    def run(
        self, federation: Federation, rounds: int, callbacks: Sequence[Callback] = ()
    ) -> list[RoundRecord]:
        """The round loop: messages → client steps → after_round → callbacks."""
        import time

        refs = federation.start(self)
        history: list[RoundRecord] = []
        for cb in callbacks:
            cb.on_run_start(self, federation)
        for r in range(rounds):
            t0 = time.perf_counter()
            messages = self.round_messages(r, refs)
            results = federation.step("client_step", messages)
            refs = {cid: res.ref for cid, res in results.items()}
            metrics = {cid: res.metrics for cid, res in results.items()}
            refs, metrics, extra = self.after_round(r, federation, refs, metrics)
            self.refs = refs
            record = RoundRecord(
                r, metrics, self.message_bytes(messages) + extra, time.perf_counter() - t0
            )
            history.append(record)
            for cb in callbacks:
                cb.on_round_end(record)
            check_finite(record)
        for cb in callbacks:
            cb.on_run_end(history)
        return history


def check_finite(record: RoundRecord) -> None:
    """Stop the run on the first client whose loss is NaN/inf."""
    for cid in sorted(record.metrics):
        loss = record.metrics[cid].get("train_loss", 0.0)
        if not math.isfinite(loss):
            raise TrainingDivergedError(cid, record.round, loss)
