"""CHOCO-SGD: decentralized SGD with compressed gossip (Koloskova, Stich and Jaggi, ICML 2019).

Client i keeps, besides its model x_i, a *public copy* x̂_i: the vector its
neighbours know it by. It never sends x_i, only the compressed difference
q_i = Q(x_i − x̂_i), and everyone who receives q_i — the client itself
included — adds it to their copy, x̂_i ← x̂_i + q_i, so all copies of x̂_i
stay equal. The consensus step moves x_i towards its neighbours' public
copies with step size γ (``--consensus-lr``):

    x_i ← x_i + γ Σ_{j ∈ N(i) ∪ {i}} w_ij (x̂_j − x̂_i).

Because q compresses the difference to the public copy, what the compressor
drops in one round is still in x_i − x̂_i the next (the copy is the error
memory), so any δ-contraction works (:mod:`dfml.compression`) where naive
compression of x_i is biased (:mod:`~dfml.algorithms.compressed`).

A client does not keep a copy per neighbour: it keeps s_i = Σ_j w_ij x̂_j
(the paper's memory-efficient form) and adds w_ij q_j for each q_j it
receives, so the state is x_i, x̂_i, s_i and the last message. All of it is
client state, so the fault layer replicates and restores it with x_i.

One round of client i is one ``train`` step:

1. receive q_j from each neighbour j (published in the previous round;
   nothing in round 0): s_i ← s_i + Σ_{j ≠ i} w_ij q_j;
2. consensus: x_i ← x_i + γ (s_i − x̂_i);
3. E local epochs of SGD on x_i (the paper: one SGD step);
4. q_i = Q(x_i − x̂_i), x̂_i ← x̂_i + q_i, s_i ← s_i + w_ii q_i; publish q_i.

Steps 4 and then 1–2 of the next round are one iteration of the paper's
Algorithm 2 (gradient step, compress, exchange, consensus), so R rounds
run the paper's first R iterations but the last consensus step. Public
copies start at the common initial model x⁰ (the paper: 0): every client
builds x⁰ from the seed, so starting there costs no bytes and the first
messages carry the first round's progress instead of x⁰ itself; then
s_i = x⁰ too (a mixing row sums to 1).

Every client must hear every message of every neighbour, weighted the same
each round, so clients may not join or leave (``--schedule``), sit out
rounds (``--participation``) or draw new peers each round (``--topology
epidemic``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.base import (
    Algorithm,
    BatchedStepFn,
    LocalSGDConfig,
    Message,
    Metrics,
    RunEnv,
    scores,
)
from dfml.compression import CompressionConfig, Compressor, Payload
from dfml.errors import ConfigError
from dfml.models.flat import FlatModel
from dfml.steps import DriverState

#: The channel of a client's last message q_i.
CHOCO = "choco"
#: State extras: the public copy x̂_i, the sum s_i = Σ_j w_ij x̂_j, the last message's bytes.
PUBLIC, PUBLIC_SUM, MESSAGE = "choco_public", "choco_public_sum", "choco_message"
#: Salt of the round seed that draws random-k's indices and qsgd's levels.
CHOCO_SALT = 0xC40C


@dataclass(frozen=True)
class ChocoConfig(CompressionConfig, LocalSGDConfig):
    """Local SGD knobs, the compressor, and the consensus step size.

    Attributes:
        consensus_lr: γ, the consensus step size, in (0, 1]: how far a client
            moves towards its neighbours' public copies each round (smaller
            for stronger compression; see docs/communication.md).
    """

    consensus_lr: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0.0 < self.consensus_lr <= 1.0 and math.isfinite(self.consensus_lr)):
            raise ConfigError(f"consensus_lr must be in (0, 1], got {self.consensus_lr}")


# ----- the math, on numpy vectors (tested without Ray) -------------------------
def receive(
    public_sum: np.ndarray, messages: Sequence[np.ndarray], weights: Sequence[float]
) -> np.ndarray:
    """s_i + Σ_j w_ij q_j over the neighbours' decoded messages, in order (float32)."""
    out = np.array(public_sum, dtype=np.float32, copy=True)
    for q, w in zip(messages, weights, strict=True):
        out += np.float32(w) * q
    return out


def consensus(
    x: np.ndarray, public: np.ndarray, public_sum: np.ndarray, gamma: float
) -> np.ndarray:
    """x_i + γ (s_i − x̂_i) = x_i + γ Σ_j w_ij (x̂_j − x̂_i) (float32)."""
    return (x + np.float32(gamma) * (public_sum - public)).astype(np.float32)


def compress(
    x: np.ndarray,
    public: np.ndarray,
    public_sum: np.ndarray,
    self_weight: float,
    compressor: Compressor,
    seed: int,
) -> tuple[Payload, np.ndarray, np.ndarray]:
    """(q_i = Q(x_i − x̂_i), x̂_i + q_i, s_i + w_ii q_i), with q_i as the receivers decode it."""
    message = compressor.encode(x - public, seed)
    q = message.decode()
    return message, public + q, public_sum + np.float32(self_weight) * q


