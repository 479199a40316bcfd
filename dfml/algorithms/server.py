"""Centralized or decentralized: one switch, the same client code.

An algorithm built on :class:`ServerOrGossip` lets its clients meet in one of
two ways, chosen by the config field ``aggregation``:

* ``"gossip"`` (decentralized) — client i starts round t from the relaxed
  neighbourhood average

      x_i ← (1 − η_g) x_i + η_g Σ_{j ∈ N(i) ∪ {i}} w_ij x_j,

  with row i of the topology's mixing matrix W (the base
  :class:`~dfml.algorithms.base.Algorithm` gossip; η_g = 1 is plain gossip);
* ``"server"`` (centralized: FedAvg's star whose hub holds no data) — every
  client starts from the global model x, trains and publishes x_k; the server
  step

      x ← (1 − η_g) x + η_g Σ_k p_k x_k,   p_k = n_k / n,

  runs as a Ray task next to the data (the driver passes refs only), and
  every client adopts x (:meth:`ServerOrGossip.adopt_global`).

η_g is :meth:`ServerOrGossip.server_lr`: the config's ``global_lr`` if it
has one (β for pFedMe, MEFL's global learning rate), else 1 (FedAvg). The
client half is identical in both modes: with the empty server message
:meth:`Algorithm.mix` returns the client's own vector, which is the adopted
global model. In server mode a client is evaluated after adopting x, so its
``accuracy`` is that of the model it would use from then on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import ray

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.aggregate import data_size_weights, weighted_average
from dfml.algorithms.base import (
    CLIENT_STEP,
    Algorithm,
    BatchedStepFn,
    LocalSGDConfig,
    Message,
    Metrics,
    RunEnv,
    scores,
)
from dfml.channels import fetch
from dfml.errors import ConfigError
from dfml.models.flat import FlatModel
from dfml.programs import Program, register
from dfml.steps import DriverState, Phase, Step, StepResult

AGGREGATIONS = ("gossip", "server")

#: The program of the adopt step: every client takes the server's model
#: (:meth:`ServerOrGossip.adopt_global`).
ADOPT_GLOBAL = "adopt_global"


def check_aggregation(value: str) -> None:
    """Raise a one-line :class:`ConfigError` unless ``value`` is in :data:`AGGREGATIONS`."""
    if value not in AGGREGATIONS:
        raise ConfigError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {value!r}")


@dataclass(frozen=True)
class FederatedSGDConfig(LocalSGDConfig):
    """Local SGD knobs plus where clients meet.

    Attributes:
        aggregation: ``gossip`` (neighbour mixing over the topology) or
            ``server`` (FedAvg's star: a server step averages the clients).
    """

    aggregation: str = "gossip"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_aggregation(self.aggregation)


@ray.remote(num_cpus=0)
def server_average(weights: Sequence[float], handles: Sequence[Any]) -> np.ndarray:
    """The server step as a Ray task (num_cpus=0: actors may hold every CPU);
    it reads the clients' published vectors itself (each packed object once)."""
    return weighted_average(fetch(ray.get, handles), weights)


def average(weights: Sequence[float], vectors: Sequence[Any]) -> Any:
    """Σ_k weights_k x_k: a Ray task on object refs, computed here on arrays
    (the single-process federation passes arrays instead of refs)."""
    if all(isinstance(v, np.ndarray) for v in vectors):
        return weighted_average(vectors, weights)
    return server_average.remote(weights, list(vectors))


def relaxed_weights(
    self_weight: float, weights: Sequence[float], eta: float
) -> tuple[float, tuple[float, ...]]:
    """Row i of (1 − η) I + η W, given row i of W as (w_ii, (w_ij)_j)."""
    return (1.0 - eta) + eta * self_weight, tuple(eta * w for w in weights)


class ServerOrGossip(Algorithm):
    """Driver half for both modes; subclasses write only the local update.

    In server mode a round is two steps: ``train`` (the sampled clients) and
    ``adopt`` (every live client takes the new global model); the server
    step between them averages the sampled clients' vectors with weights
    p_k = n_k / Σ_{sampled} n.
    """

    @property
    def centralized(self) -> bool:
        """True when clients meet through a server (``aggregation: server``)."""
        return getattr(self.config, "aggregation", "gossip") == "server"

    def server_lr(self) -> float:
        """η_g of the relaxed server / gossip step (1: replace by the average)."""
        return float(getattr(self.config, "global_lr", 1.0))

    # ----- driver half -------------------------------------------------
    def next_step(self, state: DriverState, env: RunEnv) -> Step | None:
        if not self.centralized:
            return super().next_step(state, env)
        if Phase.TRAIN not in state.phases:
            if state.global_ref is None:  # every client starts from the same init
                state.global_ref = state.refs[min(state.refs)]
            return Step(
                Phase.TRAIN,
                CLIENT_STEP,
                state.round,
                {cid: Message(round=state.round) for cid in env.sampled},
                bytes_sent=sum(state.nbytes.get(c, 0) for c in env.sampled),
            )
        if Phase.ADOPT not in state.phases:
            trained = sorted(state.trained)
            state.global_ref = self.server_step(state, env, {c: state.refs[c] for c in trained})
            adopt = Message(
                round=state.round, neighbors=(state.global_ref,), weights=(1.0,), self_weight=0.0
            )
            live = env.live()
            return Step(
                Phase.ADOPT,
                ADOPT_GLOBAL,
                state.round,
                dict.fromkeys(live, adopt),
                publish=False,
                bytes_sent=sum(state.nbytes.get(c, 0) for c in live),
            )
        return None

    def round_messages(self, state: DriverState, env: RunEnv) -> dict[int, Message]:
        messages = super().round_messages(state, env)
        eta = self.server_lr()
        if eta == 1.0:
            return messages
        out = {}
        for cid, m in messages.items():
            self_weight, weights = relaxed_weights(m.self_weight, m.weights, eta)
            out[cid] = replace(m, weights=weights, self_weight=self_weight)
        return out

    def server_weights(self, env: RunEnv, ids: Sequence[int]) -> list[float]:
        """p_k = n_k / Σ n over the clients ``ids`` that trained this round."""
        return [float(w) for w in data_size_weights([env.sizes[c] for c in ids])]

    def server_step(self, state: DriverState, env: RunEnv, refs: Mapping[int, Any]) -> Any:
        """x ← (1 − η_g) x + η_g Σ_k p_k x_k next to the data; returns (the ref of) x."""
        ids = sorted(refs)
        weights = self.server_weights(env, ids)
        vectors = [refs[c] for c in ids]
        eta = self.server_lr()
        if eta != 1.0:
            weights, vectors = (
                [1.0 - eta, *(eta * w for w in weights)],
                [state.global_ref, *vectors],
            )
        return average(weights, vectors)

    def absorb(
        self, state: DriverState, step: Step, results: Mapping[int, StepResult], env: RunEnv
    ) -> None:
        super().absorb(state, step, results, env)
        if step.phase == Phase.ADOPT:
            for cid in results:  # every client now holds (and would send) the global model
                state.refs[cid] = state.global_ref

    # ----- client half -------------------------------------------------
    def client_step(
        self, ctx: ClientContext, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> tuple[ClientState, Metrics]:
        """Mix (a no-op in server mode), train; evaluate now only in gossip mode."""
        state, metrics = self.local_update(ctx, state, self.mix(state, neighbors, msg))
        state = state.evolve(round=state.round + 1)
        if self.centralized:
            return state, metrics
        return state, {**metrics, **scores(self, ctx, state, msg)}

    def adopt_global(
        self, ctx: ClientContext, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> tuple[ClientState, Metrics]:
        """x_k ← x (the server's model); report the accuracy of the model now used."""
        state = state.evolve(params=self.mix(state, neighbors, msg))
        return state, scores(self, ctx, state, msg)

    def vectorized_client_step(self, model: FlatModel) -> BatchedStepFn | None:
        """Batched training, evaluated only in gossip mode; see
        :meth:`Algorithm.vectorized_client_step`."""
        if self.batchable(
            model, "client_step", ServerOrGossip, trains=True, evaluates=not self.centralized
        ):
            return self.batched_client_step
        return None

    def vectorized_adopt_global(self, model: FlatModel) -> BatchedStepFn | None:
        """The adopt step with one batched evaluation of the adopted models, or ``None``."""
        if self.batchable(model, "adopt_global", ServerOrGossip, trains=False, evaluates=True):
            return self.batched_adopt_global
        return None

    def batched_client_step(
        self,
        ctxs: Sequence[ClientContext],
        states: Sequence[ClientState],
        neighbors: Sequence[Sequence[np.ndarray]],
        msgs: Sequence[Message],
    ) -> list[tuple[ClientState, Metrics]]:
        """:meth:`client_step` of a cohort; in server mode nobody is scored here."""
        if self.centralized:
            msgs = [replace(m, evaluate=False) for m in msgs]
        return super().batched_client_step(ctxs, states, neighbors, msgs)

    def batched_adopt_global(
        self,
        ctxs: Sequence[ClientContext],
        states: Sequence[ClientState],
        neighbors: Sequence[Sequence[np.ndarray]],
        msgs: Sequence[Message],
    ) -> list[tuple[ClientState, Metrics]]:
        """:meth:`adopt_global` of a cohort: adopt per client, score in one call."""
        adopted = [
            s.evolve(params=self.mix(s, n, m))
            for s, n, m in zip(states, neighbors, msgs, strict=True)
        ]
        return self.batched_scores(ctxs, adopted, msgs, [{} for _ in adopted])


register(
    Program(
        ADOPT_GLOBAL,
        lambda algorithm, ctx, state, neighbors, msg: algorithm.adopt_global(
            ctx, state, neighbors, msg
        ),
        batched=lambda algorithm, model: algorithm.vectorized_adopt_global(model),
        scored=True,
    )
)
