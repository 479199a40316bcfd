"""MEFL: Meta-Equilibrize Federated Learning (Tang, Gao, Li & Jia, "MEFL:
Meta-equilibrize federated learning for imbalanced data in IoT").

**Meta-GDP (Alg. 1): Meta-SGD with gradient descent preservation.** The
client keeps the whole inner trajectory in the autograd graph, so the outer
gradient reaches the shared initialisation w through every local step::

    w_i^0 = w,   w_i^{e+1} = w_i^e − α ∘ ∇L_S(w_i^e),   e = 0..E−2    (E − 1 = ``inner_steps``)
    (w, α) ← (w, α) − β ∇_(w,α) L_Q(w_i^{E−1})       (second order through all steps)

τ = ``local_steps`` times per round; the published vector is w‖α.

**EOA (Alg. 2): equilibrated optimizing aggregation.** With x = w‖α and
Δ_k = x_k − x the update of client k, the aggregator weights each client by
its alignment with an EMA of the global update direction and by the inverse
of the EMA of its update variance, then takes a global step::

    s_k = max(cos(Δ_k, m), s_min),  v_k = β_v v_k + (1 − β_v) σ²_k,
    w_k = [s_k / (v_k + ε v̄)] / Σ_j [s_j / (v_j + ε v̄)],
    x  ← x + η_g Σ_k w_k Δ_k,        m ← γ m + (1 − γ) Δ̄.

The exact formulas and the choices made where the paper is ambiguous are in
:mod:`dfml.algorithms.meta.eoa`. ``server``: the server holds x and the EOA
state (a Ray task keeps it in the object store between rounds). ``gossip``:
client i is its own aggregator over N(i) ∪ {i}: x is its own start point of
the last round, x_k its neighbours' published vectors, and it keeps m and
(μ_k, v_k) of each neighbour in its state; on a complete graph this is the
server step, computed by every client.

Knobs: ``inner_lr`` (initial α), ``inner_steps`` E − 1, ``first_order``
(off: GDP), ``meta_lr`` β, ``local_steps`` τ, ``batch_size``,
``aggregation``, ``global_lr`` η_g, ``direction_decay`` γ,
``variance_decay`` β_v, ``variance_eps`` ε, ``min_similarity`` s_min.
Metric ``eoa_weight``: the weight the aggregator gave the client.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import ray
import torch

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.base import Message, Metrics, RunEnv
from dfml.algorithms.fedmeta import FedMetaSGD
from dfml.algorithms.fml import MetaConfig
from dfml.algorithms.meta.eoa import EOAParams, EOAState, eoa_step
from dfml.channels import fetch
from dfml.errors import ConfigError
from dfml.steps import DriverState, Phase, Step, StepResult


@dataclass(frozen=True)
class MEFLConfig(MetaConfig):
    """Meta-GDP knobs plus EOA's γ, β_v, ε, s_min and η_g.

    Attributes:
        global_lr: η_g, EOA's global step x ← x + η_g Σ_k w_k Δ_k.
        direction_decay: γ, EMA decay of the global update direction m, in [0, 1).
        variance_decay: β_v, EMA decay of each client's update variance, in [0, 1).
        variance_eps: ε, variance smoothing in w_k ∝ s_k / (v_k + ε v̄).
        min_similarity: s_min, the floor of a client's cosine alignment with m, in (0, 1].
    """

    inner_steps: int = 2
    global_lr: float = 1.5
    direction_decay: float = 0.9
    variance_decay: float = 0.9
    variance_eps: float = 1e-3
    min_similarity: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            self.eoa()
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def eoa(self) -> EOAParams:
        return EOAParams(
            self.direction_decay,
            self.variance_decay,
            self.variance_eps,
            self.min_similarity,
            self.global_lr,
        )


@ray.remote(num_cpus=0, num_returns=3)
def eoa_server_step(
    state: EOAState, params: EOAParams, ids: Sequence[int], handles: Sequence[Any]
) -> tuple[np.ndarray, EOAState, np.ndarray]:
    """The EOA server step as a Ray task: (new global x, next EOA state, weights);
    ``handles``: the reference x then the clients' published vectors."""
    reference, *vectors = fetch(ray.get, handles)
    out = eoa_step(reference, vectors, ids, state, params)
    return out.aggregate, out.state, out.weights


def state_to_extras(state: EOAState, reference: torch.Tensor) -> dict[str, torch.Tensor]:
    """An aggregator's EOA state as tensors for ``ClientState.extras``."""
    out = {"eoa_reference": reference.detach()}
    if state.direction is None:
        return out
    ids = sorted(state.means)
    out["eoa_direction"] = torch.from_numpy(np.asarray(state.direction, np.float64))
    out["eoa_ids"] = torch.tensor(ids, dtype=torch.int64)
    out["eoa_means"] = torch.from_numpy(np.stack([state.means[k] for k in ids]))
    out["eoa_vars"] = torch.tensor([state.variances[k] for k in ids], dtype=torch.float64)
    return out


