"""Secure aggregation in front of any learner whose aggregation is a weighted sum
(``--secure-aggregation``).

:func:`secure` puts :class:`SecureAggregation` in front of a learner, as
:func:`~dfml.algorithms.robust.mixing.robust` does for robust mixing. The
math is :mod:`~dfml.algorithms.secure.masks`; this module decides who masks
what for whom, and where it is published.

**Server mode** (FedAvg, every algorithm with ``--aggregation server``).
The train step tells each client of the round's cohort S its weight
p_k = n_k / Σ_S n and the cohort. After training the client keeps that
*plan* in its state and publishes, on ``params``, the ring element
encode(p_k x_k) + Σ_j ±PRG(s_kj) instead of x_k. The server task sums the
masked vectors (the masks cancel), subtracts the masks survivors share with
clients that never sent (the dropout recovery), decodes and divides by the
survivors' weight. The adopt step hands every client the model and drops
the plan, so what a client publishes afterwards (a restore re-publishes) is
the public global model.

**Gossip mode** (DFedAvg and every learner whose client step is "mix, then
the local update"). Client i's mix x_i ← w_ii x_i + Σ_j w_ij x_j needs only
the sum over its neighbours N(i), so each neighbour j sends i its own
object y_ji = encode(w_ij x_j) + m_ji, with masks from pairwise seeds
among N(i) that sum to zero over N(i); i adds its own term in the clear.
Neighbours learn the round's rows in a ``mask`` step before the train step
(so sampling, membership changes and graphs drawn each round are served),
keep them as their plan and publish one object per receiver on its
channel ``secure:<i>``. ``params`` carries an empty vector. The train step
drops the plan: a stale plan would mask a new vector with old masks, and the
difference of two such objects is the update in the clear.

The plan is part of the client's state, so the fault layer's replicas carry
it and a restored client re-publishes exactly the masked objects it had
published (the masks are functions of the run secret, the round and the
pair): a restore never publishes an unmasked vector. The replicas
themselves hold the client's plain state, as they always do (the replica
holders are trusted, docs/privacy.md's threat model).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import ray
import torch

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.base import Algorithm, Message, Metrics, RunEnv, composed, gossips
from dfml.algorithms.secure.masks import SERVER, decode, mask, ring_sum, unmasked_sum
from dfml.channels import fetch
from dfml.errors import ConfigError
from dfml.models.flat import FlatModel
from dfml.programs import Program, register
from dfml.steps import PARAMS, DriverState, Phase, Step

#: The phase (and program) in which gossip neighbours learn whom they mask for.
MASK_PHASE = "mask"
SECURE_MASK = "secure_mask"
#: The message extra carrying a client's plan: ((receiver, weight, group), ...).
PLAN = "secure_plan"
#: State extras holding the plan (receivers, weights, groups padded with -1, round).
PLAN_RECEIVERS = "secure_receivers"
PLAN_WEIGHTS = "secure_weights"
PLAN_GROUPS = "secure_groups"
PLAN_ROUND = "secure_round"
PLAN_EXTRAS = (PLAN_RECEIVERS, PLAN_WEIGHTS, PLAN_GROUPS, PLAN_ROUND)
#: The slot of :class:`SecureState` in ``DriverState.sources``.
SLOT = "secure"
#: A ring element (uint64) is twice a float32 coordinate.
RING_BYTES_PER_FLOAT32 = 2


def inbox(receiver: int) -> str:
    """The channel on which gossip neighbours publish their masked objects for ``receiver``."""
    return f"secure:{receiver}"


@dataclass
class SecureState:
    """The driver's memory in server mode: the plain model's bytes, read before the
    first masked publish (``bytes_sent`` counts masked uploads and plain downloads)."""

    model_bytes: int = 0


@dataclass(frozen=True)
class Plan:
    """What a client masks for whom: one (receiver, weight, group) entry per object it sends."""

    round: int
    entries: tuple[tuple[int, float, tuple[int, ...]], ...]

    def extras(self) -> dict[str, torch.Tensor]:
        width = max(len(group) for _, _, group in self.entries)
        groups = np.full((len(self.entries), width), -1, dtype=np.int64)
        for row, (_, _, group) in enumerate(self.entries):
            groups[row, : len(group)] = group
        return {
            PLAN_RECEIVERS: torch.tensor([r for r, _, _ in self.entries], dtype=torch.int64),
            PLAN_WEIGHTS: torch.tensor([w for _, w, _ in self.entries], dtype=torch.float64),
            PLAN_GROUPS: torch.from_numpy(groups),
            PLAN_ROUND: torch.tensor([self.round], dtype=torch.int64),
        }

    @classmethod
    def of(cls, state: ClientState) -> Plan | None:
        if PLAN_ROUND not in state.extras:
            return None
        groups = state.extras[PLAN_GROUPS].tolist()
        entries = tuple(
            (int(r), float(w), tuple(int(g) for g in row if g >= 0))
            for r, w, row in zip(
                state.extras[PLAN_RECEIVERS].tolist(),
                state.extras[PLAN_WEIGHTS].tolist(),
                groups,
                strict=True,
            )
        )
        return cls(int(state.extras[PLAN_ROUND][0]), entries)


def with_plan(state: ClientState, plan: Plan | None) -> ClientState:
    """``state`` holding ``plan`` (or none: the plan dropped)."""
    extras = {k: v for k, v in state.extras.items() if k not in PLAN_EXTRAS}
    return state.evolve(extras={**extras, **(plan.extras() if plan is not None else {})})


def masked_objects(
    vector: np.ndarray, plan: Plan, secret: int, member: int
) -> dict[str, np.ndarray]:
    """Channel → the masked object ``member`` publishes for each receiver of ``plan``."""
    return {
        PARAMS if receiver == SERVER else inbox(receiver): mask(
            vector, weight, secret, plan.round, receiver, member, group
        )
        for receiver, weight, group in plan.entries
    }


def server_aggregate(
    masked: Sequence[np.ndarray],
    survivors: Sequence[int],
    weights: Mapping[int, float],
    secret: int,
    round_index: int,
    center: np.ndarray | None,
    eta: float,
) -> np.ndarray:
    """x ← (1 − η) x + η Σ_{k survives} p_k x_k / Σ_{k survives} p_k from masked vectors.

    ``weights``: p_k of the whole cohort the masks were made for; members
    missing from ``survivors`` dropped out, and their masks are removed.
    """
    dropped = sorted(set(weights) - set(survivors))
    total = unmasked_sum(masked, secret, round_index, SERVER, survivors, dropped)
    aggregate = total / sum(weights[k] for k in survivors)
    if eta != 1.0:
        assert center is not None
        aggregate = (1.0 - eta) * np.asarray(center, dtype=np.float64) + eta * aggregate
    return aggregate.astype(np.float32)


@ray.remote(num_cpus=0)
def secure_server_task(
    handles: Sequence[Any],
    survivors: Sequence[int],
    weights: Mapping[int, float],
    secret: int,
    round_index: int,
    center: Sequence[Any],
    eta: float,
) -> np.ndarray:
    """:func:`server_aggregate` as a Ray task that reads the masked vectors itself
    (``center`` is wrapped in a list so Ray passes its ref, not its value)."""
    model = fetch(ray.get, center)[0] if center else None
    return server_aggregate(
        fetch(ray.get, handles), survivors, weights, secret, round_index, model, eta
    )


class SecureAggregation(Algorithm):
    """A learner whose clients publish only masked vectors (:func:`secure`)."""

    @property
    def elastic(self) -> bool:
        """Joiners start from the server model, or, gossiping, from their nearest
        neighbours' plain vectors, which secure gossip never publishes."""
        return self.learner_class.elastic and bool(getattr(self, "centralized", False))

    # ----- driver half -------------------------------------------------
    def next_step(self, state: DriverState, env: RunEnv) -> Step | None:
        """The learner's steps with plans added; gossip runs a ``mask`` step first."""
        if getattr(self, "centralized", False):
            slot = state.sources.setdefault(SLOT, SecureState())
            if not slot.model_bytes:  # before any masked publish: every vector is plain float32
                slot.model_bytes = max(state.sizes.get(PARAMS, {}).values(), default=0)
            return self.server_round_step(state, env, slot.model_bytes)
        if MASK_PHASE not in state.phases and Phase.TRAIN not in state.phases:
            return self.mask_step(state, env)
        return super().next_step(state, env)

    def server_round_step(self, state: DriverState, env: RunEnv, model_bytes: int) -> Step | None:
        """The learner's train step with each client's plan, and its adopt step;
        ``bytes_sent``: the masked uploads, then the plain model to every client."""
        step = super().next_step(state, env)
        if step is None:
            return None
        if step.phase == Phase.TRAIN:
            cohort = tuple(step.participants)
            weights = self.server_weights(env, cohort)
            messages = {
                k: replace(msg, extra={**msg.extra, PLAN: ((SERVER, p, cohort),)})
                for (k, msg), p in zip(sorted(step.messages.items()), weights, strict=True)
            }
            ring = RING_BYTES_PER_FLOAT32 * model_bytes * len(cohort)
            return replace(step, messages=messages, bytes_sent=ring)
        return replace(step, bytes_sent=model_bytes * len(step.messages))

    def server_step(self, state: DriverState, env: RunEnv, refs: Mapping[int, Any]) -> Any:
        """The sum of the masked vectors of the cohort's survivors, next to the data."""
        cohort = sorted(set(env.sampled) | set(refs))
        survivors = sorted(refs)
        weights = dict(zip(cohort, self.server_weights(env, cohort), strict=True))
        handles = [refs[c] for c in survivors]
        eta = self.server_lr()
        center = [state.global_ref] if eta != 1.0 else []
        if all(isinstance(v, np.ndarray) for v in [*handles, *center]):
            model = center[0] if center else None
            return server_aggregate(handles, survivors, weights, env.seed, state.round, model, eta)
        return secure_server_task.remote(
            handles, survivors, weights, env.seed, state.round, center, eta
        )

    def mask_step(self, state: DriverState, env: RunEnv) -> Step:
        """Tell every neighbour of a client that trains this round whom it masks for:
        (i, w_ij, N(i)) with the learner's (relaxed) mixing row of i."""
        plans: dict[int, list[tuple[int, float, tuple[int, ...]]]] = {}
        for i, msg in sorted(super().round_messages(state, env).items()):
            group = tuple(sorted(env.topology.mixing_row(i)[1]))
            if len(group) == 1:
                raise ConfigError(
                    f"--secure-aggregation: client {i} has one neighbour, whose vector its "
                    "mix would reveal; allowed: a topology where every client has two or more"
                )
            for j, w in zip(group, msg.weights, strict=True):
                plans.setdefault(j, []).append((i, float(w), group))
        messages = {
            j: Message(round=state.round, extra={PLAN: tuple(entries)}, evaluate=False)
            for j, entries in plans.items()
        }
        return Step(MASK_PHASE, SECURE_MASK, state.round, messages, publish=True)

    def round_messages(self, state: DriverState, env: RunEnv) -> dict[int, Message]:
        """Gossip: client i sums the objects its neighbours masked for it (weights are
        in them already); its own term keeps the learner's self weight."""
        messages = super().round_messages(state, env)
        if getattr(self, "centralized", False):
            return messages
        out = {}
        for i, msg in messages.items():
            group = sorted(env.topology.mixing_row(i)[1])
            box = state.channels.get(inbox(i), {})
            out[i] = replace(
                msg, neighbors=tuple(box[j] for j in group), weights=(1.0,) * len(group)
            )
        return out

    def gossip_bytes(self, state: DriverState, env: RunEnv, messages: Mapping[int, Any]) -> int:
        """The masked objects clients fetch: one ring vector per neighbour."""
        sizes = {i: state.sizes.get(inbox(i), {}) for i in messages}
        return sum(sizes[i].get(j, 0) for i in messages for j in env.topology.neighbors(i))

    # ----- client half -------------------------------------------------
    def secure_mask(
        self, ctx: ClientContext, state: ClientState, msg: Message
    ) -> tuple[ClientState, Metrics]:
        """Keep the round's plan: what the client publishes next is masked by it."""
        return with_plan(state, Plan(msg.round, msg.extra[PLAN])), {}

    def publish(self, ctx: ClientContext, state: ClientState) -> dict[str, Any]:
        """The learner's channels, ``params`` masked for the server (server mode) or
        empty (gossip), plus one masked object per receiver of the plan."""
        out = super().publish(ctx, state)
        if not getattr(self, "centralized", False):
            out[PARAMS] = np.zeros(0, dtype=np.float32)
        plan = Plan.of(state)
        if plan is not None:
            vector = state.params.detach().cpu().numpy()
            out.update(masked_objects(vector, plan, ctx.seed, ctx.client_id))
        return out

    def mix(
        self, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> torch.Tensor:
        """Gossip: w_ii x_i plus the decoded sum of the masked objects (the masks cancel).
        Server mode adopts the plain global model as the learner does."""
        if not neighbors or getattr(self, "centralized", False):
            return super().mix(state, neighbors, msg)
        own = state.params.detach().cpu().numpy().astype(np.float64) * msg.self_weight
        mixed = (own + decode(ring_sum(neighbors))).astype(np.float32)
        return torch.from_numpy(mixed).to(state.params.device)

    def planned(self, state: ClientState, msg: Message) -> ClientState:
        """After training: server mode keeps the round's plan (its vector is published
        masked); gossip drops it."""
        plan = Plan(msg.round, msg.extra[PLAN]) if PLAN in msg.extra else None
        return with_plan(state, plan)

    def client_step(
        self, ctx: ClientContext, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> tuple[ClientState, Metrics]:
        new, metrics = super().client_step(ctx, state, neighbors, msg)
        return self.planned(new, msg), metrics

    def batched_client_step(
        self,
        ctxs: Sequence[ClientContext],
        states: Sequence[ClientState],
        neighbors: Sequence[Sequence[np.ndarray]],
        msgs: Sequence[Message],
    ) -> list[tuple[ClientState, Metrics]]:
        out = super().batched_client_step(ctxs, states, neighbors, msgs)
        return [(self.planned(s, m), met) for (s, met), m in zip(out, msgs, strict=True)]

    def adopt_global(
        self, ctx: ClientContext, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> tuple[ClientState, Metrics]:
        """Adopt the server model and drop the plan: it is public, so published plain."""
        new, metrics = super().adopt_global(ctx, state, neighbors, msg)
        return with_plan(new, None), metrics

    def batched_adopt_global(
        self,
        ctxs: Sequence[ClientContext],
        states: Sequence[ClientState],
        neighbors: Sequence[Sequence[np.ndarray]],
        msgs: Sequence[Message],
    ) -> list[tuple[ClientState, Metrics]]:
        out = super().batched_adopt_global(ctxs, states, neighbors, msgs)
        return [(with_plan(s, None), met) for s, met in out]

    def batchable(
        self, model: FlatModel, method: str, owner: type, *, trains: bool, evaluates: bool
    ) -> bool:
        """The learner's answer: the methods overridden here wrap its own and keep
        their batched forms (so a secure run trains exactly as a plain one)."""
        if getattr(self.learner_class, method) is not getattr(owner, method):
            return False
        return super().batchable(model, method, type(self), trains=trains, evaluates=evaluates)


register(
    Program(
        SECURE_MASK,
        lambda algorithm, ctx, state, neighbors, msg: algorithm.secure_mask(ctx, state, msg),
    )
)


@functools.cache
def secure(learner: type[Algorithm]) -> type[Algorithm]:
    """``learner`` with :class:`SecureAggregation` in front (its config unchanged).

    Refused (one :class:`ConfigError` line): a learner whose neighbours read
    another channel than its vector (``choco-sgd``'s messages, a
    ``--compressor``'s bytes), and a gossiping learner whose client step is
    not "mix, then the local update": what it combines would not be a
    weighted sum of the vectors its neighbours send.
    """
    if learner.gossip_channel != PARAMS:
        raise ConfigError(
            f"algorithm {learner.name!r} gossips its {learner.gossip_channel!r} channel, not a "
            "weighted sum of vectors: --secure-aggregation needs one that sends its vector "
            "(no --compressor, not choco-sgd)"
        )
    if gossips(learner) and not learner.event_driven:
        raise ConfigError(
            f"algorithm {learner.name!r} does not mix by a weighted sum before its local "
            "update; --secure-aggregation needs one that does, or --aggregation server"
        )
    return composed(
        SecureAggregation,
        learner,
        secure,
        f"Secure{learner.__name__}",
        f"{learner.__name__} with secure aggregation.",
        learner.Config,
    )