class ChocoSGD(Algorithm):
    """Consensus with the neighbours' public copies, local SGD, then a compressed
    update of the own public copy sent to the neighbours."""

    name = "choco-sgd"
    Config = ChocoConfig
    elastic: ClassVar[bool] = False
    fixed_neighbours: ClassVar[bool] = True
    gossip_channel = CHOCO

    # ----- driver half -------------------------------------------------
    def round_messages(self, state: DriverState, env: RunEnv) -> dict[int, Message]:
        """Each client's mixing row, naming the messages its neighbours have
        sent (none before the first round has run)."""
        sent = state.channels.get(CHOCO, {})
        messages = {}
        for i in env.sampled:
            self_weight, row = env.topology.mixing_row(i)
            senders = [j for j in sorted(row) if j in sent]
            messages[i] = Message(
                round=state.round,
                neighbors=tuple(sent[j] for j in senders),
                weights=tuple(float(row[j]) for j in senders),
                self_weight=float(self_weight),
            )
        return messages

    def gossip_bytes(self, state: DriverState, env: RunEnv, messages: Mapping[int, Message]) -> int:
        """Bytes of the messages the step names (none in round 0)."""
        sizes = state.sizes.get(CHOCO, {})
        size_of = {ref: sizes[j] for j, ref in state.channels.get(CHOCO, {}).items()}
        return sum(size_of[ref] for msg in messages.values() for ref in msg.neighbors)

    # ----- client half (runs in actors) --------------------------------
    def init_state(self, ctx: ClientContext, init_params: torch.Tensor) -> ClientState:
        state = super().init_state(ctx, init_params)
        x0 = state.params.detach().clone()
        return state.evolve(extras={**state.extras, PUBLIC: x0, PUBLIC_SUM: x0.clone()})

    def publish(self, ctx: ClientContext, state: ClientState) -> dict[str, Any]:
        """The vector and, once the client has sent one, its last message q_i."""
        out = super().publish(ctx, state)
        if MESSAGE in state.extras:
            out[CHOCO] = Payload(state.extras[MESSAGE].detach().cpu().numpy().tobytes())
        return out

    def _numpy(self, state: ClientState, key: str) -> np.ndarray:
        return state.extras[key].detach().cpu().numpy()

    def gossip(
        self, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> ClientState:
        """Steps 1–2: add the received messages to s_i, then the consensus step."""
        device = state.params.device
        public_sum = receive(self._numpy(state, PUBLIC_SUM), neighbors, msg.weights)
        x = consensus(
            state.params.detach().cpu().numpy(),
            self._numpy(state, PUBLIC),
            public_sum,
            self.config.consensus_lr,
        )
        extras = {**state.extras, PUBLIC_SUM: torch.from_numpy(public_sum).to(device)}
        return state.evolve(params=torch.from_numpy(x).to(device), extras=extras)

    def send(self, ctx: ClientContext, state: ClientState, msg: Message) -> ClientState:
        """Step 4: compress x_i − x̂_i, update x̂_i and s_i, keep the message to publish."""
        device = state.params.device
        message, public, public_sum = compress(
            state.params.detach().cpu().numpy(),
            self._numpy(state, PUBLIC),
            self._numpy(state, PUBLIC_SUM),
            msg.self_weight,
            self.config.build(),
            ctx.round_seed(state.round, CHOCO_SALT),
        )
        raw = torch.frombuffer(bytearray(message.data), dtype=torch.uint8)
        extras = {
            **state.extras,
            PUBLIC: torch.from_numpy(public).to(device),
            PUBLIC_SUM: torch.from_numpy(public_sum).to(device),
            MESSAGE: raw.to(device),
        }
        return state.evolve(extras=extras)

    def client_step(
        self, ctx: ClientContext, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> tuple[ClientState, Metrics]:
        state = self.gossip(state, neighbors, msg)
        state, metrics = self.local_update(ctx, state, state.params)
        state = self.send(ctx, state, msg).evolve(round=state.round + 1)
        return state, {**metrics, **scores(self, ctx, state, msg)}

    def vectorized_client_step(self, model: FlatModel) -> BatchedStepFn | None:
        """The cohort's local SGD and evaluation as one computation where the
        update is plain SGD (see :meth:`Algorithm.batchable`); gossip and
        compression run per client."""
        if self.batchable(model, "client_step", ChocoSGD, trains=True, evaluates=True):
            return self.batched_client_step
        return None

    def batched_client_step(
        self,
        ctxs: Sequence[ClientContext],
        states: Sequence[ClientState],
        neighbors: Sequence[Sequence[np.ndarray]],
        msgs: Sequence[Message],
    ) -> list[tuple[ClientState, Metrics]]:
        mixed = [self.gossip(s, n, m) for s, n, m in zip(states, neighbors, msgs, strict=True)]
        trained, metrics = self.batched_local_update(ctxs, mixed, [s.params for s in mixed])
        sent = [
            self.send(ctx, s, m).evolve(round=s.round + 1)
            for ctx, s, m in zip(ctxs, trained, msgs, strict=True)
        ]
        return self.batched_scores(ctxs, sent, msgs, metrics)