def state_from_extras(extras: Mapping[str, torch.Tensor]) -> EOAState:
    if "eoa_direction" not in extras:
        return EOAState()
    ids = [int(k) for k in extras["eoa_ids"].tolist()]
    means = extras["eoa_means"].cpu().numpy()
    variances = extras["eoa_vars"].tolist()
    return EOAState(
        extras["eoa_direction"].cpu().numpy(),
        {k: means[j] for j, k in enumerate(ids)},
        {k: float(variances[j]) for j, k in enumerate(ids)},
    )


@dataclass
class EOAServer:
    """MEFL's slot of ``DriverState.sources`` in server mode: what the server's
    EOA remembers between rounds (checkpointed with the driver state).

    Attributes:
        eoa: the EOA state (after a server step on Ray, a ref to it).
        weights: the last server step's EOA weights (an array, or a ref to one),
            one per client that trained.
    """

    eoa: Any = field(default_factory=EOAState)
    weights: Any = None


class MEFL(FedMetaSGD):
    """Meta-SGD with GDP on the clients; EOA at the server or at each client."""

    name = "mefl"
    Config = MEFLConfig
    #: In gossip mode its client step weighs each neighbour's vector (EOA),
    #: so it cannot mix when it starts an update and train when it ends.
    event_driven: ClassVar[bool] = False

    # ----- server mode -------------------------------------------------
    def server_step(self, state: DriverState, env: RunEnv, refs: Mapping[int, Any]) -> Any:
        """EOA at the server; its state lives in MEFL's slot of ``state.sources``."""
        ids = sorted(refs)
        vectors = [refs[c] for c in ids]
        slot = state.sources.setdefault(self.name, EOAServer())
        if all(isinstance(v, np.ndarray) for v in [state.global_ref, *vectors]):  # in-process
            out = eoa_step(state.global_ref, vectors, ids, slot.eoa, self.config.eoa())
            slot.eoa, slot.weights = out.state, out.weights
            return out.aggregate
        new_global, slot.eoa, slot.weights = eoa_server_step.remote(
            slot.eoa, self.config.eoa(), ids, [state.global_ref, *vectors]
        )
        return new_global

    def absorb(
        self, state: DriverState, step: Step, results: Mapping[int, StepResult], env: RunEnv
    ) -> None:
        super().absorb(state, step, results, env)
        if self.centralized and step.phase == Phase.ADOPT:
            w = state.sources[self.name].weights
            weights = w if isinstance(w, np.ndarray) else ray.get(w)
            for cid, weight in zip(sorted(state.trained), weights, strict=True):
                state.metrics[cid]["eoa_weight"] = float(weight)

    # ----- gossip mode -------------------------------------------------
    def round_messages(self, state: DriverState, env: RunEnv) -> dict[int, Message]:
        messages = super().round_messages(state, env)
        if self.centralized:
            return messages
        return {
            cid: dataclasses.replace(
                m, extra={**m.extra, "neighbor_ids": tuple(env.topology.neighbors(cid))}
            )
            for cid, m in messages.items()
        }

    def client_step(
        self, ctx: ClientContext, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> tuple[ClientState, Metrics]:
        if self.centralized:
            return super().client_step(ctx, state, neighbors, msg)
        eoa_metrics: Metrics = {}
        if state.round == 0:  # nobody has trained yet: plain mixing of the initial vectors
            start, eoa = self.mix(state, neighbors, msg), EOAState()
        else:
            own = state.params.detach().cpu().numpy()
            by_id = {
                ctx.client_id: own,
                **dict(zip(msg.extra["neighbor_ids"], neighbors, strict=True)),
            }
            ids = sorted(by_id)
            reference = state.extras["eoa_reference"].cpu().numpy()
            out = eoa_step(
                reference,
                [by_id[k] for k in ids],
                ids,
                state_from_extras(state.extras),
                self.config.eoa(),
            )
            start, eoa = torch.from_numpy(out.aggregate).to(state.params.device), out.state
            eoa_metrics["eoa_weight"] = float(out.weights[ids.index(ctx.client_id)])
        extras = {k: v for k, v in state.extras.items() if not k.startswith("eoa_")}
        state = state.evolve(params=start, extras={**extras, **state_to_extras(eoa, start)})
        state, metrics = super().client_step(
            ctx, state, [], Message(msg.round, evaluate=msg.evaluate)
        )
        return state, {**metrics, **eoa_metrics}
